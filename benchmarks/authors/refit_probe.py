"""Refit the last task's classifiers of finished protosphere runs with the current code; score them on every task.

A change to a classifier (here: the augmented linear probe drawing one view per sampled row) changes no training
step — the probe's augmentation has its own generator and the run's RNG is untouched — so refitting the classifiers
of a run's final checkpoint gives the last row of the accuracy matrix that a rerun with the current code would give,
at the cost of one probe fit instead of a whole run. ``protosphere.load_run(...).logits`` refits exactly as the run
fits after its last task. Writes ``<run>/refit.json`` (the last row, class-IL and task-IL, per classifier, and the
commit that refitted it); ``side_by_side.py --refit`` reads it in place of results.json's matrices.

    python benchmarks/authors/refit_probe.py runs/seq-fmnist-v2/fnc2-seed0 runs/seq-fmnist-v2/co2l-seed1 ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

import protosphere


def last_row(run, classifier: str) -> dict[str, list[float]]:
    class_il, task_il = [], []
    for task in run.scenario.tasks:
        scores = run.logits(task.test_images, classifier)
        labels = task.test_labels
        class_il.append(100 * float((scores.argmax(1) == labels).float().mean()))
        classes = torch.as_tensor(task.classes)
        within = scores[:, classes].argmax(1)
        task_il.append(100 * float((classes[within] == labels).float().mean()))
    return {"class_il": [class_il], "task_il": [task_il]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="finished protosphere run folders")
    p.add_argument("--classifiers", nargs="*", default=["linear_probe"], help="default: linear_probe")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    for path in args.runs:
        start = time.perf_counter()
        run = protosphere.load_run(path)
        record = {"run": str(path), "refitted_by": commit, "accuracy": {}}
        for classifier in args.classifiers:
            record["accuracy"][classifier] = last_row(run, classifier)
        record["refit_s"] = round(time.perf_counter() - start, 1)
        (path / "refit.json").write_text(json.dumps(record, indent=1) + "\n")
        rows = {c: round(sum(r["class_il"][0]) / len(r["class_il"][0]), 2) for c, r in record["accuracy"].items()}
        print(f"{path}: class-IL final average {rows}  ({record['refit_s']} s)", flush=True)


if __name__ == "__main__":
    main()
