"""Training curves (loss, its terms, learning rate from ``metrics.csv``) and the confusion matrix after the last task.

Like :mod:`~protosphere.report.plots`: plain data in, one PNG out, object-oriented matplotlib on an Agg canvas.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..runs.record import Confusion

from .plots import _figure, _save, _style, color, label_heatmap


def read_training_rows(path: Path) -> dict[str, list[tuple[int, float, int]]]:
    """``metrics.csv``'s training rows as {name: [(global step, value, task)]}; the global step counts every step
    of the earlier tasks (the last step of each task is always logged, so its step + 1 is the task's length)."""
    series: dict[str, list[tuple[int, int, float]]] = {}
    length: dict[int, int] = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("split") != "train" or not row.get("step"):
                    continue
                try:
                    task, step, value = int(row["task"]), int(row["step"]), float(row["value"])
                except (KeyError, TypeError, ValueError):
                    continue
                series.setdefault(row["name"], []).append((task, step, value))
                length[task] = max(length.get(task, 0), step + 1)
    except OSError:
        return {}
    offset, start = 0, {}
    for task in sorted(length):
        start[task] = offset
        offset += length[task]
    return {name: [(start[t] + s, v, t) for t, s, v in rows] for name, rows in series.items()}


def task_starts(series: dict[str, list[tuple[int, float, int]]]) -> list[tuple[int, int]]:
    """(global step of the first logged row, task) of each task after the first."""
    firsts: dict[int, int] = {}
    for rows in series.values():
        for step, _, task in rows:
            firsts[task] = min(firsts.get(task, step), step)
    return sorted((s, t) for t, s in firsts.items() if t > 0)


def training_curves(series: dict[str, list[tuple[int, float, int]]], path: Path) -> Path | None:
    """Left: the training loss (thick) and its logged terms; right: the learning rate; dashed lines: new tasks."""
    loss = series.get("loss")
    if not loss:
        return None
    terms = [n for n in series if n not in ("loss", "lr", "img_per_s") and len(series[n]) == len(loss)]
    terms = [n for n in terms if not np.allclose([v for _, v, _ in series[n]], [v for _, v, _ in loss])]
    has_lr = bool(series.get("lr"))
    fig = _figure(10.5 if has_lr else 6.0, 3.3)
    axes = fig.subplots(1, 2 if has_lr else 1, squeeze=False)[0]
    starts = task_starts(series)

    def boundaries(ax):
        for step, task in starts:
            ax.axvline(step - 0.5, color="#999999", linewidth=0.8, linestyle="--")
            ax.text(
                step,
                1.0,
                f" T{task + 1}",
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                color="#666666",
                va="top",
                ha="left",
            )

    ax = axes[0]
    x = [s for s, _, _ in loss]
    ax.plot(
        x,
        [v for _, v, _ in loss],
        color="black",
        linewidth=1.8,
        label="loss",
        marker="o" if len(x) < 40 else None,
        markersize=3,
    )
    for i, name in enumerate(terms):
        rows = series[name]
        ax.plot([s for s, _, _ in rows], [v for _, v, _ in rows], color=color(i), linewidth=1.1, label=name)
    ax.set_xlabel("global step (all tasks)", fontsize=9)
    ax.set_ylabel("training loss", fontsize=9)
    ax.set_title("training loss" + (" and its terms" if terms else ""), fontsize=10)
    boundaries(ax)
    _style(ax)
    if terms:
        ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if has_lr:
        ax = axes[1]
        rows = series["lr"]
        ax.plot(
            [s for s, _, _ in rows],
            [v for _, v, _ in rows],
            color=color(0),
            linewidth=1.6,
            marker="o" if len(rows) < 40 else None,
            markersize=3,
        )
        ax.set_xlabel("global step (all tasks)", fontsize=9)
        ax.set_ylabel("learning rate", fontsize=9)
        ax.set_title("learning rate", fontsize=10)
        ax.set_ylim(bottom=0)
        boundaries(ax)
        _style(ax)
    return _save(fig, path)


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (% of each true class), annotated when small."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(1, keepdims=True)
    share = np.divide(100 * counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(labels)
    cell = 0.42 if n <= 12 else max(0.12, 5.0 / n)
    fig = _figure(max(4.2, 2.0 + cell * n), max(3.6, 1.4 + cell * n))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100, aspect="equal")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{share[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 60 else "black",
                    )
    label_heatmap(
        fig, ax, image, labels, labels, cell, ("true class", "predicted class"), title, bar_label="% of the true class"
    )
    return _save(fig, path)


def per_class_accuracy(confusion: Confusion) -> list[tuple[int, float | None, int]]:
    """(class id, accuracy % or None without test images, number of test images) from the record's confusion."""
    out = []
    for c, row in zip(confusion.classes, confusion.matrix):
        total = sum(row)
        i = len(out)
        if confusion.other is not None and i < len(confusion.other):
            total += confusion.other[i]
        out.append((int(c), 100.0 * row[i] / total if total else None, total))
    return out
