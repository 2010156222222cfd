"""Neural collapse on the training features of finished one-task runs, beside the test-feature values they recorded.

Neural collapse is a property of the training features at the end of training (Papyan et al.); the runs record
their NC metrics on the test split (DESIGN §6). This script opens each run's final model
(:func:`protosphere.load_run`), encodes the task's training images as the evaluation encodes test images (eval mode,
no augmentation), and computes :func:`protosphere.metrics.neural_collapse.neural_collapse` with the method's
classifier weights:

    python benchmarks/nc_train_features.py RUNS --runs ce=nc-ce ntce=nc-ntce nonl=nc-nonl supcon=nc-supcon \
        --out benchmarks/nc_fmnist_long_train.md

Runs are ``RUNS/<prefix>-s<seed>``; cells are mean ± std over seeds. Every metric is 0 at full collapse; how far a
run got is also given as the share of the way it closed from the untrained network it started from (the run's config
and seed, built as the runner builds it; NC3/NC4 with that network's initial classifier) to that limit.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from pathlib import Path

import torch

from protosphere import load_run
from protosphere.data.scenarios import model_input
from protosphere.evaluation import extract_features
from protosphere.metrics.neural_collapse import neural_collapse
from protosphere.report.compare import format_mean_std, mean_std

METRICS = ("nc1", "equinorm", "equiangularity", "max_angle", "nc3", "nc4")


@torch.no_grad()
def train_feature_metrics(run) -> dict[str, float]:
    """NC metrics of a run's model (``run.model``: a :class:`protosphere.Run`'s final model, or :func:`untrained`'s)
    on the training images of its last (for these runs: only) task."""
    method = run.model
    task = run.scenario.tasks[-1]
    encode = lambda batch: method.features(model_input(batch)).float().cpu()  # noqa: E731  as the Protocol does
    features = extract_features(encode, task.train_images, run.config.eval.batch_size)
    classes = torch.tensor(sorted(task.classes))
    remap = torch.full((run.scenario.num_classes,), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    labels = remap[task.train_labels]
    weights = method.classifier_weights()
    weights = None if weights is None else weights.detach().float().cpu()[classes]
    return neural_collapse(features, labels, weights)


def untrained(run):
    """The network the run started from: its config and seed, built the way the runner builds it."""
    from lightning_fabric.utilities.seed import seed_everything

    from protosphere.runner import build_method, build_scenario_from_config

    seed_everything(run.config.seed, verbose=False)
    scenario = build_scenario_from_config(run.config)
    method = build_method(run.config, scenario).eval()
    return SimpleNamespace(model=method, scenario=scenario, config=run.config)


def runs_of(runs: Path, prefix: str) -> list[Path]:
    return [path.parent for path in sorted(runs.glob(f"{prefix}-s*/results.json"))
            if path.parent.name[len(prefix) + 2:].isdigit()]


def fmt(values: list[float], digits: int = 3) -> str:
    stat = mean_std([v for v in values if v == v])  # NaN: undefined, e.g. NC3 of class means that were never updated
    return format_mean_std(stat, digits) if stat["n"] else "—"


def table(runs: Path, names: dict[str, str]) -> list[str]:
    lines = ["| run | features | seeds | " + " | ".join(METRICS) + " |", "|---|---|---|" + "---|" * len(METRICS)]
    closed_lines = ["| run | seeds | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for label, prefix in names.items():
        dirs = runs_of(runs, prefix)
        if not dirs:
            lines.append(f"| {label} | (no finished run) | |" + " |" * len(METRICS))
            continue
        seeds = ",".join(d.name[len(prefix) + 2:] for d in dirs)
        rows = {"train, untrained network": [], "train": [], "test (recorded)": []}
        for d in dirs:
            run = load_run(d)
            rows["train, untrained network"].append(train_feature_metrics(untrained(run)))
            rows["train"].append(train_feature_metrics(run))
            rows["test (recorded)"].append(dict(run.results["neural_collapse"][-1] or {}))
        for split, values in rows.items():
            cells = [fmt([r[m] for r in values if m in r]) for m in METRICS]
            lines.append(f"| {label} | {split} | {seeds} | " + " | ".join(cells) + " |")
        closed = [fmt([100 * (1 - end[m] / start[m]) for start, end in zip(rows["train, untrained network"],
                                                                          rows["train"]) if m in end and m in start],
                      1) for m in METRICS]
        closed_lines.append(f"| {label} | {seeds} | " + " | ".join(closed) + " |")
    return [*lines, "", "Share of the way from the untrained network to the limit (0) closed on training features, "
            "100 · (1 − final / untrained), %:", "", *closed_lines]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--runs", dest="names", nargs="+", required=True, metavar="LABEL=PREFIX")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text = "\n".join(table(args.runs, dict(item.split("=", 1) for item in args.names))) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
