"""The tables of ``protosphere compare``: rows of finished runs → mean ± std columns, Welch's test for the best row, and
the same table as Markdown, a rich console table and a self-contained HTML page.

This module only reads results; :mod:`protosphere.runs.sweep` obtains the runs (reuse, resume or train) and calls it.
Means and standard deviations are over seeds; the std is the sample standard deviation (n − 1 in the denominator),
absent for a single seed. A row some of whose runs failed shows ``(n = k)`` after each value, so a mean over fewer
seeds is never mistaken for the full one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..runs.record import StoredRecord

SETTINGS = ("class_il", "task_il")
METRIC_KEYS = (
    "final_average_accuracy",
    "average_incremental_accuracy",
    "average_forgetting",
    "backward_transfer",
    "forward_transfer",
)
LOWER_IS_BETTER = {"average_forgetting"}


@dataclass
class Column:
    key: str  # "<classifier or 'headline'>/<setting>/<metric>"
    title: str
    classifier: str | None  # None = each row's headline classifier
    setting: str
    metric: str


@dataclass
class Entry:
    """One row: a config (with its grid values) over seeds; the lists are aligned, one item per seed."""

    path: Path
    label: str
    configs: list = field(default_factory=list)  # RunConfig per seed
    results: list = field(default_factory=list)  # StoredRecord per seed; None for a run that failed
    status: list = field(default_factory=list)  # "reused" | "resumed" | "trained" | "failed" per seed


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------
def mean_std(values: Sequence[float | None]) -> dict:
    """``{"mean", "std", "n", "values"}`` over the non-None values; std is the sample std (None for n < 2)."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    array = np.asarray(kept, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(kept) > 1 else None
    return {"mean": float(array.mean()), "std": std, "n": len(kept), "values": list(values)}


def format_mean_std(stat: dict, digits: int = 2) -> str:
    if stat.get("mean") is None:
        return "n/a"
    if stat.get("std") is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def classifier_text(row: dict) -> str:
    """The row's headline classifier, or a dash when none of its runs finished."""
    return "—" if row["headline_classifier"] is None else str(row["headline_classifier"])


def cell_text(stat: dict, seeds: int) -> str:
    """``format_mean_std``, with ``(n = k)`` when the value stands on fewer than ``seeds`` runs (some failed)."""
    text = format_mean_std(stat)
    return text if stat.get("mean") is None or stat["n"] >= seeds else f"{text} (n = {stat['n']})"


def metric_value(record: StoredRecord, classifier: str | None, setting: str, metric: str) -> float | None:
    """One continual metric of ``classifier`` (None: the run's headline classifier), None when the run lacks it."""
    summary = record.summary(classifier, setting)
    return None if summary is None else getattr(summary, metric)


def seen_curve(record: StoredRecord, classifier: str | None = None, setting: str = "class_il") -> list[float] | None:
    """Mean accuracy on the tasks seen so far, after each task (the curve whose mean is avg incremental acc)."""
    matrix = record.accuracy.get(classifier or record.headline_classifier, {}).get(setting)
    if not matrix:
        return None
    return [float(np.mean(row[: t + 1])) for t, row in enumerate(matrix)]


def build_columns(all_results: Sequence[Sequence[StoredRecord | None]]) -> list[Column]:
    """Headline-classifier columns, then one class-IL column per classifier of representation methods (None stands
    for a run that failed and is skipped)."""
    all_results = [[r for r in rs if r is not None] for rs in all_results]
    has_task_il = any(r.summary(setting="task_il") is not None for rs in all_results for r in rs)
    columns = [
        Column(
            "headline/class_il/final_average_accuracy", "class-IL final acc", None, "class_il", "final_average_accuracy"
        )
    ]
    if has_task_il:
        columns.append(
            Column(
                "headline/task_il/final_average_accuracy",
                "task-IL final acc",
                None,
                "task_il",
                "final_average_accuracy",
            )
        )
    columns += [
        Column(
            "headline/class_il/average_incremental_accuracy",
            "class-IL avg incremental acc",
            None,
            "class_il",
            "average_incremental_accuracy",
        ),
        Column("headline/class_il/average_forgetting", "class-IL forgetting", None, "class_il", "average_forgetting"),
    ]
    classifiers: list[str] = []
    for rs in all_results:
        for r in rs:
            names = list(r.metrics)
            if len(names) > 1:
                classifiers += [n for n in names if n not in classifiers]
    for name in classifiers:
        columns.append(
            Column(
                f"{name}/class_il/final_average_accuracy",
                f"class-IL [{name}]",
                name,
                "class_il",
                "final_average_accuracy",
            )
        )
        if has_task_il:
            columns.append(
                Column(
                    f"{name}/task_il/final_average_accuracy",
                    f"task-IL [{name}]",
                    name,
                    "task_il",
                    "final_average_accuracy",
                )
            )
    return columns


def summarize_rows(entries: Sequence[Entry], columns: Sequence[Column]) -> list[dict]:
    rows = []
    for entry in entries:
        finished = [r for r in entry.results if r is not None]
        first = finished[0] if finished else None
        values = {
            c.key: mean_std(
                [None if r is None else metric_value(r, c.classifier, c.setting, c.metric) for r in entry.results]
            )
            for c in columns
        }
        all_metrics: dict = {}
        for classifier, settings in (first.metrics if first is not None else {}).items():
            for setting in settings:
                for metric in METRIC_KEYS:
                    all_metrics.setdefault(classifier, {}).setdefault(setting, {})[metric] = mean_std(
                        [metric_value(r, classifier, setting, metric) for r in finished]
                    )
        curves = [seen_curve(r) for r in finished]
        curve = None
        if curves and all(c is not None for c in curves) and len({len(c) for c in curves}) == 1:
            array = np.asarray(curves, dtype=np.float64)
            curve = {
                "mean": array.mean(0).tolist(),
                "std": (array.std(0, ddof=1) if len(curves) > 1 else np.zeros(array.shape[1])).tolist(),
            }
        configs = entry.configs or [None] * len(entry.results)
        method = first.method if first is not None else None
        rows.append(
            {
                "label": entry.label,
                "config": str(entry.path),
                "method": method or (entry.configs[0].method.name if entry.configs else None),
                "headline_classifier": first.headline_classifier if first is not None else None,
                "runs": [r.name if r is not None else getattr(c, "name", None) for r, c in zip(entry.results, configs)],
                "seeds": [
                    r.seed if r is not None else getattr(c, "seed", None) for r, c in zip(entry.results, configs)
                ],
                "status": list(entry.status),
                "values": values,
                "metrics": all_metrics,
                "class_il_seen_curve": curve,
            }
        )
    return rows


MIN_SEEDS_FOR_BEST = 3
SIGNIFICANCE = 0.05


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) for the means of ``a`` and ``b``; None when a side has
    fewer than two values. Two constant samples with different means give 0 (the difference has no spread)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def best_test(rows: Sequence[dict], columns: Sequence[Column]) -> dict[str, dict | None]:
    """Per column: the row with the best mean (max; min for forgetting), the runner-up, both n, and Welch's p.

    ``best`` is set only when both rows have at least MIN_SEEDS_FOR_BEST values and p < SIGNIFICANCE; with fewer
    seeds, or overlapping results, no row is called best. None when fewer than two rows have a value.
    """
    out: dict[str, dict | None] = {}
    for c in columns:
        scored = [
            (row["values"][c.key]["mean"], row["label"], row["values"][c.key])
            for row in rows
            if row["values"][c.key]["mean"] is not None
        ]
        if len(scored) < 2:
            out[c.key] = None
            continue
        scored.sort(key=lambda item: item[0], reverse=c.metric not in LOWER_IS_BETTER)
        (_, first, a), (_, second, b) = scored[0], scored[1]
        values_a = [v for v in a["values"] if v is not None]
        values_b = [v for v in b["values"] if v is not None]
        p = welch_p(values_a, values_b)
        enough = min(len(values_a), len(values_b)) >= MIN_SEEDS_FOR_BEST
        out[c.key] = {
            "leader": first,
            "runner_up": second,
            "n": [len(values_a), len(values_b)],
            "p": p,
            "best": first if enough and p is not None and p < SIGNIFICANCE else None,
        }
    return out


def best_labels(rows: Sequence[dict], columns: Sequence[Column]) -> dict[str, str | None]:
    """Label of the significantly best row per column (see :func:`best_test`), else None."""
    return {key: (test or {}).get("best") for key, test in best_test(rows, columns).items()}


BEST_RULE = (
    f"bold = best mean, only when both it and the runner-up have n ≥ {MIN_SEEDS_FOR_BEST} seeds and "
    f"Welch's t-test (two-sided, unequal variances) between them gives p < {SIGNIFICANCE}"
)


# ---------------------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------------------
def to_markdown(summary: dict) -> str:
    columns = summary["columns"]
    best = summary["best"]
    head = ["config", "method", "classifier", *[c["title"] for c in columns]]
    lines = [
        f"# protosphere compare — {summary['scenario']['description']}",
        "",
        f"Mean ± sample std over seeds {', '.join(map(str, summary['seeds']))} (n = {len(summary['seeds'])}); "
        f"accuracies in %, forgetting in percentage points (lower is better); **bold**{BEST_RULE[4:]}; "
        f"[clf] columns: that classifier; the others: each row's headline classifier.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 3 + "---:|" * len(columns),
    ]
    for row in summary["rows"]:
        cells = []
        for c in columns:
            text = cell_text(row["values"][c["key"]], len(summary["seeds"]))
            cells.append(f"**{text}**" if best.get(c["key"]) == row["label"] else text)
        lines.append("| " + " | ".join([row["label"], str(row["method"]), classifier_text(row), *cells]) + " |")
    lines += ["", "Command:", "", "```", summary["command"], "```", ""]
    lines += [
        "Runs: "
        + "; ".join(
            f"{row['label']}: " + ", ".join(f"{name} ({how})" for name, how in zip(row["runs"], row["status"]))
            for row in summary["rows"]
        ),
        "",
    ]
    if summary.get("failed"):
        lines += ["Failed: " + "; ".join(f"{f['run']} (log: {f['log']})" for f in summary["failed"]), ""]
    return "\n".join(lines)


def rich_table(summary: dict):
    from rich.table import Table

    table = Table(
        title=f"compare — {summary['scenario']['description']} — mean ± std over {len(summary['seeds'])} seed(s)"
    )
    table.add_column("config", style="bold")
    table.add_column("method")
    table.add_column("classifier")
    for c in summary["columns"]:
        table.add_column(c["title"], justify="right")
    for row in summary["rows"]:
        cells = []
        for c in summary["columns"]:
            text = cell_text(row["values"][c["key"]], len(summary["seeds"]))
            cells.append(f"[bold green]{text}[/]" if summary["best"].get(c["key"]) == row["label"] else text)
        table.add_row(row["label"], str(row["method"]), classifier_text(row), *cells)
    return table


def to_html(summary: dict, out: Path) -> str:
    from ..runs.rundir import RunDir
    from . import plots
    from .html import clear_pngs, esc, figure, page

    plot_dir = out / "plots"
    clear_pngs(plot_dir)
    columns, rows, best = summary["columns"], summary["rows"], summary["best"]
    labels = [r["label"] for r in rows]
    series = {}
    for key, name in (
        ("headline/class_il/final_average_accuracy", "class-IL"),
        ("headline/task_il/final_average_accuracy", "task-IL"),
    ):
        if any(c["key"] == key for c in columns):
            series[name] = ([r["values"][key]["mean"] for r in rows], [r["values"][key]["std"] for r in rows])
    parts = [
        f"<header><h1>Comparison — {esc(summary['scenario']['description'])}</h1>"
        f'<div class="meta"><span>seeds <b>{esc(", ".join(map(str, summary["seeds"])))}</b></span>'
        f"<span>output <b>{esc(summary['out'])}</b></span></div></header>",
        f"<h3>Command</h3><pre>{esc(summary['command'])}</pre>",
        "<h2>Results</h2>",
    ]
    head = "".join(f"<th>{esc(c['title'])}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            stat = row["values"][c["key"]]
            text = esc(cell_text(stat, len(summary["seeds"])))
            bold = best.get(c["key"]) == row["label"]
            value = "null" if stat["mean"] is None else repr(stat["mean"])
            std = "null" if stat["std"] is None else repr(stat["std"])
            test = (summary.get("best_test") or {}).get(c["key"]) or {}
            tip = (
                f" title=\"Welch's t-test against {esc(test['runner_up'])}: p = {test['p']:.3g} "
                f'(n = {test["n"][0]}, {test["n"][1]})"'
                if bold and test.get("p") is not None
                else ""
            )
            cells.append(
                f'<td data-key="{esc(row["label"] + "|" + c["key"])}" data-mean="{value}" '
                f'data-std="{std}"{tip}>{"<b>" + text + "</b>" if bold else text}</td>'
            )
        links = " ".join(
            f'<a href="{esc(RunDir(name).report.as_posix())}">s{esc(seed)}</a>'
            if how != "failed"
            else f'<a href="{esc(name)}.log">s{esc(seed)} failed</a>'
            for name, seed, how in zip(row["runs"], row["seeds"], row.get("status") or [None] * len(row["runs"]))
        )
        body.append(
            f'<tr><td class="l"><b>{esc(row["label"])}</b></td><td class="l">{esc(row["method"])}</td>'
            f'<td class="l">{esc(classifier_text(row))}</td>{"".join(cells)}'
            f'<td class="l">{links}</td></tr>'
        )
    parts.append(
        '<table><thead><tr><th class="l">config</th><th class="l">method</th><th class="l">classifier'
        f'</th>{head}<th class="l">runs</th></tr></thead><tbody>{"".join(body)}</tbody></table>'
    )
    parts.append(
        f'<p class="note">Mean ± sample std over {len(summary["seeds"])} seed(s); accuracies in %, '
        f"forgetting in percentage points (lower is better); {BEST_RULE}. Columns without [classifier] "
        f"use each row's headline classifier.</p>"
    )
    figs = ['<div class="row">']
    if series:
        bars = plots.compare_bars(labels, series, plot_dir / "compare_final_accuracy.png")
        figs.append(
            figure(
                bars, "final average accuracy", "Final average accuracy (headline classifier), mean ± std over seeds."
            )
        )
    curves = {
        r["label"]: (r["class_il_seen_curve"]["mean"], r["class_il_seen_curve"]["std"])
        for r in rows
        if r.get("class_il_seen_curve")
    }
    if curves:
        path = plots.compare_curves(curves, plot_dir / "compare_seen_accuracy.png")
        figs.append(
            figure(
                path,
                "accuracy on seen tasks",
                "Class-IL accuracy on the tasks seen so far after each "
                "task (headline classifier); band = ± std over seeds.",
            )
        )
    figs.append("</div>")
    parts.append("\n".join(figs))
    return page(
        f"protosphere compare — {summary['scenario']['description']}",
        "\n".join(parts),
        footer="Data: <code>compare.json</code>.",
    )
