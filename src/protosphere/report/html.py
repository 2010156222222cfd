"""``runs/<name>/report.html``: one self-contained page (inline CSS, PNGs as base64 data URIs) for a finished run.

The report is rendered from the run record (``results.json``, read as a :class:`~protosphere.runs.record.StoredRecord`)
alone, plus ``embeddings.npz`` when the run saved one (see :func:`~protosphere.runs.rundir.save_embedding_snapshot`);
every part whose data is absent (task-IL, NC metrics, a second task, per-epoch
accuracy, prototype alignment/drift, corruption errors, embeddings, timings) is left out. The plots are also kept
under ``runs/<name>/plots/`` for papers and slides, each as a PNG and a vector PDF.

The page needs nothing outside itself to display; its links to the run's files (config.yaml, results.json,
metrics.csv, checkpoints, each plot's PNG and PDF) are relative, so they work wherever the run folder is copied. Under
the headline numbers, a classifier whose final accuracy is at or near chance (:func:`near_chance`) is named, with
the reason the record points to (:func:`chance_notes`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..runs.record import Diagnostics, EpochEvaluation, RunRecord, StoredRecord
from ..runs.rundir import RunDir, atomic_write, save_embedding_snapshot  # noqa: F401 (save_embedding_snapshot: re-exported)
from . import plots

__all__ = ["load_results", "render_report", "save_embedding_snapshot", "try_write_report", "write_report"]

HEADLINE_METRICS = [
    ("final_average_accuracy", "final avg acc", "mean accuracy over all tasks after the last one (%)"),
    (
        "average_incremental_accuracy",
        "avg incremental acc",
        "mean over time of the accuracy on the tasks seen so far (%)",
    ),
    ("average_forgetting", "forgetting", "mean over earlier tasks of best − final accuracy (pp, lower is better)"),
    ("backward_transfer", "BWT", "mean of final − just-learned accuracy over earlier tasks (pp)"),
    ("forward_transfer", "FWT", "mean accuracy on a task before learning it, minus a random-init model (pp)"),
]
NC_SHORT = {
    "within_class_effective_rank": "eff. rank (within)",
    "between_class_effective_rank": "eff. rank (between)",
    "max_angle": "max-angle",
}

CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d8dee4; --bg:#f6f8fa; --accent:#4C72B0; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: #fff; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 48px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 12px; margin-bottom: 8px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: var(--muted); font-size: 13px; }
.meta span { margin-right: 14px; white-space: nowrap; display: inline-block; max-width: 100%; }
.meta span b { white-space: normal; overflow-wrap: anywhere; }
.scroll { max-width: 100%; overflow-x: auto; }
.meta b { color: var(--fg); font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px;
        background: var(--bg); }
.card .value { font-size: 26px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px; text-align: right; }
th { background: var(--bg); font-weight: 600; }
td.l, th.l { text-align: left; }
tr.headline td { font-weight: 600; }
.na { color: var(--muted); }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; max-width: 900px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.row > figure { flex: 0 1 auto; display: table; }
.row > figure > figcaption { display: table-caption; caption-side: bottom; }
details { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; margin: 10px 0; background: var(--bg); }
details > summary { cursor: pointer; font-weight: 600; }
pre { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; overflow-x: auto;
      font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre.command { white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0 8px; }
.provenance { font-size: 13px; margin: 10px 0 4px; }
.provenance .files a, figcaption .files a { color: var(--accent); }
figcaption .files { white-space: nowrap; }
.chance { border-left: 4px solid #DD8452; background: #fdf6ef; padding: 6px 12px; border-radius: 4px; margin: 6px 0; }
.note { color: var(--muted); font-style: italic; }
.warn { border-left: 4px solid #C44E52; background: #fdf2f2; padding: 8px 12px; border-radius: 4px; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--bg); padding: 1px 4px;
       border-radius: 4px; }
nav.toc { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; margin: 12px 0; background: var(--bg);
          font-size: 13px; }
nav.toc ol { margin: 4px 0 0; padding-left: 0; list-style: none; display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav.toc li { counter-increment: toc; }
nav.toc li::before { content: counter(toc) ". "; color: var(--muted); }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
"""


# ---------------------------------------------------------------------------------------------------------------
# small HTML helpers (shared with compare.py)
# ---------------------------------------------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def number_cell(value: Any, key: str | None = None, digits: int = 2) -> str:
    """A right-aligned cell; ``data-key``/``data-value`` carry the exact number for tools and tests."""
    attrs = f' data-key="{esc(key)}"' if key else ""
    if value is None:
        return f'<td class="na"{attrs} data-value="null">n/a</td>'
    return f'<td{attrs} data-value="{float(value)!r}">{fmt(value, digits)}</td>'


def image_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def file_links(path: Path) -> str:
    """Links to a plot's PNG and its vector PDF, relative to the page, which sits one folder above ``plots/``."""
    from .plots import vector_path

    links = [(path, "PNG"), (vector_path(path), "PDF")]
    shown = " · ".join(
        f'<a href="{esc(f"{file.parent.name}/{file.name}")}">{kind}</a>' for file, kind in links if file.is_file()
    )
    return f' <span class="files">[{shown}]</span>' if shown else ""


def figure(path: Path | None, alt: str, caption: str = "") -> str:
    """The picture inline (a data URI), its caption, and links to its PNG and PDF files."""
    if path is None:
        return ""
    cap = f"<figcaption>{caption}{file_links(path)}</figcaption>"
    return f"<figure>{image_tag(path, alt)}{cap}</figure>"


def page(title: str, body: str, footer: str = "") -> str:
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    from ..version import __version__

    foot = f"<footer>{footer} Rendered {esc(stamp)} by protosphere {esc(__version__)}.</footer>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{_scrolling(body)}\n{foot}\n"
        "</main>\n</body>\n</html>\n"
    )


def _scrolling(body: str) -> str:
    """Every table in a box that scrolls sideways by itself, so a wide table never pushes the page past the window."""
    import re

    return re.sub(r"(<table\b.*?</table>)", r'<div class="scroll">\1</div>', body, flags=re.S)


def clear_pngs(folder: Path) -> None:
    """Remove the plots (PNG and PDF) a previous rendering left, so a re-render never shows a stale picture."""
    if folder.is_dir():
        for plot in [*folder.glob("*.png"), *folder.glob("*.pdf")]:
            plot.unlink()


# ---------------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------------
def load_results(run_dir: str | Path) -> StoredRecord:
    """The record of a run directory's ``results.json`` (:func:`protosphere.runs.rundir.read_record`), whichever version
    wrote it; :class:`RunError` with one sentence when it is missing, unreadable or does not match the schema."""
    return RunDir(run_dir).read_results()


def load_embeddings(run_dir: Path) -> dict | None:
    """Features/labels/prototypes from ``embeddings.npz`` (None when the run saved none)."""
    path = RunDir(run_dir).embeddings
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path} is unreadable ({exc}); the report leaves embeddings out.", stacklevel=2)
        return None
    if "features" not in data or "labels" not in data or len(data["labels"]) == 0:
        return None
    if "cosine" not in data and data.get("prototypes") is not None:
        labels = data["labels"].astype(np.int64)
        protos = data["prototypes"].astype(np.float64)
        if protos.ndim == 2 and protos.shape[1] == data["features"].shape[1]:
            z = data["features"].astype(np.float64)
            z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            classes = np.unique(labels)
            classes = classes[classes < len(protos)]
            means = np.stack([z[labels == c].mean(0) for c in classes])
            means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
            w = protos[classes] / np.maximum(np.linalg.norm(protos[classes], axis=1, keepdims=True), 1e-12)
            data["classes"], data["cosine"] = classes, means @ w.T
    return data


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------
def headline_table(record: StoredRecord) -> str:
    """Every classifier × setting with the five continual metrics; the headline classifier first and in bold."""
    headline = record.headline_classifier
    order = sorted(record.metrics, key=lambda c: c != headline)
    head = "".join(f'<th title="{esc(tip)}">{esc(label)}</th>' for _, label, tip in HEADLINE_METRICS)
    rows = []
    for classifier in order:
        for setting, summary in record.metrics[classifier].items():
            cells = "".join(
                number_cell(getattr(summary, key), f"{classifier}/{setting}/{key}") for key, _, _ in HEADLINE_METRICS
            )
            mark = " ★" if classifier == headline else ""
            cls = ' class="headline"' if classifier == headline else ""
            rows.append(
                f'<tr{cls}><td class="l">{esc(classifier)}{mark}</td>'
                f'<td class="l">{esc(plots.setting_label(setting))}</td>{cells}'
                f'<td class="l">{esc(record.classifier_data.get(classifier, ""))}</td></tr>'
            )
    return (
        f'<table class="headline-numbers"><thead><tr><th class="l">classifier</th><th class="l">setting</th>{head}'
        f'<th class="l">fitted on</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _cards(record: StoredRecord) -> str:
    settings = record.metrics.get(record.headline_classifier or "", {})
    cards = []
    for setting, summary in settings.items():
        cards.append((f"{plots.setting_label(setting)} final avg acc", summary.final_average_accuracy, "%"))
    if "class_il" in settings:
        summary = settings["class_il"]
        cards.append(("class-IL avg incremental acc", summary.average_incremental_accuracy, "%"))
        if summary.average_forgetting is not None:
            cards.append(("class-IL forgetting", summary.average_forgetting, " pp"))
    if record.timings.total_s is not None:
        cards.append(("wall time", record.timings.total_s, " s"))
    body = "".join(
        f'<div class="card"><div class="value">{fmt(v, 1) if v is not None else "n/a"}'
        f"<small>{esc(unit) if v is not None else ''}</small></div>"
        f'<div class="label">{esc(label)}</div></div>'
        for label, v, unit in cards
    )
    return f'<div class="cards">{body}</div>'


def _meta(record: StoredRecord) -> str:
    sc, env = record.scenario, record.environment

    def known(value):
        return "?" if value is None else value

    items = [
        ("method", record.method),
        (
            "scenario",
            f"{known(sc.name)} ({plots.setting_label(sc.kind or '?')}, "
            f"{known(sc.num_tasks)} tasks, {known(sc.num_classes)} classes)",
        ),
        ("seed", record.seed),
        ("headline classifier", record.headline_classifier),
        ("status", record.status),
        ("device", env.gpu or env.device),
        ("world size", env.world_size),
        ("precision", env.precision),
    ]
    return (
        '<div class="meta">'
        + "".join(f"<span>{esc(k)} <b>{esc(v)}</b></span>" for k, v in items if v is not None)
        + "</div>"
    )


def _provenance(record: StoredRecord, run_dir: Path) -> str:
    """Where the run came from (the command and the code the record holds) and links to its files."""
    parts = []
    if record.command:
        parts.append(f'<div>command</div><pre class="command">{esc(record.command)}</pre>')
    code = record.code
    if code.version or code.git_commit:
        text = f"protosphere {esc(code.version or '?')}"
        if code.git_commit:
            text += f', git commit <code title="{esc(code.git_commit)}">{esc(code.git_commit[:12])}</code>'
            if code.git_dirty:
                text += " with uncommitted changes"
        elif code.git_commit is None and code.version:
            text += " (not a git checkout)"
        parts.append(f"<div>code <b>{text}</b></div>")
    if record.fingerprint:
        parts.append(f"<div>config fingerprint <code>{esc(record.fingerprint)}</code></div>")
    links = _file_links(run_dir)
    if links:
        parts.append(f'<div class="files">files {links}</div>')
    return f'<div class="provenance meta">{"".join(parts)}</div>' if parts else ""


def _file_links(run_dir: Path) -> str:
    """Relative links to the files of the run folder that exist (report.html sits in it)."""
    files = RunDir(run_dir)

    def link(path: Path, label: str | None = None) -> str:
        href = path.relative_to(files.path).as_posix() + ("/" if path.is_dir() else "")
        return f'<a href="{esc(href)}">{esc(label or href)}</a>'

    items = [link(path) for path in (files.config, files.results, files.metrics, files.embeddings) if path.is_file()]
    checkpoints = files.checkpoint_files()
    if checkpoints:
        items.append(f"{link(files.checkpoints)} ({', '.join(link(c, c.name) for c in checkpoints)})")
    for folder in (files.plots, files.tensorboard, files.wandb):
        if folder.is_dir():
            items.append(link(folder))
    return " · ".join(items)


CHANCE_MARGIN = 2.5  # percentage points: a final accuracy this close to chance (or below it) is called at chance
# ... or this fraction of the way from chance to 100 %, whichever is more: 15.4 % with 10 classes, 53 % for 2
NEAR_CHANCE_FRACTION = 0.06


def near_chance(final: float, chance: float) -> bool:
    """Whether a final accuracy (%) is at, near or below ``chance`` (%): within :data:`CHANCE_MARGIN` points, or
    within :data:`NEAR_CHANCE_FRACTION` of the way from chance to a perfect score."""
    return final <= chance + max(CHANCE_MARGIN, NEAR_CHANCE_FRACTION * (100.0 - chance))


def chance_levels(record: StoredRecord) -> dict[str, float]:
    """The final average accuracy (%) of a uniform guess: 100/C over the C classes seen at the end in class-IL
    (every class; the last row of the matrix scores each task against all of them), and the mean over tasks of
    100/|classes of the task| in task-IL."""
    scenario, levels = record.scenario, {}
    if scenario.num_classes:
        levels["class_il"] = 100.0 / scenario.num_classes
    if scenario.tasks and all(scenario.tasks):
        levels["task_il"] = float(np.mean([100.0 / len(classes) for classes in scenario.tasks]))
    return levels


def _chance_reason(record: StoredRecord, classifier: str, setting: str) -> str:
    """Why a classifier can sit at chance, from what the record knows of it (its kind, the data it was fitted on,
    the prototype alignment the method measured)."""
    if setting == "task_il" and classifier != "nearest_prototype":
        return (
            "In task-IL it only has to tell apart the classes of one task, so at chance there the features, as it "
            "reads them, do not separate even those."
        )
    if classifier == "nearest_prototype":
        text = (
            "It labels an image by the nearest fixed prototype in projection space, so it works only where the "
            "method's loss pulls each class's projections onto its own prototype; when it does not (or the "
            "prototypes only shape the features a probe or head is then trained on), the projections are not "
            "aligned with the prototypes"
        )
        last = next((d for d in reversed(record.diagnostics) if d and d.prototype_alignment is not None), None)
        if last is not None:
            text += (
                f": after the last task the class means sit at a mean cosine of {last.prototype_alignment:.2f} "
                f"to their prototypes (1 would be on them)"
            )
        return text + ". The classifiers fitted on the features (ncm, linear probe) measure the representation itself."
    if classifier == "ncm":
        return (
            "It compares features with class means, and the means of earlier classes are kept from when those "
            "classes were learned: features that drifted since then no longer sit near them."
        )
    fitted = record.classifier_data.get(classifier)
    if fitted:
        return (
            f"It was fitted on {esc(fitted)}: fitted on one task's classes alone, a classifier predicts "
            f"those classes alone."
        )
    return (
        "A classifier trained with the network on the latest task's data predicts the latest classes (recency "
        "bias); replay, a larger buffer or a classifier fitted on stored data counteracts it."
    )


def _concentration(matrix: list) -> str:
    """A sentence on which tasks the last row of a class-IL matrix still scores, when the others are near 0."""
    if not matrix or len(matrix[-1]) < 2:
        return ""
    last = [_number(a) for a in matrix[-1]]
    scored = [j for j, a in enumerate(last) if a is not None and a >= 1.0]
    if not scored or len(scored) > len(last) / 2:
        return ""
    where = ", ".join(f"T{j + 1} ({last[j]:.1f} %)" for j in scored)
    return (
        f" After the last task it scores above 1 % only on {where}: it sends nearly every image to the classes "
        f"of {'that task' if len(scored) == 1 else 'those tasks'}."
    )


def chance_notes(record: StoredRecord) -> list[str]:
    """One paragraph (HTML) per classifier × setting whose final average accuracy is at, near or below chance
    (:func:`near_chance`, :func:`chance_levels`): the numbers, and why it can happen."""
    levels, notes = chance_levels(record), []
    for classifier in sorted(record.metrics, key=lambda c: c != record.headline_classifier):
        for setting, summary in record.metrics[classifier].items():
            final, chance = _number(summary.final_average_accuracy), levels.get(setting)
            if final is None or chance is None or not near_chance(final, chance):
                continue
            guess = (
                f"{record.scenario.num_classes} classes"
                if setting == "class_il"
                else "the classes of each task (task identity given)"
            )
            where = f"{final - chance:+.2f} points" if final >= chance - CHANCE_MARGIN else "below it"
            at = "at" if abs(final - chance) <= CHANCE_MARGIN or final < chance else "near"
            text = (
                f"<code>{esc(classifier)}</code> is {at} chance in {esc(plots.setting_label(setting))}: final average "
                f"accuracy {final:.2f} % against {chance:.2f} % for a uniform guess over {guess} ({where}). "
                + _chance_reason(record, classifier, setting)
            )
            if setting == "class_il":
                text += _concentration(record.accuracy.get(classifier, {}).get(setting) or [])
            notes.append(f'<p class="chance" data-classifier="{esc(classifier)}" data-setting="{setting}">{text}</p>')
    return notes


def _config_block(record: StoredRecord, run_dir: Path) -> str:
    import yaml

    text = None
    if record.config:
        text = yaml.safe_dump(record.config, sort_keys=False)
    elif RunDir(run_dir).config.is_file():
        text = RunDir(run_dir).config.read_text()
    if text is None:
        return ""
    return f"<details><summary>Resolved config (YAML)</summary><pre>{esc(text)}</pre></details>"


def _task_il_note(record: StoredRecord) -> str:
    if any("task_il" in settings for settings in record.metrics.values()):
        return ""
    return (
        f'<p class="note">No task-IL numbers: the {esc(plots.setting_label(record.scenario.kind or "?"))} '
        f"scenario has no task identities to mask with.</p>"
    )


def _classifier_sections(record: StoredRecord, plot_dir: Path, figures: list[Path]) -> str:
    accuracy, metrics, headline = record.accuracy, record.metrics, record.headline_classifier
    parts = []
    for classifier in sorted(accuracy, key=lambda c: c != headline):
        matrices = accuracy[classifier]
        if not matrices:
            continue
        num_tasks = len(next(iter(matrices.values())))
        safe = _slug(classifier)
        title = f"{classifier}{' (headline)' if classifier == headline else ''}"
        section = [
            f"<h3>Classifier <code>{esc(classifier)}</code>{' — headline' if classifier == headline else ''}</h3>"
        ]
        if classifier in record.classifier_data:
            section.append(f'<p class="note">Fitted on {esc(record.classifier_data[classifier])}.</p>')
        heat = plots.accuracy_heatmaps(matrices, plot_dir / f"accuracy_matrix_{safe}.png")
        figures.append(heat)
        section.append(
            figure(
                heat,
                f"accuracy matrix {title}",
                "Accuracy (%) on the test data of task j (column) after training task t (row). "
                "Hatched cells above the diagonal are tasks not trained yet.",
            )
        )
        if num_tasks > 1:
            lines = plots.accuracy_over_time(matrices, plot_dir / f"accuracy_over_time_{safe}.png")
            figures.append(lines)
            section.append(
                figure(
                    lines,
                    f"accuracy over time {title}",
                    "Accuracy of each task from the moment it is learned; the thick black line is "
                    "the mean over the tasks seen so far (its mean is the average incremental "
                    "accuracy).",
                )
            )
            forgetting = {s: m.forgetting for s, m in metrics.get(classifier, {}).items() if m.forgetting}
            if forgetting:
                bars = plots.forgetting_bars(forgetting, plot_dir / f"forgetting_{safe}.png")
                figures.append(bars)
                section.append(
                    figure(
                        bars,
                        f"forgetting {title}",
                        "Forgetting per task: best accuracy at any evaluation after learning it, "
                        "minus the final accuracy (percentage points; the last task cannot be "
                        "forgotten).",
                    )
                )
        else:
            section.append('<p class="note">One task: nothing to forget, no accuracy over time.</p>')
        if classifier == headline or len(accuracy) == 1:
            parts.append("\n".join(section))
        else:  # the other classifiers folded: the headline is what a reader looks at first
            summary = record.summary(classifier, "class_il")
            final = summary.final_average_accuracy if summary is not None else None
            summary = f"Classifier <code>{esc(classifier)}</code>" + (
                f" — class-IL final avg acc {fmt(final)} %" if final is not None else ""
            )
            parts.append(
                f'<details class="classifier"><summary>{summary}</summary>\n' + "\n".join(section[1:]) + "\n</details>"
            )
    return "\n".join(parts)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(text))


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing keys, strings, booleans, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def _mean(values: Any) -> float | None:
    kept = [v for v in (_number(x) for x in (values or [])) if v is not None]
    return float(np.mean(kept)) if kept else None


def _epoch_segments(entries: list) -> list[tuple[int, int, str]]:
    """(first index, last index, "T<task>") of each run of consecutive entries (per-epoch records) of one task."""
    segments: list[list] = []
    for i, e in enumerate(entries):
        if segments and e.task == entries[i - 1].task:
            segments[-1][1] = i
        else:
            segments.append([i, i, f"T{e.task + 1}"])
    return [tuple(s) for s in segments]


def epoch_accuracy(record: StoredRecord) -> tuple[str | None, list[EpochEvaluation], dict[str, list[float | None]]]:
    """Mean accuracy over the tasks seen so far after every epoch (``per_epoch`` of the record), per setting.

    Returns ``(classifier, entries, {setting: [mean or None per entry]})`` for the headline classifier (the first
    classifier recorded when the headline one is absent); ``(None, [], {})`` without per-epoch accuracies.
    """
    entries = list(record.per_epoch)
    recorded = [c for e in entries for c in e.accuracy]
    if not recorded:
        return None, [], {}
    headline = record.headline_classifier
    classifier = headline if headline in recorded else recorded[0]
    settings: list[str] = []
    for e in entries:
        for setting in e.accuracy.get(classifier, {}):
            if setting not in settings:
                settings.append(setting)
    series: dict[str, list[float | None]] = {s: [] for s in settings}
    for e in entries:
        row = e.accuracy.get(classifier, {})
        for setting in settings:
            values = row.get(setting)
            # rows also hold the not-yet-seen tasks (for FWT); the mean is over the seen ones
            series[setting].append(_mean(values[: e.task + 1]) if values is not None else None)
    if not any(v is not None for values in series.values() for v in values):
        return None, [], {}
    return classifier, entries, series


def _epoch_accuracy_part(record: StoredRecord, plot_dir: Path, figures: list[Path], heading: str) -> str:
    classifier, entries, series = epoch_accuracy(record)
    if classifier is None:
        return ""
    parts = [heading]
    path = plots.accuracy_over_epochs(series, plot_dir / "accuracy_over_epochs.png", _epoch_segments(entries))
    if path is not None:
        figures.append(path)
        parts.append(
            figure(
                path,
                "accuracy over epochs",
                f"Accuracy (%) of <code>{esc(classifier)}</code> after every epoch, averaged over the "
                f"tasks seen so far (dashed lines: task boundaries; the last point of a task is the "
                f"mean over seen tasks of that task's row of the accuracy matrix).",
            )
        )
    head = "".join(f"<th>{esc(plots.setting_label(s))}</th>" for s in series)
    rows = []
    for i, e in enumerate(entries):
        label, ep = f"T{e.task + 1}", f"{e.epoch + 1}"
        cells = "".join(number_cell(series[s][i], f"epoch/{label}/E{ep}/{s}") for s in series)
        rows.append(f'<tr><td class="l">{esc(label)}</td><td>{esc(ep)}</td>{cells}</tr>')
    parts.append(
        f"<details><summary>Per-epoch numbers ({esc(classifier)}, mean over seen tasks, %)</summary>"
        f'<table class="epoch-accuracy"><thead><tr><th class="l">task</th><th>epoch</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )
    return "\n".join(parts)


def _nc_section(record: StoredRecord, plot_dir: Path, figures: list[Path]) -> str:
    entries = [None if e is None else e.model_dump(exclude_none=True) for e in record.neural_collapse]
    epoch_records = record.epoch_neural_collapse()
    if not any(entries) and not epoch_records:
        return _epoch_accuracy_part(record, plot_dir, figures, "<h2>Accuracy over epochs</h2>")
    parts = ["<h2>Neural collapse</h2>"]
    if any(entries):
        last = next(e for e in reversed(entries) if e)
        split = last.get("split", "test")
        path = plots.nc_over_tasks(entries, plot_dir / "nc_over_tasks.png")
        if path is not None:
            figures.append(path)
            parts.append(
                figure(
                    path,
                    "neural collapse metrics over tasks",
                    f"NC metrics on {esc(split)}-split encoder features of the classes seen so far, "
                    f"after each task (lower is more collapsed; gaps: fewer than two classes seen).",
                )
            )
        keys = plots._nc_keys([last])
        head = "".join(f'<th title="{esc(plots.NC_LABELS.get(k, k))}">{esc(NC_SHORT.get(k, k))}</th>' for k in keys)
        cells = "".join(number_cell(last.get(k), f"nc/{k}", 4) for k in keys)
        parts.append(
            f'<table><thead><tr><th class="l">after last task</th>{head}</tr></thead>'
            f'<tbody><tr><td class="l">{esc(last.get("classes", "?"))} classes, {esc(split)}</td>{cells}'
            f"</tr></tbody></table>"
        )
    if epoch_records:
        epochs = [e.model_dump(exclude_none=True) for e in epoch_records]
        path = plots.nc_over_tasks(
            epochs,
            plot_dir / "nc_over_epochs.png",
            xlabel="epochs, grouped by task",
            segments=_epoch_segments(epoch_records),
        )
        if path is not None:
            figures.append(path)
            parts.append(
                figure(
                    path,
                    "neural collapse metrics over epochs",
                    "NC metrics during training, per epoch (dashed lines: task boundaries).",
                )
            )
    parts.append(_epoch_accuracy_part(record, plot_dir, figures, "<h3>Accuracy over epochs</h3>"))
    return "\n".join(p for p in parts if p)


def _class_label(names: Any, c: Any) -> str:
    if isinstance(c, int) and isinstance(names, list) and 0 <= c < len(names):
        return str(names[c])
    return str(c)


def _diagnostics_section(record: StoredRecord, plot_dir: Path, figures: list[Path]) -> str:
    """Mean prototype alignment and old-class drift per task (the record's ``diagnostics``); per class for the last."""
    entries = record.diagnostics
    alignment = [_number(e.prototype_alignment) if e else None for e in entries]
    drift = [_number(e.old_mean_drift) if e else None for e in entries]
    has_align = any(v is not None for v in alignment)
    has_drift = any(v is not None for v in drift)
    if not has_align and not has_drift:
        return ""
    names = record.scenario.class_names
    labels = [f"T{t + 1}" for t in range(len(entries))]
    parts = ["<h2>Prototype alignment and drift</h2>"]
    path = plots.alignment_drift_over_tasks(alignment, drift, plot_dir / "alignment_drift.png", labels)
    pictures = []
    if path is not None:
        figures.append(path)
        what = []
        if has_align:
            what.append(
                "alignment: mean over the seen classes of cos(class mean, the class's fixed prototype), "
                "higher is better"
            )
        if has_drift:
            what.append(
                "drift: mean over the earlier tasks' classes of 1 − cos(class mean now, class mean when "
                "it was learned), lower is better; none after the first task"
            )
        pictures.append(
            figure(
                path,
                "prototype alignment and old-class drift over tasks",
                "Projection-space class means (training images) after each task. " + "; ".join(what).capitalize() + ".",
            )
        )
    # per class, for the last task that recorded per-class values
    last_t = next(
        (
            t
            for t in range(len(entries) - 1, -1, -1)
            if entries[t] and (entries[t].prototype_alignment_per_class or entries[t].old_mean_drift_per_class)
        ),
        None,
    )
    if last_t is not None:
        e = entries[last_t]
        panels = []
        for values_key, classes_key, title, ylabel in (
            ("prototype_alignment_per_class", "classes", "alignment per class", "cos(class mean, prototype)"),
            ("old_mean_drift_per_class", "old_classes", "drift per old class", "1 − cos since learned"),
        ):
            values = getattr(e, values_key) or []
            classes = getattr(e, classes_key) or []
            if not values:
                continue
            tick = (
                [_class_label(names, c) for c in classes]
                if len(classes) == len(values)
                else [str(i) for i in range(len(values))]
            )
            panels.append((title, tick, values, ylabel))
        path = plots.per_class_bars(panels, plot_dir / "alignment_drift_per_class.png")
        if path is not None:
            figures.append(path)
            pictures.append(
                figure(
                    path,
                    f"alignment and drift per class after task {last_t + 1}",
                    f"The same per class, after task {last_t + 1}.",
                )
            )
    parts.append('<div class="row">' + "".join(pictures) + "</div>")
    head = '<th class="l">after task</th><th>classes seen</th>'
    if has_align:
        head += '<th title="mean cos(class mean, prototype)">alignment (mean)</th><th>alignment (min)</th>'
    if has_drift:
        head += '<th>old classes</th><th title="mean 1 − cos since learned">drift (mean)</th><th>drift (max)</th>'
    rows = []
    for t, e in enumerate(entries):
        e = e or Diagnostics()
        cells = f'<td class="l">T{t + 1}</td><td>{len(e.classes) if e.classes is not None else "n/a"}</td>'
        if has_align:
            per = [v for v in map(_number, e.prototype_alignment_per_class or []) if v is not None]
            cells += number_cell(alignment[t], f"diagnostics/T{t + 1}/prototype_alignment", 3)
            cells += number_cell(min(per) if per else None, digits=3)
        if has_drift:
            per = [v for v in map(_number, e.old_mean_drift_per_class or []) if v is not None]
            cells += f"<td>{len(e.old_classes) if e.old_classes is not None else '–'}</td>"
            cells += number_cell(drift[t], f"diagnostics/T{t + 1}/old_mean_drift", 3)
            cells += number_cell(max(per) if per else None, digits=3)
        rows.append(f"<tr>{cells}</tr>")
    parts.append(f'<table class="diagnostics"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return "\n".join(parts)


def corruption_table(errors: dict[str, list], severities: list, classifier: str) -> str:
    """Rows = corruptions, columns = severities and the mean; a last row with the mean over corruptions."""
    head = "".join(f"<th>severity {esc(s)}</th>" for s in severities)
    rows = []
    for name, values in errors.items():
        values = list(values or [])
        cells = "".join(
            number_cell(_number(values[i]) if i < len(values) else None, f"corruption/{classifier}/{name}/{s}")
            for i, s in enumerate(severities)
        )
        cells += number_cell(_mean(values), f"corruption/{classifier}/{name}/mean")
        rows.append(f'<tr><td class="l">{esc(name)}</td>{cells}</tr>')
    columns = [_mean([v[i] for v in errors.values() if v and i < len(v)]) for i in range(len(severities))]
    overall = _mean([x for v in errors.values() for x in (v or [])])
    cells = "".join(number_cell(m, f"corruption/{classifier}/all/{s}") for m, s in zip(columns, severities))
    cells += number_cell(overall, f"corruption/{classifier}/all/mean")
    rows.append(f'<tr class="headline"><td class="l">mean over corruptions</td>{cells}</tr>')
    return (
        f'<table class="corruptions"><thead><tr><th class="l">corruption</th>{head}<th>mean</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _corruption_section(record: StoredRecord, plot_dir: Path, figures: list[Path]) -> str:
    """Top-1 error under corruptions (the record's ``corruptions``) of the headline classifier, table and plot."""
    corruptions = {c: errors for c, errors in (record.corruptions or {}).items() if errors}
    if not corruptions:
        return ""
    headline = record.headline_classifier
    classifier = headline if headline in corruptions else next(iter(corruptions))
    errors = corruptions[classifier]
    count = max(len(v) for v in errors.values())
    severities = ((record.config or {}).get("eval") or {}).get("corruption_severities")
    if not isinstance(severities, list) or len(severities) != count:
        severities = list(range(1, count + 1))
    parts = ["<h2>Robustness to corruptions</h2>"]
    if classifier != headline:
        parts.append(
            f'<p class="note">No corruption numbers for the headline classifier; showing '
            f"<code>{esc(classifier)}</code>.</p>"
        )
    order = sorted(corruptions, key=lambda c: c != classifier)
    by_classifier = {}
    for c in order:
        means = [_mean([v[i] for v in corruptions[c].values() if i < len(v)]) for i in range(count)]
        overall = _mean([x for v in corruptions[c].values() for x in v])
        by_classifier[f"{c} (mean {fmt(overall, 1)})"] = [np.nan if m is None else m for m in means]
    path = plots.corruption_errors(
        errors, severities, plot_dir / "corruption_errors.png", by_classifier, title=f"{classifier}, per corruption"
    )
    figures.append(path)
    others = (
        " Right: the mean over corruptions of every classifier (thick black: the one on the left)."
        if len(by_classifier) > 1
        else ""
    )
    picture = figure(
        path,
        "error under corruptions vs severity",
        f"Top-1 error (%) after the last task on corrupted test images of the seen tasks, per "
        f"corruption and severity (lower is better).{others}",
    )
    table = corruption_table(errors, severities, classifier)
    parts.append(f"<h3>Classifier <code>{esc(classifier)}</code>: top-1 error (%)</h3>{table}{picture}")
    return "\n".join(parts)


def _embedding_section(record: StoredRecord, run_dir: Path, plot_dir: Path, figures: list[Path]) -> str:
    data = load_embeddings(run_dir)
    if data is None:
        return ""
    names = record.scenario.class_names
    parts = ["<h2>Embeddings on the sphere</h2>", '<div class="row">']
    sphere = plots.embedding_sphere(
        data["features"],
        data["labels"],
        plot_dir / "embedding_sphere.png",
        prototypes=data.get("prototypes"),
        class_names=names,
    )
    figures.append(sphere)
    stars = (
        " Stars: the prototypes of the classes shown, projected the same way."
        if data.get("prototypes") is not None
        else ""
    )
    parts.append(
        figure(
            sphere,
            "embeddings on the sphere",
            f"{len(data['labels'])} test embeddings, L2-normalised, projected on their top-3 principal "
            f"directions and put back on the unit sphere; colour = class.{stars}",
        )
    )
    if data.get("cosine") is not None and np.asarray(data["cosine"]).size:
        classes = np.asarray(data.get("classes", np.arange(len(data["cosine"])))).astype(int)
        label = [names[c] if names and c < len(names) else str(c) for c in classes]
        cos = plots.cosine_matrix(np.asarray(data["cosine"]), plot_dir / "prototype_cosine.png", label, label)
        figures.append(cos)
        diag = np.diag(np.asarray(data["cosine"], dtype=float))
        parts.append(
            figure(
                cos,
                "cosine of class means and prototypes",
                f"cos(class mean of class a, prototype of class b); the diagonal is the alignment of "
                f"each class with its own prototype (mean {diag.mean():.3f}, min {diag.min():.3f}).",
            )
        )
    parts.append("</div>")
    return "\n".join(parts)


def _timings_section(record: StoredRecord, plot_dir: Path, figures: list[Path]) -> str:
    tasks, total = record.timings.tasks, record.timings.total_s
    if not tasks and total is None:
        return ""
    parts = ["<h2>Timings</h2>"]
    if tasks:
        path = plots.timings(tasks, plot_dir / "timings.png")
        figures.append(path)
        rows = "".join(
            f'<tr><td class="l">T{(i if t.task is None else t.task) + 1}</td>'
            + number_cell(t.train_s, digits=2)
            + number_cell(t.eval_s, digits=2)
            + (f"<td>{t.images:,}</td>" if t.images is not None else '<td class="na">n/a</td>')
            + number_cell(t.img_per_s, digits=0)
            + "</tr>"
            for i, t in enumerate(tasks)
        )
        train = sum(t.train_s or 0.0 for t in tasks)
        evals = sum(t.eval_s or 0.0 for t in tasks)
        images = sum(t.images or 0 for t in tasks)
        rows += (
            f'<tr class="headline"><td class="l">all</td>{number_cell(train)}{number_cell(evals)}'
            f"<td>{images:,}</td>{number_cell(images / train if train > 0 else None, digits=0)}</tr>"
        )
        table = (
            '<table><thead><tr><th class="l">task</th><th>train (s)</th><th>eval (s)</th><th>images</th>'
            f"<th>img/s</th></tr></thead><tbody>{rows}</tbody></table>"
        )
        picture = figure(path, "timings per task", "Seconds per task (train + evaluation) and training throughput.")
        parts.append(f'<div class="row">{picture}<div>{table}</div></div>')
    env = record.environment
    facts = [
        ("total wall time", f"{total:.1f} s" if total is not None else None),
        ("device", env.device),
        ("GPU", env.gpu),
        ("CPU", env.cpu),
        ("torch threads", env.torch_threads),
        ("torch", env.torch),
        ("lightning-fabric", env.lightning_fabric),
        ("python", env.python),
        ("platform", env.platform),
    ]
    parts.append(
        '<div class="meta">'
        + "".join(f"<span>{esc(k)} <b>{esc(v)}</b></span>" for k, v in facts if v is not None)
        + "</div>"
    )
    return "\n".join(parts)


def _training_section(run_dir: Path, plot_dir: Path, figures: list[Path]) -> str:
    """Loss (and its terms) and learning rate over the whole run, from metrics.csv."""
    from . import curves

    series = curves.read_training_rows(RunDir(run_dir).metrics)
    path = curves.training_curves(series, plot_dir / "training_curves.png") if series else None
    if path is None:
        return ""
    figures.append(path)
    return "<h2>Training curves</h2>" + figure(
        path,
        "training loss and learning rate",
        "Training loss (thick; thin lines: its terms) and learning rate against the global step, "
        "logged every <code>train.log_every_n_steps</code> steps and at the end of each task "
        "(dashed lines: a new task starts). Source: <code>metrics.csv</code>.",
    )


def _per_class_section(record: StoredRecord, plot_dir: Path, figures: list[Path]) -> str:
    """Per-class accuracy after the last task and, up to 30 classes, the confusion matrix (the record's
    ``confusion``)."""
    from . import curves

    confusion = record.confusion
    if confusion is None or not confusion.classes:
        return ""
    names = record.scenario.class_names
    classes = confusion.classes
    labels = [_class_label(names, c) for c in classes]
    per_class = curves.per_class_accuracy(confusion)
    classifier = confusion.classifier or "?"
    parts = ["<h2>Per-class accuracy after the last task</h2>"]
    pictures = []
    values = [a if a is not None else float("nan") for _, a, _ in per_class]
    bars = plots.per_class_bars(
        [("accuracy per class", labels, values, "accuracy (%)")], plot_dir / "per_class_accuracy.png"
    )
    if bars is not None:
        figures.append(bars)
        pictures.append(
            figure(
                bars,
                "per-class accuracy after the last task",
                f"Accuracy (%) of <code>{esc(classifier)}</code> per class on the test data of the "
                f"seen tasks after the last task (dashed: the mean over classes).",
            )
        )
    if len(classes) <= 30:
        path = curves.confusion_matrix(
            confusion.matrix, labels, plot_dir / "confusion_matrix.png", f"confusion matrix, {classifier}"
        )
        figures.append(path)
        pictures.append(
            figure(
                path,
                "confusion matrix after the last task",
                "Share (%) of each true class (row) predicted as each class (column).",
            )
        )
    parts.append('<div class="row">' + "".join(pictures) + "</div>")
    rows = "".join(
        f'<tr><td class="l">{esc(label)}</td><td>{c}</td><td>{n:,}</td>{number_cell(a, f"per_class/{c}")}</tr>'
        for label, (c, a, n) in zip(labels, per_class)
    )
    parts.append(
        f"<details><summary>Per-class numbers ({esc(classifier)})</summary>"
        f'<table class="per-class"><thead><tr><th class="l">class</th><th>id</th><th>test images</th>'
        f"<th>accuracy (%)</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )
    return "\n".join(parts)


def _with_contents(body: str) -> str:
    """Put an anchor before every <h2> and a table of contents linking to them after the header."""
    import re

    entries = []

    def anchor(match) -> str:
        title = match.group(1)
        ident = "s-" + _slug(re.sub(r"<[^>]+>", "", title).strip().lower().replace(" ", "-"))
        entries.append((ident, title))
        return f'<a class="anchor" id="{ident}"></a><h2>{title}</h2>'

    body = re.sub(r"<h2>(.*?)</h2>", anchor, body)
    if not entries:
        return body
    links = "".join(f'<li><a href="#{ident}">{title}</a></li>' for ident, title in entries)
    toc = f'<nav class="toc" aria-label="contents"><b>Contents</b><ol>{links}</ol></nav>'
    return body.replace("</header>", "</header>\n" + toc, 1) if "</header>" in body else toc + body


def render_report(run_dir: str | Path, results: StoredRecord | RunRecord | dict) -> str:
    """Write ``plots/*.png`` for ``results`` (a record, or results.json's data) and return the report's HTML text."""
    record = StoredRecord.from_data(results, source=f"the results of {run_dir}")
    run_dir = Path(run_dir)
    plot_dir = RunDir(run_dir).plots
    clear_pngs(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    name = record.name or run_dir.name
    body = [f"<header><h1>{esc(name)}</h1>{_meta(record)}{_provenance(record, run_dir)}</header>"]
    if record.status not in (None, "complete"):
        body.append(
            f'<p class="warn">This run is not complete (status: {esc(record.status)}); the numbers '
            f"cover the tasks finished so far.</p>"
        )
    body.append(_cards(record))
    body.append(_config_block(record, run_dir))
    body.append("<h2>Headline numbers</h2>")
    body.append(headline_table(record))
    body.append(
        '<p class="note">Accuracies in %, forgetting/BWT/FWT in percentage points; ★ = headline classifier. '
        "n/a: the metric needs a second task (forgetting, BWT, FWT) or a random-init baseline (FWT); FWT is "
        "not defined in class-IL (a task's classes cannot be predicted before they are learned).</p>"
    )
    body.append(_task_il_note(record))
    body.extend(chance_notes(record))
    body.append("<h2>Accuracy</h2>")
    body.append(_classifier_sections(record, plot_dir, figures))
    body.append(_per_class_section(record, plot_dir, figures))
    body.append(_training_section(run_dir, plot_dir, figures))
    body.append(_nc_section(record, plot_dir, figures))
    body.append(_diagnostics_section(record, plot_dir, figures))
    body.append(_corruption_section(record, plot_dir, figures))
    body.append(_embedding_section(record, run_dir, plot_dir, figures))
    body.append(_timings_section(record, plot_dir, figures))
    return page(
        f"protosphere report — {name}",
        _with_contents("\n".join(p for p in body if p)),
        footer=f"Source: <code>{esc(RunDir(run_dir).results)}</code>; plots in <code>{esc(plot_dir)}</code>.",
    )


def write_report(run_dir: str | Path, results: StoredRecord | RunRecord | dict | None = None) -> Path:
    """Render ``run_dir/report.html`` (and ``run_dir/plots/*.png``) from ``results`` (a record, or results.json's
    data) or else ``run_dir/results.json``."""
    files = RunDir(run_dir)
    record = files.read_results() if results is None else results
    return atomic_write(files.report, render_report(files.path, record))


def try_write_report(
    run_dir: str | Path, results: StoredRecord | RunRecord | dict | None = None, console=None
) -> Path | None:
    """:func:`write_report` that never raises: a failure becomes a warning (results.json is already safe)."""
    try:
        return write_report(run_dir, results)
    except Exception as exc:  # noqa: BLE001 - a plotting bug must not fail a finished run
        files = RunDir(run_dir)
        message = (
            f"could not write {files.report} ({type(exc).__name__}: {exc}); {files.RESULTS} is intact — "
            f"retry with `protosphere report {run_dir}`."
        )
        if console is not None:
            console.print(f"[yellow]warning:[/] {message}")
        else:
            warnings.warn(message, stacklevel=2)
        return None
