"""The two codes' training losses on one seed, side by side: protosphere's run against the authors' code's run.

protosphere logs the loss of every ``train.log_every_n_steps``-th step (``metrics.csv``, name ``loss``); the drivers
in this folder record every step of the authors' loop (``train_loss`` in their JSON). Both are the total loss the
optimiser steps on (contrastive term + weighted distillation). The plot puts them on one axis of tasks (task t spans
[t, t+1); the two codes may take a few steps more or fewer per task, e.g. the authors keep the last partial batch),
the authors' steps as a faint line with their 50-step running mean; the Markdown table gives each task's mean loss
over its first and last epoch, and their difference.

    python benchmarks/authors/loss_curves.py \\
        --ours runs/seq-fmnist/fnc2-seed0 --theirs runs/authors/samix-fnc2-seed0.json \\
        --ours runs/seq-fmnist/co2l-seed0 --theirs runs/authors/co2l-co2l-seed0.json --out docs/images/loss_curves.png
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def ours_losses(run: Path) -> tuple[list[float], list[float], list[int]]:
    """(x positions in tasks, losses, task of each point) of the logged steps of a protosphere run."""
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r["split"] == "train" and r["name"] == "loss"]
    last_step = {}
    for r in rows:
        last_step[int(r["task"])] = max(last_step.get(int(r["task"]), 0), int(r["step"]))
    xs, ys, tasks = [], [], []
    for r in rows:
        t, s = int(r["task"]), int(r["step"])
        xs.append(t + (s + 1) / (last_step[t] + 1))
        ys.append(float(r["value"]))
        tasks.append(t)
    return xs, ys, tasks


def theirs_losses(path: Path) -> tuple[list[float], list[float], list[int]]:
    record = json.loads(path.read_text())
    xs, ys, tasks, i = [], [], [], 0
    for t, n in enumerate(record["steps_per_task"]):
        for s in range(n):
            xs.append(t + (s + 1) / n)
            ys.append(float(record["train_loss"][i]))
            tasks.append(t)
            i += 1
    return xs, ys, tasks


def running_mean(values: list[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    for i in range(len(v)):
        lo = max(0, i + 1 - window)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def epoch_means(xs, ys, tasks, epochs: int) -> dict[int, tuple[float, float]]:
    """Per task: mean loss over its first and over its last epoch (a fifth of the task for 5 epochs)."""
    out = {}
    for t in sorted(set(tasks)):
        pts = [(x - t, y) for x, y, k in zip(xs, ys, tasks) if k == t]
        first = [y for f, y in pts if f <= 1 / epochs]
        last = [y for f, y in pts if f > 1 - 1 / epochs]
        out[t] = (float(np.mean(first)) if first else float("nan"), float(np.mean(last)) if last else float("nan"))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ours", type=Path, action="append", required=True, help="a protosphere run folder (repeatable)")
    p.add_argument(
        "--theirs",
        type=Path,
        action="append",
        required=True,
        help="the authors' run JSON paired with the --ours of the same position",
    )
    p.add_argument("--epochs", type=int, default=5, help="epochs per task (for the first/last-epoch means)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write (an SVG is written beside it)")
    args = p.parse_args(argv)
    if len(args.ours) != len(args.theirs):
        p.error(f"give one --theirs per --ours (got {len(args.ours)} and {len(args.theirs)})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.ours), figsize=(6.5 * len(args.ours), 4), squeeze=False)
    for ax, ours_run, theirs_json in zip(axes[0], args.ours, args.theirs):
        ox, oy, ot = ours_losses(ours_run)
        tx, ty, tt = theirs_losses(theirs_json)
        record = json.loads(theirs_json.read_text())
        ax.plot(tx, ty, color="tab:orange", alpha=0.25, linewidth=0.6)
        ax.plot(
            tx,
            running_mean(ty, 50),
            color="tab:orange",
            label=f"{record['code']} @ {record['commit'][:7]} (every step; 50-step mean)",
        )
        ax.plot(ox, oy, "o-", color="tab:blue", markersize=3, linewidth=1, label="protosphere (every 50th step)")
        for t in range(1, max(ot) + 1):
            ax.axvline(t, color="grey", linewidth=0.5, linestyle=":")
        ax.set_title(f"{ours_run.name} vs {theirs_json.stem}")
        ax.set_xlabel("task (each spans one unit)")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
        print(f"\n{ours_run} vs {theirs_json}: mean training loss per task, first / last epoch\n")
        print("| task | protosphere first | authors first | protosphere last | authors last | Δ last |")
        print("|---|---|---|---|---|---|")
        om, tm = epoch_means(ox, oy, ot, args.epochs), epoch_means(tx, ty, tt, args.epochs)
        for t in sorted(om):
            print(
                f"| {t + 1} | {om[t][0]:.2f} | {tm[t][0]:.2f} | {om[t][1]:.2f} | {tm[t][1]:.2f} | "
                f"{om[t][1] - tm[t][1]:+.2f} |"
            )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    fig.savefig(args.out.with_suffix(".svg"))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.svg')}")


if __name__ == "__main__":
    main()
