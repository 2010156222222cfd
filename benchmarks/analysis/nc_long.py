"""Neural collapse over a long schedule (one task): curves, final values and when each loss reaches the baseline's
final values, from the runs of one ``protosphere compare`` command run with ``eval.per_epoch=true``.

    python benchmarks/analysis/nc_long.py OUT [--baseline ce] [--out FILE.md] [--plot FILE.png]

OUT is the compare ``--out`` folder; every row of its compare.json is a line of the tables, under its label (the
config's file stem). The tables (:func:`protosphere.report.summaries.nc_long_summary`): each classifier's accuracy
and the NC metrics after the last epoch (test features; every one of them is 0 at full collapse);
"moving" = the relative change of each metric over the last 10 % of epochs (a run whose metrics still move by more
than a few % has not converged); "first epoch ≤ baseline" = per seed, the first epoch at which the metric is at or
below the same seed's final baseline value, and that epoch as a share of the baseline's epochs; when the runs
evaluated corruptions (``eval.corruptions``), their clean and corrupted error and the mCE against the baseline. The
PNG shows the curves, mean over seeds, shaded ± std.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from protosphere.report.summaries import accuracy_curve, compare_rows, finished, headline, metric_curve, nc_long_summary


def plot(data: dict[str, dict[int, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("accuracy (%)", None), ("nc1", "nc1"), ("equiangularity", "equiangularity"), ("nc3", "nc3")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for label, seeds in data.items():
        if not seeds:
            continue
        for ax, (title, metric) in zip(axes, panels):
            curves = [
                accuracy_curve(r, headline(r)) if metric is None else metric_curve(r, metric) for r in seeds.values()
            ]
            n = min(len(c) for c in curves)
            values = np.array([c[:n] for c in curves])
            x = np.arange(1, n + 1)
            mean = values.mean(0)
            ax.plot(x, mean, label=label)
            if len(values) > 1:
                ax.fill_between(x, mean - values.std(0, ddof=1), mean + values.std(0, ddof=1), alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, metavar="OUT")
    parser.add_argument("--baseline", default="ce", help="the row label the others are measured against")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    data = {row.label: finished(row) for row in compare_rows(args.runs)}
    if args.baseline not in data:
        parser.error(f"--baseline {args.baseline} is not a row of {args.runs}/compare.json ({', '.join(data)})")
    text = "\n".join(nc_long_summary(data, args.baseline)) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    if args.plot:
        plot(data, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
