"""Finished runs of one config over seeds, and mean ± std, for the summary scripts in this folder."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def finished_runs(root: Path, stem: str) -> dict[int, dict]:
    """``{seed: results}`` of every complete run ``root/<stem>-seed<S>/results.json``."""
    out = {}
    for path in sorted(Path(root).glob(f"{stem}-seed*/results.json")):
        results = json.loads(path.read_text())
        if results.get("status") == "complete":
            out[results["seed"]] = results
    return out


def mean_std(values, digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"
