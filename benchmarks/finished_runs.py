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


_RUN_ONLY = {"name", "output_dir", "seed", "fabric.threads",  # set per run by the scripts, not part of the experiment
             "train.keep_checkpoints"}  # which checkpoint files stay changes no number


def overrides_of(config_path: str, results: dict) -> list[str]:
    """The ``key=value`` overrides that turn ``config_path`` into the config a finished run used, so that a table's
    command reproduces the run exactly (e.g. ``train.epochs=1`` for a shortened protocol)."""
    from protosphere.config import load_config

    def leaves(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(leaves(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    declared = leaves(load_config(config_path).model_dump(mode="json"))
    used = leaves(results["config"])
    return [f"{key}={json.dumps(value, separators=(',', ':')) if not isinstance(value, str) else value}"
            for key, value in used.items()
            if key not in _RUN_ONLY and declared.get(key, object()) != value]
