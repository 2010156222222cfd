"""Summaries over seeds of the runs ``protosphere compare`` wrote, beyond compare's own table: per-classifier rows,
neural collapse over a long schedule, a CLOP grid, side-by-side targets. The scripts under ``benchmarks/analysis/``
print them for docs/results.md; they live here so that the tests check the numbers those pages publish.

Runs are found through compare's output, never by parsing folder names: :func:`compare_rows` reads
``<out>/compare.json`` (each row's label, its runs by seed and how each was obtained) and :func:`finished` opens a
row's complete runs as validated results (:func:`protosphere.report.load_results`). A cell is the mean ± sample std
over seeds (:func:`protosphere.report.compare.mean_std`); one seed has no spread, so its cell is the value alone.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import RunError
from ..runs.rundir import RunDir
from .compare import format_mean_std, mean_std

NC_METRICS = ("nc1", "equinorm", "equiangularity", "max_angle", "nc3", "nc4")


# ---------------------------------------------------------------------------------------------------------------
# reading compare's output
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One row of a compare output: a config (with its grid values) and its runs by seed."""

    label: str
    runs: dict[int, Path] = field(default_factory=dict)  # seed → run folder
    status: dict[int, str] = field(default_factory=dict)  # seed → "reused" | "resumed" | "trained" | "failed"
    logs: dict[int, Path] = field(default_factory=dict)  # seed → the log of a run that failed


def compare_rows(out: str | Path) -> list[Row]:
    """The rows of the ``protosphere compare`` output in ``out``, in its order, read from ``out/compare.json``."""
    out = Path(out)
    try:
        summary = json.loads((out / "compare.json").read_text())
    except (OSError, ValueError):
        raise RunError(
            f"{out} holds no readable compare.json; run the `protosphere compare ... --out {out}` command first."
        ) from None
    logs = {f["run"]: Path(f["log"]) for f in summary.get("failed") or []}
    rows = []
    for row in summary.get("rows") or []:
        names = row.get("runs") or []
        seeds = row.get("seeds") or list(range(len(names)))
        status = row.get("status") or ["reused"] * len(names)
        found = Row(str(row.get("label", names[0] if names else "?")))
        for name, seed, how in zip(names, seeds, status):
            found.runs[int(seed)] = out / name
            found.status[int(seed)] = how
            if how == "failed":
                found.logs[int(seed)] = logs.get(name, out / f"{name}.log")
        rows.append(found)
    return rows


def finished(row: Row) -> dict[int, dict]:
    """``{seed: results}`` of the row's runs that finished (results.json complete), validated against the record."""
    from .html import load_results

    found = {}
    for seed, path in sorted(row.runs.items()):
        if row.status.get(seed) == "failed" or not RunDir(path).results.is_file():
            continue
        results = load_results(path).to_data()
        if results.get("status", "complete") == "complete":
            found[seed] = results
    return found


def fmt(values: Sequence[float | None], digits: int = 2) -> str:
    """Mean ± sample std of the values that are numbers (NaN and None left out); the value alone for one; — for
    none."""
    stat = mean_std([v for v in values if v is not None and v == v])
    return format_mean_std(stat, digits) if stat["n"] else "—"


# ---------------------------------------------------------------------------------------------------------------
# every classifier of every row
# ---------------------------------------------------------------------------------------------------------------
def classifier_rows(rows: Sequence[Row], classifiers: Sequence[str] | None = None) -> list[str]:
    """One Markdown row per compare row and classifier: class-IL and task-IL final average accuracy and average
    forgetting over the row's finished seeds (compare's own table shows them for the headline classifier only)."""
    lines = [
        "| run | classifier | class-IL final avg acc (%) | task-IL final avg acc (%) | class-IL forgetting | "
        "task-IL forgetting | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        runs = finished(row)
        if not runs:
            lines.append(f"| {row.label} | (no finished run) | | | | | |")
            continue
        first = next(iter(runs.values()))
        names = list(first["metrics"])
        headline = first.get("headline_classifier") or names[0]
        for name in names:
            if classifiers and name not in classifiers:
                continue

            def cell(setting: str, metric: str, name: str = name, runs: dict = runs) -> str:
                return fmt([((r["metrics"].get(name) or {}).get(setting) or {}).get(metric) for r in runs.values()])

            tag = " (headline)" if name == headline and len(names) > 1 else ""
            lines.append(
                f"| {row.label} | {name}{tag} | {cell('class_il', 'final_average_accuracy')} | "
                f"{cell('task_il', 'final_average_accuracy')} | {cell('class_il', 'average_forgetting')} | "
                f"{cell('task_il', 'average_forgetting')} | {','.join(map(str, runs))} |"
            )
    return lines


# ---------------------------------------------------------------------------------------------------------------
# neural collapse over a long schedule (one task, evaluated after every epoch)
# ---------------------------------------------------------------------------------------------------------------
CURVE_EPOCHS = (1, 2, 5, 10, 20, 30, 40, 50)


def epochs(results: dict) -> list[dict]:
    """One entry per evaluated epoch of the (only) task: accuracy per classifier and the NC metrics."""
    return [e for e in results.get("per_epoch") or [] if e["task"] == 0]


def headline(results: dict) -> str:
    return results.get("headline_classifier") or next(iter(results["accuracy"]))


def accuracy_curve(results: dict, classifier: str) -> list[float]:
    return [e["accuracy"][classifier]["class_il"][0] for e in epochs(results)]


def metric_curve(results: dict, metric: str) -> list[float]:
    return [(e.get("neural_collapse") or {}).get(metric, float("nan")) for e in epochs(results)]


def first_at_or_below(curve: Sequence[float], target: float) -> int | None:
    """The first epoch (1-based) whose value is at or below ``target``; None when none is."""
    return next((i + 1 for i, v in enumerate(curve) if v <= target), None)


def corruption_rows(runs_by_label: dict[str, dict[int, dict]], baseline: dict[int, dict]) -> list[str]:
    """Clean and corrupted error of each label's headline classifier and its mCE against ``baseline`` (paired by
    seed); ``runs_by_label`` maps a row label to ``{seed: results}``. No run with corruptions: no table."""
    from ..data.corruptions import mean_corruption_error

    lines = [
        "| run | classifier | clean error (%) | mean corrupted error (%) | mCE vs CE (%) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for label, by_seed in runs_by_label.items():
        if not by_seed or not any(r.get("corruptions") for r in by_seed.values()):
            continue
        classifier = by_seed[min(by_seed)]["headline_classifier"]
        clean, corrupted, mce, seeds = [], [], [], []
        for seed, results in sorted(by_seed.items()):
            errors = (results.get("corruptions") or {}).get(classifier)
            if not errors:
                continue
            errors = {n: v for n, v in errors.items() if isinstance(v, list)}
            seeds.append(seed)
            clean.append(100.0 - results["accuracy"][classifier]["class_il"][-1][0])
            corrupted.append(statistics.mean(e for v in errors.values() for e in v))
            base = baseline.get(seed)
            if base and base.get("corruptions"):
                base_errors = base["corruptions"][base["headline_classifier"]]
                mce.append(mean_corruption_error(errors, {n: base_errors[n] for n in errors}))
        lines.append(
            f"| {label} | {classifier} | {fmt(clean)} | {fmt(corrupted)} | {fmt(mce)} | {','.join(map(str, seeds))} |"
        )
    return lines if len(lines) > 2 else []


def nc_long_summary(data: dict[str, dict[int, dict]], baseline: str) -> list[str]:
    """Markdown tables of one-task runs evaluated after every epoch (``eval.per_epoch``), ``data`` = {row label:
    {seed: results}}: each classifier's accuracy and the final NC metrics; how much each metric still moves over the
    last 10 % of epochs; per seed, the first epoch at or below ``baseline``'s final value of the same seed; the
    corruptions against ``baseline`` when the runs evaluated them; and the curves at a few epochs."""
    base = data.get(baseline) or {}
    lines = [
        "| run | classifier | accuracy (%) | seeds | epochs | " + " | ".join(NC_METRICS) + " |",
        "|---|---|---|---|---|" + "---|" * len(NC_METRICS),
    ]
    for label, seeds in data.items():
        if not seeds:
            lines.append(f"| {label} | (no finished run) | | | |" + " |" * len(NC_METRICS))
            continue
        any_run = next(iter(seeds.values()))
        for i, classifier in enumerate(any_run["accuracy"]):
            accs = [r["accuracy"][classifier]["class_il"][-1][0] for r in seeds.values()]
            nc = (
                " | ".join(fmt([metric_curve(r, m)[-1] for r in seeds.values()], 3) for m in NC_METRICS)
                if i == 0
                else " | ".join("" for _ in NC_METRICS)
            )
            tag = " (headline)" if i == 0 else ""
            lines.append(
                f"| {label} | {classifier}{tag} | {fmt(accs)} | {','.join(map(str, seeds))} | "
                f"{len(epochs(any_run))} | {nc} |"
            )
    lines += [
        "",
        "Still moving? Relative change of each metric over the last 10 % of epochs (mean over seeds; "
        "(v_end − v_start) / v_start):",
        "",
        "| run | accuracy | " + " | ".join(NC_METRICS) + " |",
        "|---|---|" + "---|" * len(NC_METRICS),
    ]
    curves_of = [lambda r: accuracy_curve(r, headline(r))] + [lambda r, m=m: metric_curve(r, m) for m in NC_METRICS]
    for label, seeds in data.items():
        if not seeds:
            continue
        cells = []
        for curve_of in curves_of:
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
        lines += [
            "",
            f"First epoch at or below {baseline}'s final value (per seed; in brackets: share of "
            f"{baseline}'s epochs, mean):",
            "",
            "| run | " + " | ".join(NC_METRICS) + " |",
            "|---|" + "---|" * len(NC_METRICS),
        ]
        for label, seeds in data.items():
            if label == baseline or not seeds:
                continue
            cells = []
            for m in NC_METRICS:
                firsts, shares = [], []
                for seed, r in seeds.items():
                    if seed not in base:
                        continue
                    first = first_at_or_below(metric_curve(r, m), metric_curve(base[seed], m)[-1])
                    firsts.append("—" if first is None else str(first))
                    if first is not None:
                        shares.append(first / len(epochs(base[seed])))
                share = f" ({100 * statistics.mean(shares):.0f} %)" if shares and len(shares) == len(firsts) else ""
                cells.append(",".join(firsts) + share)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    corruptions = corruption_rows(data, base)
    if corruptions:
        lines += [
            "",
            "Corruptions after the last epoch (8 types × 5 severities, headline classifier; mCE = mean over "
            f"corruptions of 100 · Σ_s E_s / Σ_s E_s^{baseline}, paired by seed):",
            "",
            *corruptions,
        ]
    lines += [
        "",
        "Over epochs (headline classifier; mean ± std over seeds):",
        "",
        "| run | metric | " + " | ".join(f"epoch {e}" for e in CURVE_EPOCHS) + " |",
        "|---|---|" + "---|" * len(CURVE_EPOCHS),
    ]
    for label, seeds in data.items():
        if not seeds:
            continue
        for m in ("accuracy (%)", "nc1", "equiangularity", "nc3"):
            row = []
            for e in CURVE_EPOCHS:
                values = []
                for r in seeds.values():
                    curve = accuracy_curve(r, headline(r)) if m.startswith("accuracy") else metric_curve(r, m)
                    if e <= len(curve):
                        values.append(curve[e - 1])
                row.append(fmt(values, 2 if m.startswith("accuracy") else 3))
            lines.append(f"| {label} | {m} | " + " | ".join(row) + " |")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# CLOP against its partner loss: a grid of cells, and cells over seeds
# ---------------------------------------------------------------------------------------------------------------
def grid_key(config: dict) -> tuple[float, float, int, float]:
    """(label fraction, λ, batch size, learning rate) of a CLOP run's config (as plain data)."""
    return (
        float(config["method"]["label_fraction"]),
        float(config["method"]["lam"]),
        int(config["train"]["batch_size"]),
        float(config["optimizer"]["lr"]),
    )


def clop_cell(run: Path, how: str, log: Path) -> dict:
    """One CLOP run scored: accuracies, the between-/within-class effective ranks and the untrained probe, and its
    state: ``collapsed`` (between-class rank < 2 or probe < 50 %), ``NaN`` (the loss diverged: its log says so),
    ``missing`` (failed otherwise, e.g. interrupted: not counted) or ``ok``."""
    from .html import load_results

    if how == "failed":
        text = log.read_text(errors="replace") if log.exists() else ""
        return {"state": "NaN" if "NaN/inf" in text else "missing"}
    r = load_results(run).to_data()
    nc = (r.get("neural_collapse") or [None])[-1] or {}
    acc = {c: v["class_il"][-1][0] for c, v in r["accuracy"].items()}
    between, within = nc.get("between_class_effective_rank"), nc.get("within_class_effective_rank")
    collapsed = (between is not None and between < 2) or acc.get("linear_probe", 100) < 50
    return {
        "state": "collapsed" if collapsed else "ok",
        "acc": acc,
        "between": between,
        "within": within,
        "seconds": (r.get("timings") or {}).get("total_s"),
        "init_probe": ((r.get("random_init") or {}).get("linear_probe") or {}).get("class_il", [None])[0],
    }


def run_config(run: Path) -> dict:
    """The run's config.yaml as plain data (written when the run starts, so a failed run has it too)."""
    from ..config import read_yaml

    return read_yaml(RunDir(run).config)


def clop_grid_cells(out: str | Path) -> dict[tuple[float, float, int, float], dict]:
    """``{(fraction, λ, batch, lr): cell}`` of every run of a compare grid (finished or failed)."""
    return {
        grid_key(run_config(path)): clop_cell(path, row.status[seed], row.logs.get(seed, path.parent / "none"))
        for row in compare_rows(out)
        for seed, path in row.runs.items()
    }


def _show(c: dict) -> str:
    if c["state"] in ("NaN", "missing"):
        return "**NaN** (diverged)" if c["state"] == "NaN" else "—"
    acc = c["acc"]
    text = f"{acc.get('linear_probe', float('nan')):.1f}"
    if "nearest_prototype" in acc:
        text += f" / {acc['nearest_prototype']:.1f}"
    text += f"<br>rank {c['between']:.1f} / {c['within']:.1f}"
    return f"**{text}** collapsed" if c["state"] == "collapsed" else text


def clop_grid_tables(cells: dict[tuple[float, float, int, float], dict]) -> list[str]:
    """For each label fraction and loss, rows = batch size, columns = learning rate; how many finished cells
    collapsed or diverged (unfinished cells are counted apart); the untrained network's probe."""
    lines = []
    lrs = sorted({k[3] for k in cells})
    for fraction in sorted({k[0] for k in cells}):
        for lam in sorted({k[1] for k in cells}, reverse=True):
            loss = "CLOP (λ = 1) + supervised NT-Xent" if lam > 0 else "supervised NT-Xent alone (λ = 0, SupCon)"
            lines += [
                "",
                f"### {loss}, {fraction:.0%} labels",
                "",
                "| batch \\ lr | " + " | ".join(f"{lr:g}" for lr in lrs) + " |",
                "|---|" + "---|" * len(lrs),
            ]
            for batch in sorted({k[2] for k in cells if k[0] == fraction and k[1] == lam}):
                row = [_show(cells.get((fraction, lam, batch, lr), {"state": "missing"})) for lr in lrs]
                lines.append(f"| {batch} | " + " | ".join(row) + " |")
            states = [c["state"] for k, c in cells.items() if k[0] == fraction and k[1] == lam]
            bad, unfinished = sum(s in ("collapsed", "NaN") for s in states), states.count("missing")
            lines += [
                "",
                f"collapsed or diverged: {bad} of {len(states) - unfinished} finished cells"
                + (f" ({unfinished} not finished)" if unfinished else ""),
            ]
    init = {k[0]: c["init_probe"] for k, c in sorted(cells.items()) if c.get("init_probe") is not None}
    if init:
        lines += [
            "",
            "The same linear probe on the untrained network (random initialisation, seed as above), the "
            "floor a cell must beat: " + ", ".join(f"{v:.1f} % with {f:.0%} labels" for f, v in init.items()) + ".",
        ]
    return lines


CLOP_COLUMNS = (
    ("linear probe (%)", lambda c: c["acc"].get("linear_probe")),
    ("nearest prototype (%)", lambda c: c["acc"].get("nearest_prototype")),
    ("NCM (%)", lambda c: c["acc"].get("ncm")),
    ("between-class rank", lambda c: c["between"]),
    ("within-class rank", lambda c: c["within"]),
    ("untrained probe (%)", lambda c: c["init_probe"]),
)


def clop_seed_rows(rows: Sequence[Row]) -> list[str]:
    """One Markdown row per compare row (a CLOP grid cell over seeds): each column's mean ± std over the scored
    seeds, and how many seeds collapsed or diverged (the rule of :func:`clop_cell`)."""
    lines = [
        "| labels, λ | " + " | ".join(name for name, _ in CLOP_COLUMNS) + " | collapsed | seeds |",
        "|---|" + "---|" * (len(CLOP_COLUMNS) + 2),
    ]
    for row in rows:
        if not row.runs:
            lines.append(f"| {row.label} (no run) |" + " |" * (len(CLOP_COLUMNS) + 2))
            continue
        cells = {
            seed: clop_cell(path, row.status[seed], row.logs.get(seed, path.parent / f"{path.name}.log"))
            for seed, path in sorted(row.runs.items())
        }
        fraction, lam, _, _ = grid_key(run_config(next(iter(row.runs.values()))))
        scored = [c for c in cells.values() if "acc" in c]
        values = [fmt([get(c) for c in scored]) for _, get in CLOP_COLUMNS]
        collapsed = sum(c["state"] != "ok" for c in cells.values())
        lines.append(
            f"| {100 * fraction:g} %, λ = {lam:g} | "
            + " | ".join(values)
            + f" | {collapsed} of {len(cells)} | {','.join(map(str, cells))} |"
        )
    return lines


# ---------------------------------------------------------------------------------------------------------------
# targets: one side against the other, paired by seed
# ---------------------------------------------------------------------------------------------------------------
def published_row(tables: Sequence[Path], label: str, classifier: str | None) -> tuple[float, float, str] | None:
    """(mean, std, "<seeds> from <file>") of ``label``'s class-IL row in the first published Markdown table that has
    it (``| config | classifier | class-IL ... | seeds | ...``); the headline row when ``classifier`` is None."""
    for table in tables:
        if not table.exists():
            continue
        for line in table.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 7 or cells[0] != label:
                continue
            name = cells[1].replace(" (headline)", "")
            if classifier is None and (name == "head" or "(headline)" in cells[1]) or name == classifier:
                numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", cells[2])[:2]]
                return numbers[0], (numbers[1] if len(numbers) > 1 else 0.0), f"{cells[6]} from {table.name}"
    return None


def target_row(
    target: str,
    left: dict[int, float] | None,
    right: dict[int, float] | None,
    published: tuple[float, float, str] | None = None,
    factor: float = 1.0,
) -> str:
    """One Markdown row for ``left ≥ factor × right``: on the seeds both sides finished, or against a ``published``
    right side (mean, std, where) when ``right`` has no run. The margin is mean(left) − factor · mean(right); it is
    "within the spread" when its size is at most std(left) + factor · std(right)."""
    if not left or (not right and published is None):
        return f"| {target} | (no shared finished seeds) | | | | |"
    if right:  # paired: the seeds both sides finished
        seeds = sorted(set(left) & set(right))
        if not seeds:
            return f"| {target} | (no shared finished seeds) | | | | |"
        x, y = [left[s] for s in seeds], [right[s] for s in seeds]
        right_text = fmt(y)
        y_mean, y_std = statistics.mean(y), (statistics.stdev(y) if len(y) > 1 else 0.0)
    else:
        seeds = sorted(left)
        x = [left[s] for s in seeds]
        y_mean, y_std, where = published
        right_text = f"{y_mean:.2f} ± {y_std:.2f} ({where})"
    x_std = statistics.stdev(x) if len(x) > 1 else 0.0
    margin = statistics.mean(x) - factor * y_mean
    verdict = ("met" if margin >= 0 else "missed") + (
        "" if abs(margin) > x_std + factor * y_std else " (within the spread)"
    )
    return f"| {target} | {fmt(x)} | {right_text} | {margin:+.2f} | {verdict} | {','.join(map(str, seeds))} |"
