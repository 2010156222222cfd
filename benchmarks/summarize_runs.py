"""Mean ± std over seeds of finished runs, one row per config, as a Markdown table with the command behind each row.

    python benchmarks/summarize_runs.py RUNS_DIR CONFIG.yaml [CONFIG.yaml ...] [--all-classifiers] [--seeds 0,1]
        [--seconds]

One row per config with its headline classifier, or one row per config and classifier with --all-classifiers.
--seconds gives the wall time per run in seconds (mean ± std over seeds) instead of minutes, for short runs.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from finished_runs import finished_runs, mean_std as fmt, overrides_of


def main(argv) -> int:
    every_classifier = "--all-classifiers" in argv
    seconds = "--seconds" in argv
    argv = [a for a in argv if a not in ("--all-classifiers", "--seconds")]
    only_seeds = None
    if "--seeds" in argv:  # e.g. --seeds 0: compare one-seed ablations with the same seed of the reference
        i = argv.index("--seeds")
        only_seeds = {int(x) for x in argv[i + 1].split(",")}
        argv = argv[:i] + argv[i + 2:]
    runs, configs = Path(argv[0]), argv[1:]
    rows, environment = [], None
    for config in configs:
        stem = Path(config).stem
        results = [r for seed, r in sorted(finished_runs(runs, stem).items())
                   if only_seeds is None or seed in only_seeds]
        if not results:
            rows.append(f"| {stem} | | (no finished run) | | | | | | |")
            continue
        environment = environment or results[0]["environment"]
        seeds = ",".join(str(r["seed"]) for r in results)
        minutes = statistics.mean(r["timings"]["total_s"] for r in results) / 60
        wall = fmt([r["timings"]["total_s"] for r in results]) if seconds else f"{minutes:.1f}"
        classifiers = list(results[0]["metrics"]) if every_classifier else [results[0]["headline_classifier"]]
        for head in classifiers:
            get = lambda r, s, k: r["metrics"][head].get(s, {}).get(k)  # noqa: E731
            mark = " (headline)" if every_classifier and head == results[0]["headline_classifier"] else ""
            rows.append(
                f"| {stem} | {head}{mark} | {fmt([get(r, 'class_il', 'final_average_accuracy') for r in results])} "
                f"| {fmt([get(r, 'task_il', 'final_average_accuracy') for r in results])} "
                f"| {fmt([get(r, 'class_il', 'average_incremental_accuracy') for r in results])} "
                f"| {fmt([get(r, 'class_il', 'average_forgetting') for r in results])} "
                f"| {len(results)} ({seeds}) | {wall} "
                f"| `{' '.join(['protosphere run', config, 'seed=S', 'fabric.threads=1', *overrides_of(config, results[0])])}` |"
            )
    print("| config | classifier | class-IL final avg acc (%) | task-IL final avg acc (%) "
          f"| class-IL avg incremental acc (%) | class-IL forgetting | seeds | {'s/run' if seconds else 'min/run'} "
          "| command |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if environment:
        print(f"\nMachine: {environment['cpu']} ({environment['cpu_count']} cores; each run single-threaded, two "
              f"runs at a time), torch {environment['torch']}, python {environment['python']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
