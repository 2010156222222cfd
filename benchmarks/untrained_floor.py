"""The floor a continual representation learner must beat: every classifier of a config fitted after the last task
on the features of the *untrained* network (random initialisation, same seed as a run), class-IL accuracy on every
task's test set — what the evaluation protocol gives with no learning at all.

    python benchmarks/untrained_floor.py CONFIG.yaml [CONFIG.yaml ...] [--seeds 0,1,2] [key=value ...]

Prints one Markdown row per config and classifier (mean ± std over seeds of the average over tasks).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from protosphere.config import load_config
from protosphere.evaluation import accuracy
from protosphere.methods.base import TaskContext
from protosphere.report.compare import format_mean_std, mean_std as statistics_of
from protosphere.runner import build_method, build_scenario_from_config


def mean_std(values) -> str:
    return format_mean_std(statistics_of(list(values)))


@torch.no_grad()
def floor(config) -> dict[str, float]:
    torch.manual_seed(config.seed)
    scenario = build_scenario_from_config(config)
    method = build_method(config, scenario)
    method.eval()
    last = len(scenario.tasks) - 1
    task = scenario.tasks[last]
    context = TaskContext(index=last, classes=tuple(task.classes), seen_classes=scenario.classes_up_to(last),
                          num_tasks=scenario.num_tasks, train_images=task.train_images,
                          train_labels=task.train_labels, previous_classes=scenario.classes_up_to(last - 1),
                          previous=[(t.train_images, t.train_labels) for t in scenario.tasks[:last]])
    with torch.enable_grad():  # the probe trains
        method.prepare_evaluation(context)
    out = {}
    for name, classify in method.classifiers().items():
        per_task = []
        for t in scenario.tasks:
            logits = torch.cat([classify(t.test_images[i:i + 256].float().div_(255))
                                for i in range(0, len(t.test_labels), 256)])
            per_task.append(accuracy(logits, t.test_labels))
        out[name] = statistics.mean(per_task)
    return out


def main(argv) -> int:
    seeds = [0]
    if "--seeds" in argv:
        i = argv.index("--seeds")
        seeds = [int(s) for s in argv[i + 1].split(",")]
        argv = argv[:i] + argv[i + 2:]
    configs = [a for a in argv if a.endswith(".yaml")]
    overrides = [a for a in argv if "=" in a and not a.endswith(".yaml")]
    print("| config | classifier | untrained class-IL accuracy after the last task (%) | seeds |")
    print("|---|---|---|---|")
    for path in configs:
        results = [floor(load_config(path, [*overrides, f"seed={s}"])) for s in seeds]
        for name in results[0]:
            label = Path(path).stem + (f" ({' '.join(overrides)})" if overrides else "")
            print(f"| {label} | {name} | {mean_std([r[name] for r in results])} "
                  f"| {','.join(map(str, seeds))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
