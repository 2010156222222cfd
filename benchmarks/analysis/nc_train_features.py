"""Neural collapse on the training features of finished one-task runs, beside the test-feature values they recorded.

Neural collapse is a property of the training features at the end of training (Papyan et al.); the runs record
their NC metrics on the test split (protosphere.metrics.neural_collapse). This script opens each run's final model
(:func:`protosphere.load_run`), encodes the task's training images as the evaluation encodes test images (eval mode,
no augmentation), and computes :func:`protosphere.metrics.neural_collapse.neural_collapse` with the method's
classifier weights (:func:`protosphere.bench.features.train_feature_metrics`):

    python benchmarks/analysis/nc_train_features.py OUT [--out FILE.md]

OUT is a ``protosphere compare`` ``--out`` folder (the rows of its compare.json); cells are mean ± std over seeds.
Every metric is 0 at full collapse; how far a run got is also given as the share of the way it closed from the
untrained network it started from (the run's config and seed, built as the runner builds it; NC3/NC4 with that
network's initial classifier) to that limit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from protosphere import load_run
from protosphere.bench.features import train_feature_metrics, untrained_run
from protosphere.report.summaries import NC_METRICS, compare_rows, finished, fmt


def table(out: Path) -> list[str]:
    lines = ["| run | features | seeds | " + " | ".join(NC_METRICS) + " |", "|---|---|---|" + "---|" * len(NC_METRICS)]
    closed_lines = ["| run | seeds | " + " | ".join(NC_METRICS) + " |", "|---|---|" + "---|" * len(NC_METRICS)]
    for row in compare_rows(out):
        seeds = list(finished(row))
        if not seeds:
            lines.append(f"| {row.label} | (no finished run) | |" + " |" * len(NC_METRICS))
            continue
        rows = {"train, untrained network": [], "train": [], "test (recorded)": []}
        for seed in seeds:
            run = load_run(row.runs[seed])
            rows["train, untrained network"].append(train_feature_metrics(untrained_run(run.config)))
            rows["train"].append(train_feature_metrics(run))
            rows["test (recorded)"].append(dict(run.results["neural_collapse"][-1] or {}))
        seed_text = ",".join(map(str, seeds))
        for split, values in rows.items():
            cells = [fmt([r[m] for r in values if m in r], 3) for m in NC_METRICS]
            lines.append(f"| {row.label} | {split} | {seed_text} | " + " | ".join(cells) + " |")
        closed = [
            fmt(
                [
                    100 * (1 - end[m] / start[m])
                    for start, end in zip(rows["train, untrained network"], rows["train"])
                    if m in end and m in start
                ],
                1,
            )
            for m in NC_METRICS
        ]
        closed_lines.append(f"| {row.label} | {seed_text} | " + " | ".join(closed) + " |")
    return [
        *lines,
        "",
        "Share of the way from the untrained network to the limit (0) closed on training features, "
        "100 · (1 − final / untrained), %:",
        "",
        *closed_lines,
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, metavar="OUT")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text = "\n".join(table(args.runs)) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
