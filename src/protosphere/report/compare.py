"""The tables of ``protosphere compare``: rows of finished runs → mean ± std columns, Welch's test for the best row, and
the same table as Markdown, a rich console table, a LaTeX table (booktabs) and a self-contained HTML page.

The HTML page gives each row one colour in its table and in every plot, shows each seed's value beside the mean ± std,
lists the config keys whose values differ between rows (:func:`config_differences`), and links every plot's PNG and
vector PDF.

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
        per_seed = [None if r is None else seen_curve(r) for r in entry.results]
        curves = [c for c, r in zip(per_seed, entry.results) if r is not None]
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
                "class_il_seen_curves": per_seed,  # one per seed (None: a failed run or no matrix)
            }
        )
    return rows


RUN_KEYS = ("name", "seed", "output_dir")  # differ between every two runs by construction


def flat_config(config: dict, prefix: str = "") -> dict:
    """A nested config as ``{dotted key: value}`` (lists and None kept as they are), in the config's own order."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(entries: Sequence[Entry]) -> dict:
    """The config keys whose values differ between rows: ``{"keys": [...], "rows": {label: {key: value}}}``, from
    each row's first config (a row's seeds share every key but ``name``, ``seed`` and ``output_dir``); a key a row's
    config lacks (another method's setting) is absent from its mapping."""
    flats = []
    for entry in entries:
        if entry.configs:
            config = entry.configs[0].model_dump(mode="json")
        else:
            config = next((r.config for r in entry.results if r is not None and r.config), {})
        flats.append(flat_config(config))
    keys: list[str] = []
    for flat in flats:
        keys += [k for k in flat if k not in keys and k not in RUN_KEYS]
    missing = object()
    differing = [k for k in keys if len({repr(flat.get(k, missing)) for flat in flats}) > 1]
    return {
        "keys": differing,
        "rows": {entry.label: {k: flat[k] for k in differing if k in flat} for entry, flat in zip(entries, flats)},
    }


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


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "—": "---",
    "–": "--",
    "±": r"$\pm$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
}


def latex_escape(text: str) -> str:
    """``text`` as LaTeX text: the ten characters LaTeX treats specially escaped, and the few non-ASCII ones
    protosphere writes (dashes, ±, ≥, ≤) spelt in ASCII LaTeX, which every engine reads."""
    return "".join(LATEX_SPECIAL.get(char, char) for char in str(text))


def latex_cell(stat: dict, seeds: int, bold: bool) -> str:
    """``52.00 $\\pm$ 2.00`` (``--`` without a value; ``(n = 2)`` when fewer than ``seeds`` runs gave one, as in
    Markdown), bold when the row is the column's significantly best."""
    if stat.get("mean") is None:
        return "--"
    text = f"{stat['mean']:.2f}" if stat.get("std") is None else f"{stat['mean']:.2f} $\\pm$ {stat['std']:.2f}"
    if bold:
        text = rf"\textbf{{{text}}}"
    return text if stat["n"] >= seeds else f"{text} ($n = {stat['n']}$)"


def to_latex(summary: dict) -> str:
    """The table of :func:`to_markdown` as a LaTeX ``table`` (booktabs rules, needs ``\\usepackage{booktabs}``):
    the same rows, columns, mean ± std and bold cells, a caption that says what they are, and the command as a
    comment."""
    columns, best, seeds = summary["columns"], summary["best"], len(summary["seeds"])
    head = ["config", "method", "classifier", *[c["title"] for c in columns]]
    lines = [
        f"% protosphere compare -- {summary['scenario']['description']} (needs \\usepackage{{booktabs}})",
        *[f"% {line}" for line in summary["command"].splitlines()],
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{lll{'r' * len(columns)}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in head) + r" \\",
        r"\midrule",
    ]
    for row in summary["rows"]:
        cells = [latex_cell(row["values"][c["key"]], seeds, best.get(c["key"]) == row["label"]) for c in columns]
        lines.append(
            " & ".join([latex_escape(row["label"]), latex_escape(row["method"]), latex_escape(classifier_text(row))])
            + "".join(f" & {cell}" for cell in cells)
            + r" \\"
        )
    caption = (
        f"{latex_escape(summary['scenario']['description'])}: mean $\\pm$ sample std over seeds "
        f"{latex_escape(', '.join(map(str, summary['seeds'])))} ($n = {seeds}$); accuracies in \\%, forgetting in "
        f"percentage points (lower is better). Bold: best mean, only when both it and the runner-up have "
        f"$n \\geq {MIN_SEEDS_FOR_BEST}$ seeds and Welch's t-test (two-sided, unequal variances) between them gives "
        f"$p < {SIGNIFICANCE}$. Columns with [classifier]: that "
        f"classifier; the others: each row's headline classifier."
    )
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}", ""]
    return "\n".join(lines)


def _value_text(value) -> str:
    """A config value as the differences table shows it (JSON spelling: null, true, [1, 2])."""
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _differences_part(summary: dict, colors: dict[str, str]) -> str:
    from .html import esc

    differences = summary.get("differences") or {}
    keys, by_row = differences.get("keys") or [], differences.get("rows") or {}
    labels = [r["label"] for r in summary["rows"] if r["label"] in by_row]
    if not keys or len(labels) < 2:
        return ""
    head = "".join(f'<th class="l">{_swatch(colors.get(label))}{esc(label)}</th>' for label in labels)
    body = "".join(
        f'<tr><td class="l"><code>{esc(key)}</code></td>'
        + "".join(
            f'<td class="l" data-key="{esc(label + "|" + key)}">{esc(_value_text(by_row[label][key]))}</td>'
            if key in by_row[label]
            else '<td class="l na">—</td>'
            for label in labels
        )
        + "</tr>"
        for key in keys
    )
    return (
        "<h3>What differs between the rows</h3>"
        f'<table class="differences"><thead><tr><th class="l">config key</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
        '<p class="note">The resolved config of each row (its first seed), keys whose values differ between rows; '
        "— : the row's method has no such key. Name, seed and output folder differ by construction and are left "
        "out.</p>"
    )


def _per_seed_part(summary: dict, colors: dict[str, str]) -> str:
    from .html import esc, number_cell

    columns = summary["columns"]
    head = "".join(f"<th>{esc(c['title'])}</th>" for c in columns)
    body = []
    for row in summary["rows"]:
        status = row.get("status") or [None] * len(row["runs"])
        for i, (name, seed, how) in enumerate(zip(row["runs"], row["seeds"], status)):
            cells = "".join(
                number_cell(_nth(row["values"][c["key"]].get("values"), i), f"{name}|{c['key']}") for c in columns
            )
            body.append(
                f'<tr><td class="l">{_swatch(colors.get(row["label"]))}{esc(row["label"])}</td><td>{esc(seed)}</td>'
                f'<td class="l">{esc(name)}</td><td class="l">{esc(how or "")}</td>{cells}</tr>'
            )
    return (
        "<details><summary>Every seed's values</summary>"
        f'<table class="per-seed"><thead><tr><th class="l">config</th><th>seed</th><th class="l">run</th>'
        f'<th class="l">obtained</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></details>'
    )


def _nth(values, i: int):
    return values[i] if values is not None and i < len(values) else None


def _swatch(tint: str | None) -> str:
    """A small square in a row's colour, tying a table row to its marks in the plots."""
    if tint is None:
        return ""
    return (
        f'<span class="swatch" style="display:inline-block;width:10px;height:10px;border-radius:2px;'
        f'margin-right:6px;background:{tint}" aria-hidden="true"></span>'
    )


def to_html(summary: dict, out: Path) -> str:
    from ..runs.rundir import RunDir
    from . import plots
    from .html import clear_pngs, esc, figure, page

    plot_dir = out / "plots"
    clear_pngs(plot_dir)
    columns, rows, best = summary["columns"], summary["rows"], summary["best"]
    labels = [r["label"] for r in rows]
    colors = {label: plots.color(i) for i, label in enumerate(labels)}  # one colour per row, in every plot
    series, seed_values = {}, {}
    for key, name in (
        ("headline/class_il/final_average_accuracy", "class-IL"),
        ("headline/task_il/final_average_accuracy", "task-IL"),
    ):
        if any(c["key"] == key for c in columns):
            series[name] = ([r["values"][key]["mean"] for r in rows], [r["values"][key]["std"] for r in rows])
            seed_values[name] = [r["values"][key].get("values") or [] for r in rows]
    parts = [
        f"<header><h1>Comparison — {esc(summary['scenario']['description'])}</h1>"
        f'<div class="meta"><span>seeds <b>{esc(", ".join(map(str, summary["seeds"])))}</b></span>'
        f"<span>output <b>{esc(summary['out'])}</b></span></div></header>",
        f'<h3>Command</h3><pre class="command">{esc(summary["command"])}</pre>',
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
            f'<tr><td class="l">{_swatch(colors[row["label"]])}<b>{esc(row["label"])}</b></td>'
            f'<td class="l">{esc(row["method"])}</td>'
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
        f"use each row's headline classifier. The same table for LaTeX: <code>compare.tex</code>.</p>"
    )
    parts.append(_per_seed_part(summary, colors))
    parts.append(_differences_part(summary, colors))
    figs = ['<div class="row">']
    if series:
        bars = plots.compare_bars(
            labels,
            series,
            plot_dir / "compare_final_accuracy.png",
            colors=[colors[label] for label in labels],
            seeds=seed_values,
        )
        figs.append(
            figure(
                bars,
                "final average accuracy",
                "Final average accuracy (headline classifier), mean ± std over seeds; dots: each seed; "
                "hatched: task-IL.",
            )
        )
    curves = {
        r["label"]: (r["class_il_seen_curve"]["mean"], r["class_il_seen_curve"]["std"])
        for r in rows
        if r.get("class_il_seen_curve")
    }
    if curves:
        path = plots.compare_curves(
            curves,
            plot_dir / "compare_seen_accuracy.png",
            colors=colors,
            seeds={r["label"]: r.get("class_il_seen_curves") for r in rows},
        )
        figs.append(
            figure(
                path,
                "accuracy on seen tasks",
                "Class-IL accuracy on the tasks seen so far after each "
                "task (headline classifier); band = ± std over seeds; thin lines: each seed.",
            )
        )
    figs.append("</div>")
    parts.append("\n".join(figs))
    return page(
        f"protosphere compare — {summary['scenario']['description']}",
        "\n".join(p for p in parts if p),
        footer="Data: <code>compare.json</code>; LaTeX table: <code>compare.tex</code>.",
    )
