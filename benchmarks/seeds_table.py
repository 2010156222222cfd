"""Per-classifier table over seeds of finished continual runs named ``<prefix>-s<seed>`` (the long-schedule runs of
docs/results.md): class-IL and task-IL final average accuracy, class-IL average forgetting, mean ± std over seeds.

    python benchmarks/seeds_table.py RUNS PREFIX [PREFIX ...] [--classifiers nearest_prototype linear_probe ...]

Runs are read through the run record (``protosphere.rundir.read_record``), so older and newer results.json alike.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from protosphere.rundir import read_record


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def runs_of(runs: Path, prefix: str) -> dict[int, object]:
    found = {}
    for path in sorted(runs.glob(f"{prefix}-s*/results.json")):
        seed = path.parent.name[len(prefix) + 2:]
        if seed.isdigit():
            found[int(seed)] = read_record(path.parent)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("prefixes", nargs="+")
    parser.add_argument("--classifiers", nargs="+", default=None)
    args = parser.parse_args(argv)
    print("| run | classifier | class-IL final avg acc (%) | task-IL final avg acc (%) | class-IL forgetting | "
          "task-IL forgetting | seeds |")
    print("|---|---|---|---|---|---|---|")
    for prefix in args.prefixes:
        records = runs_of(args.runs, prefix)
        if not records:
            print(f"| {prefix} | (no finished run) | | | | | |")
            continue
        classifiers = list(next(iter(records.values())).metrics)
        for classifier in classifiers:
            if args.classifiers and classifier not in args.classifiers:
                continue
            summaries = [r.metrics[classifier] for r in records.values()]

            def values(setting: str, field: str) -> list[float]:
                return [getattr(s[setting], field) for s in summaries]

            tag = " (headline)" if classifier == classifiers[0] else ""
            print(f"| {prefix} | {classifier}{tag} | {fmt(values('class_il', 'final_average_accuracy'))} | "
                  f"{fmt(values('task_il', 'final_average_accuracy'))} | "
                  f"{fmt(values('class_il', 'average_forgetting'))} | {fmt(values('task_il', 'average_forgetting'))} "
                  f"| {','.join(map(str, records))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
