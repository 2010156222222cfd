"""Neural collapse over a long schedule (one task): curves, final values and when each loss reaches CE's final values.

Reads finished runs ``RUNS/<prefix>-s<seed>/results.json`` that evaluated after every epoch (``eval.per_epoch=true``)
and writes a Markdown summary and a PNG of the curves (mean over seeds, shaded ± std):

    python benchmarks/nc_long.py RUNS --runs ce=nc-ce ntce=nc-ntce normface=nc-normface nonl=nc-nonl supcon=nc-supcon \
        --baseline ce --out benchmarks/nc_fmnist_long.md --plot docs/images/nc_fmnist_long.png

Columns: the headline classifier's class-IL accuracy and every other classifier the run kept (e.g. SupCon's class
means beside its linear probe); the NC metrics after the last epoch (DESIGN §6, test features; every one of them is
0 at full collapse); "moving" = the relative change of each metric over the last 10 % of epochs (a run whose metrics
still move by more than a few % has not converged); "first epoch ≤ CE" = per seed, the first epoch at which the
metric is at or below the same seed's final CE value, and that epoch as a share of CE's epochs; when the runs
evaluated corruptions (``eval.corruptions``), their clean and corrupted error and the mCE against CE.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from summarize_nc import corruption_rows

METRICS = ("nc1", "equinorm", "equiangularity", "max_angle", "nc3", "nc4")
CURVE_EPOCHS = (1, 2, 5, 10, 20, 30, 40, 50)


def load(runs: Path, prefix: str) -> dict[int, dict]:
    found = {}
    for path in sorted(runs.glob(f"{prefix}-s*/results.json")):
        seed = path.parent.name[len(prefix) + 2:]
        if seed.isdigit():
            found[int(seed)] = json.loads(path.read_text())
    return found


def epochs(results: dict) -> list[dict]:
    """One entry per epoch of the (only) task: accuracy per classifier and the NC metrics."""
    return [e for e in results["per_epoch"] if e["task"] == 0]


def headline(results: dict) -> str:
    return next(iter(results["accuracy"]))


def accuracy_curve(results: dict, classifier: str) -> list[float]:
    return [e["accuracy"][classifier]["class_il"][0] for e in epochs(results)]


def metric_curve(results: dict, metric: str) -> list[float]:
    return [(e.get("neural_collapse") or {}).get(metric, float("nan")) for e in epochs(results)]


def fmt(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def first_at_or_below(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v <= target), None)


def summary(runs: Path, names: dict[str, str], baseline: str) -> list[str]:
    data = {label: load(runs, prefix) for label, prefix in names.items()}
    base = data[baseline]
    lines = ["| run | classifier | accuracy (%) | seeds | epochs | " + " | ".join(METRICS) + " |",
             "|---|---|---|---|---|" + "---|" * len(METRICS)]
    for label, seeds in data.items():
        if not seeds:
            lines.append(f"| {label} | (no finished run) | | | |" + " |" * len(METRICS))
            continue
        any_run = next(iter(seeds.values()))
        for i, classifier in enumerate(any_run["accuracy"]):
            accs = [r["accuracy"][classifier]["class_il"][-1][0] for r in seeds.values()]
            nc = [" | ".join(fmt([metric_curve(r, m)[-1] for r in seeds.values()], 3) for m in METRICS)] if i == 0 \
                else [" | ".join("" for _ in METRICS)]
            tag = " (headline)" if i == 0 else ""
            lines.append(f"| {label} | {classifier}{tag} | {fmt(accs)} | {','.join(map(str, seeds))} | "
                         f"{len(epochs(any_run))} | {nc[0]} |")
    lines += ["", "Still moving? Relative change of each metric over the last 10 % of epochs (mean over seeds; "
              "(v_end − v_start) / v_start):", "",
              "| run | accuracy | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for label, seeds in data.items():
        if not seeds:
            continue
        cells = []
        for curve_of in [lambda r: accuracy_curve(r, headline(r))] + [lambda r, m=m: metric_curve(r, m)
                                                                      for m in METRICS]:
            changes = []
            for r in seeds.values():
                curve = curve_of(r)
                if len(curve) < 2:  # one evaluated epoch has no change to measure
                    continue
                k = max(1, len(curve) // 10)
                start, end = curve[-k - 1], curve[-1]
                changes.append(100 * (end - start) / abs(start) if start else float("nan"))
            cells.append(f"{statistics.mean(changes):+.1f} %" if changes else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if base:
        lines += ["", f"First epoch at or below {baseline}'s final value (per seed; in brackets: share of "
                  f"{baseline}'s epochs, mean):", "", "| run | " + " | ".join(METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        for label, seeds in data.items():
            if label == baseline or not seeds:
                continue
            cells = []
            for m in METRICS:
                firsts, shares = [], []
                for seed, r in seeds.items():
                    if seed not in base:
                        continue
                    target = metric_curve(base[seed], m)[-1]
                    first = first_at_or_below(metric_curve(r, m), target)
                    firsts.append("—" if first is None else str(first))
                    if first is not None:
                        shares.append(first / len(epochs(base[seed])))
                share = f" ({100 * statistics.mean(shares):.0f} %)" if shares and len(shares) == len(firsts) else ""
                cells.append(",".join(firsts) + share)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    corruptions = corruption_rows(data, base)
    if corruptions:
        lines += ["", "Corruptions after the last epoch (8 types × 5 severities, headline classifier; mCE = mean over "
                  f"corruptions of 100 · Σ_s E_s / Σ_s E_s^{baseline}, paired by seed):", "", *corruptions]
    lines += ["", "Over epochs (headline classifier; mean ± std over seeds):", "",
              "| run | metric | " + " | ".join(f"epoch {e}" for e in CURVE_EPOCHS) + " |",
              "|---|---|" + "---|" * len(CURVE_EPOCHS)]
    for label, seeds in data.items():
        if not seeds:
            continue
        for m in ("accuracy (%)", "nc1", "equiangularity", "nc3"):
            row = []
            for e in CURVE_EPOCHS:
                vals = []
                for r in seeds.values():
                    curve = accuracy_curve(r, headline(r)) if m.startswith("accuracy") else metric_curve(r, m)
                    if e <= len(curve):
                        vals.append(curve[e - 1])
                row.append(fmt(vals, 2 if m.startswith("accuracy") else 3))
            lines.append(f"| {label} | {m} | " + " | ".join(row) + " |")
    return lines


def plot(runs: Path, names: dict[str, str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("accuracy (%)", None), ("nc1", "nc1"), ("equiangularity", "equiangularity"), ("nc3", "nc3")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for label, prefix in names.items():
        seeds = load(runs, prefix)
        if not seeds:
            continue
        for ax, (title, metric) in zip(axes, panels):
            curves = [accuracy_curve(r, headline(r)) if metric is None else metric_curve(r, metric)
                      for r in seeds.values()]
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
    parser.add_argument("runs", type=Path)
    parser.add_argument("--runs", dest="names", nargs="+", required=True, metavar="LABEL=PREFIX")
    parser.add_argument("--baseline", default="ce")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    names = dict(item.split("=", 1) for item in args.names)
    text = "\n".join(summary(args.runs, names, args.baseline)) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    if args.plot:
        plot(args.runs, names, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
