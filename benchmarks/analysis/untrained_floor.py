"""The floor a continual representation learner must beat: every classifier of a config fitted after the last task
on the features of the *untrained* network (random initialisation, same seed as a run), class-IL accuracy on every
task's test set — what the evaluation protocol gives with no learning at all
(:func:`protosphere.bench.features.untrained_floor`).

    python benchmarks/analysis/untrained_floor.py CONFIG.yaml [CONFIG.yaml ...] [--seeds 0,1,2] [key=value ...]

Prints one Markdown row per config and classifier (mean ± std over seeds of the average over tasks).
"""

from __future__ import annotations

import sys
from pathlib import Path

from protosphere.bench.features import untrained_floor
from protosphere.config import load_config
from protosphere.report.summaries import fmt


def main(argv) -> int:
    seeds = [0]
    if "--seeds" in argv:
        i = argv.index("--seeds")
        seeds = [int(s) for s in argv[i + 1].split(",")]
        argv = argv[:i] + argv[i + 2 :]
    configs = [a for a in argv if a.endswith(".yaml")]
    overrides = [a for a in argv if "=" in a and not a.endswith(".yaml")]
    print("| config | classifier | untrained class-IL accuracy after the last task (%) | seeds |")
    print("|---|---|---|---|")
    for path in configs:
        results = [untrained_floor(load_config(path, [*overrides, f"seed={s}"])) for s in seeds]
        for name in results[0]:
            label = Path(path).stem + (f" ({' '.join(overrides)})" if overrides else "")
            print(f"| {label} | {name} | {fmt([r[name] for r in results])} | {','.join(map(str, seeds))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
