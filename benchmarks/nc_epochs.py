"""Neural-collapse metrics over epochs against a CE baseline, from finished runs with ``eval.per_epoch=true``.

For each run: the headline accuracy, the NC metrics after the last epoch, and for each metric the first epoch at
which it is at least as collapsed (as low) as the baseline's final value ("—" if never).

    python benchmarks/nc_epochs.py RUNS_DIR BASELINE_STEM STEM [STEM ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("nc1", "equinorm", "equiangularity", "max_angle", "nc3", "nc4")


def load(runs: Path, stem: str) -> dict:
    path = next(iter(sorted(runs.glob(f"{stem}-seed*/results.json"))), None)
    if path is None:
        raise SystemExit(f"no finished run {stem}-seed* under {runs}")
    return json.loads(path.read_text())


def epochs(results: dict) -> list[dict]:
    return [e for e in results.get("nc_epochs", []) if e]


def main(argv) -> int:
    runs, baseline_stem, stems = Path(argv[0]), argv[1], argv[1:]
    baseline = epochs(load(runs, baseline_stem))[-1]
    print(f"| run | headline | accuracy (%) | epochs | " + " | ".join(METRICS) + " | first epoch ≤ CE's final "
          + " / ".join(METRICS) + " |")
    print("|---|---|---|---|" + "---|" * len(METRICS) + "---|")
    for stem in stems:
        results = load(runs, stem)
        history = epochs(results)
        last = history[-1]
        head = results["headline_classifier"]
        accuracy = results["metrics"][head]["class_il"]["final_average_accuracy"]
        reached = []
        for metric in METRICS:
            if metric not in baseline or metric not in last:
                reached.append("n/a")
                continue
            first = next((e["epoch"] + 1 for e in history if e[metric] <= baseline[metric]), None)
            reached.append("—" if first is None else str(first))
        values = " | ".join(f"{last[m]:.4f}" if m in last else "n/a" for m in METRICS)
        print(f"| {stem} | {head} | {accuracy:.2f} | {len(history)} | {values} | {' / '.join(reached)} |")
    env = load(runs, baseline_stem)["environment"]
    print(f"\nNC metrics on test-split encoder features (DESIGN §6); nc3/nc4 use each method's classifier weights "
          f"(CE: the linear layer; SupCon: its class means). Machine: {env['cpu']} ({env['cpu_count']} cores), "
          f"torch {env['torch']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
