"""Matplotlib figures of a run (and of a comparison), written as PNG files and, beside each, the same figure as a
vector PDF (for papers: ``\\includegraphics{plots/accuracy_matrix_ncm.pdf}``).

Every function takes plain Python / NumPy data or parts of the run record (what ``results.json`` and
``embeddings.npz`` hold), draws one figure
with the object-oriented API on an Agg canvas (pyplot's global state and the user's backend are never touched) and
saves it to ``path`` (the PNG; the PDF is ``path`` with the suffix ``.pdf``). Nothing here reads files or knows the
HTML layout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from ..runs.record import TaskTiming

DPI = 110
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]
SETTING_LABELS = {"class_il": "class-IL", "task_il": "task-IL"}
NC_LABELS = {
    "nc1": "NC1  Tr(Σ_W Σ_B⁺)/C",
    "equinorm": "equinorm  (std/mean ‖μ_c−μ_G‖)",
    "equiangularity": "equiangularity  (std cos)",
    "max_angle": "max-angle  |cos + 1/(C−1)|",
    "nc3": "NC3  ‖W − M‖²  (self-duality)",
    "nc4": "NC4  1 − agreement with NCC",
    "within_class_effective_rank": "effective rank, within class",
    "between_class_effective_rank": "effective rank, between class",
}
NC_ORDER = list(NC_LABELS)


def setting_label(setting: str) -> str:
    return SETTING_LABELS.get(setting, setting.replace("_", "-"))


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9)


def vector_path(path: Path) -> Path:
    """The vector (PDF) twin of a figure's PNG."""
    return Path(path).with_suffix(".pdf")


def _save(fig: Figure, path: Path) -> Path:
    """``path`` (PNG) and its PDF twin (:func:`vector_path`), with no time stamp or version in either file, so the
    same record renders the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    common = {"facecolor": "white", "bbox_inches": "tight", "pad_inches": 0.12}
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None}, **common)
    fig.savefig(
        vector_path(path), format="pdf", metadata={"Creator": None, "Producer": None, "CreationDate": None}, **common
    )
    return path


def _task_ticks(ax, count: int, axis: str = "x", prefix: str = "T") -> None:
    step = max(1, math.ceil(count / 20))
    ticks = list(range(0, count, step))
    labels = [f"{prefix}{i + 1}" for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks, labels)
    else:
        ax.set_yticks(ticks, labels)


def class_ticks(ax, labels: Sequence[str], axis: str, inches_per_tick: float, fontsize: float = 8) -> None:
    """Class-name ticks that never overlap: every k-th label when they are denser than the text allows, and x labels
    slanted when the longest one is wider than the room a tick has."""
    n = len(labels)
    height = fontsize * 1.25 / 72  # inches a line of text needs
    longest = max((len(str(s)) for s in labels), default=0) * fontsize * 0.62 / 72  # ≈ 0.62 em per glyph
    slant = axis == "x" and longest > 0.92 * inches_per_tick
    room = height / math.sin(math.radians(40)) if slant else (height if axis == "y" else longest + 0.06)
    step = max(1, math.ceil(room / max(inches_per_tick, 1e-6)))
    positions = list(range(0, n, step))
    shown = [str(labels[i]) for i in positions]
    if axis == "x":
        if slant:
            ax.set_xticks(positions, shown, rotation=40, ha="right", rotation_mode="anchor", fontsize=fontsize)
        else:
            ax.set_xticks(positions, shown, fontsize=fontsize)
    else:
        ax.set_yticks(positions, shown, fontsize=fontsize)


# ---------------------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------------------
def accuracy_heatmaps(matrices: dict[str, Sequence[Sequence[float]]], path: Path, title: str = "") -> Path:
    """One annotated heatmap per setting: cell (t, j) = accuracy (%) on task j after training task t."""
    settings = list(matrices)
    size = len(next(iter(matrices.values())))
    cell = 0.55 if size <= 10 else max(0.18, 5.5 / size)
    side = max(3.4, min(7.5, 1.4 + cell * size))
    fig = _figure(side * len(settings) + 0.9, side)
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    image = None
    for ax, setting in zip(axes, settings):
        m = np.asarray(matrices[setting], dtype=float)
        t = m.shape[0]
        image = ax.imshow(m, cmap="viridis", vmin=0, vmax=100, aspect="equal")
        # tasks not trained yet (j > t) are shown but hatched: they are not part of any metric except FWT
        for i in range(t):
            for j in range(i + 1, t):
                ax.add_patch(_hatch(i, j))
        if t <= 12:
            for i in range(t):
                for j in range(t):
                    value = m[i, j]
                    ax.text(
                        j,
                        i,
                        f"{value:.1f}" if value < 99.95 else "100",
                        ha="center",
                        va="center",
                        fontsize=8 if t <= 8 else 6.5,
                        color="white" if value < 60 else "black",
                        alpha=1.0 if j <= i else 0.65,
                    )
        _task_ticks(ax, t, "x")
        _task_ticks(ax, t, "y")
        ax.set_xlabel("evaluated on task j", fontsize=9)
        ax.set_ylabel("after training task t", fontsize=9)
        ax.set_title(setting_label(setting), fontsize=10)
        ax.tick_params(labelsize=8, length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), shrink=0.85, pad=0.02)
        bar.set_label("accuracy (%)", fontsize=9)
        bar.ax.tick_params(labelsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _hatch(i: int, j: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor=(1, 1, 1, 0.35), linewidth=0)


def accuracy_over_time(matrices: dict[str, Sequence[Sequence[float]]], path: Path, title: str = "") -> Path:
    """Accuracy of each task j after every task t ≥ j (thin lines), and the mean over seen tasks (thick)."""
    settings = list(matrices)
    fig = _figure(5.2 * len(settings), 3.6)
    axes = fig.subplots(1, len(settings), squeeze=False, sharey=True)[0]
    for ax, setting in zip(axes, settings):
        m = np.asarray(matrices[setting], dtype=float)
        t = m.shape[0]
        x = np.arange(t)
        many = t > 10
        for j in range(t):
            xs = x[j:]
            ax.plot(
                xs,
                m[j:, j],
                marker="o" if not many else None,
                markersize=3.5,
                linewidth=1.2,
                color=color(j) if not many else _cmap_color(j, t),
                alpha=0.9,
                label=f"task {j + 1}" if not many else None,
            )
        seen = [m[i, : i + 1].mean() for i in range(t)]
        ax.plot(x, seen, color="black", linewidth=2.4, marker="s", markersize=4, label="mean over seen tasks")
        _task_ticks(ax, t, "x")
        ax.set_xlim(-0.3, t - 0.7 if t > 1 else 0.3)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("after training task", fontsize=9)
        ax.set_title(setting_label(setting), fontsize=10)
        _style(ax)
    axes[0].set_ylabel("accuracy (%)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _cmap_color(j: int, t: int):
    from matplotlib import colormaps

    return colormaps["viridis"](j / max(1, t - 1))


def forgetting_bars(forgetting: dict[str, Sequence[float]], path: Path, title: str = "") -> Path:
    """Grouped bars: forgetting (max earlier − final accuracy, percentage points) of each task but the last."""
    settings = list(forgetting)
    n = max(len(v) for v in forgetting.values())
    fig = _figure(max(4.5, min(11.0, 2.2 + 0.55 * n * len(settings))), 3.2)
    ax = fig.subplots()
    width = 0.8 / len(settings)
    x = np.arange(n)
    for k, setting in enumerate(settings):
        values = np.asarray(forgetting[setting], dtype=float)
        bars = ax.bar(
            x[: len(values)] + (k - (len(settings) - 1) / 2) * width,
            values,
            width * 0.92,
            color=color(k),
            label=f"{setting_label(setting)} (mean {values.mean():.1f})",
        )
        if n <= 12:
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1.5)
    ax.axhline(0, color="#555555", linewidth=0.8)
    _task_ticks(ax, n, "x")
    ax.set_xlabel("task", fontsize=9)
    ax.set_ylabel("forgetting (pp)", fontsize=9)
    fig.legend(
        *ax.get_legend_handles_labels(), fontsize=8, frameon=False, loc="outside upper center", ncol=len(settings)
    )  # above the axes: never over a bar or its value
    ax.margins(y=0.15)
    _style(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _nc_keys(entries: Sequence[dict | None]) -> list[str]:
    present = {k for e in entries if e for k, v in e.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    present -= {"classes", "task", "epoch", "step"}
    return [k for k in NC_ORDER if k in present] + sorted(present - set(NC_ORDER))


def nc_over_tasks(
    entries: Sequence[dict | None],
    path: Path,
    xlabel: str = "after training task",
    segments: Sequence[tuple[int, int, str]] | None = None,
) -> Path | None:
    """Small multiples, one panel per NC metric; ``None`` entries (fewer than two classes seen) are gaps.

    ``segments`` — (first index, last index, label) of consecutive entries that belong together (the epochs of one
    task): they are labelled once on the x axis and separated by dashed lines.
    """
    keys = _nc_keys(entries)
    if not keys:
        return None
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = _figure(3.1 * cols, 2.45 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    x = np.arange(len(entries))
    for ax, key in zip(axes, keys):
        y = np.array([float(e[key]) if e and isinstance(e.get(key), (int, float)) else np.nan for e in entries])
        ax.plot(x, y, marker="o", markersize=3.5 if len(x) <= 40 else 0, linewidth=1.6, color=color(0))
        finite = y[np.isfinite(y)]
        if key == "nc1" and finite.size and finite.min() > 0 and finite.max() / finite.min() > 30:
            ax.set_yscale("log")
        ax.set_title(NC_LABELS.get(key, key), fontsize=9)
        _segment_axis(ax, len(x), segments)
        _style(ax)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    fig.supxlabel(xlabel, fontsize=9)
    return _save(fig, path)


def pca_sphere(features: np.ndarray, prototypes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit-normalised features projected on their top-3 principal directions and put back on the unit sphere.

    The principal directions come from the uncentred second-moment matrix of the normalised features, so the origin
    stays the centre of the sphere; prototypes (normalised) use the same projection.
    """
    z = np.asarray(features, dtype=np.float64)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    if z.shape[1] < 3:
        z = np.pad(z, ((0, 0), (0, 3 - z.shape[1])))
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    basis = vt[:3].T
    if basis.shape[1] < 3:
        basis = np.pad(basis, ((0, 0), (0, 3 - basis.shape[1])))

    def project(rows):
        p = rows @ basis
        return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)

    protos = None
    if prototypes is not None and len(prototypes):
        w = np.asarray(prototypes, dtype=np.float64)
        if w.shape[1] < 3:
            w = np.pad(w, ((0, 0), (0, 3 - w.shape[1])))
        if w.shape[1] == basis.shape[0]:
            w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
            protos = project(w)
    return project(z), protos


def embedding_sphere(
    features: np.ndarray,
    labels: np.ndarray,
    path: Path,
    prototypes: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """3-D picture of the normalised features on the sphere (PCA), coloured by class; prototypes as stars."""
    labels = np.asarray(labels).astype(int)
    classes = np.unique(labels)
    proto_rows = None
    if prototypes is not None:
        prototypes = np.asarray(prototypes)
        # prototypes cover the whole label space (row = class index); draw those of the classes shown
        proto_rows = classes[classes < len(prototypes)]
        prototypes = prototypes[proto_rows] if len(proto_rows) else None
    points, protos = pca_sphere(features, prototypes)
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot(projection="3d")
    ax.set_axis_off()
    u, v = np.mgrid[0 : 2 * np.pi : 25j, 0 : np.pi : 13j]
    ax.plot_wireframe(
        np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="#c8c8c8", linewidth=0.4, alpha=0.7
    )
    for axis in range(3):  # the three principal axes through the centre
        ends = np.zeros((2, 3))
        ends[:, axis] = (-1.15, 1.15)
        ax.plot(*ends.T, color="#9a9a9a", linewidth=0.7)
        ax.text(*(ends[1] * 1.04), f"PC{axis + 1}", fontsize=7.5, color="#555555")
    many = len(classes) > 10

    def class_color(index):
        return _cmap_color(index, len(classes)) if many else color(index)

    from matplotlib.lines import Line2D

    handles = []
    for i, c in enumerate(classes):
        rows = labels == c
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ax.scatter(
            points[rows, 0],
            points[rows, 1],
            points[rows, 2],
            s=9,
            alpha=0.6,
            color=class_color(i),
            depthshade=False,
            linewidths=0,
        )
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=5, color=class_color(i), label=name))
    if protos is not None:
        index = {c: i for i, c in enumerate(classes)}
        ax.scatter(
            protos[:, 0],
            protos[:, 1],
            protos[:, 2],
            marker="*",
            s=240,
            c=[class_color(index[c]) for c in proto_rows],
            edgecolors="black",
            linewidths=0.9,
            depthshade=False,
            zorder=10,
        )
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="*",
                markersize=11,
                markerfacecolor="white",
                markeredgecolor="black",
                label="prototype",
            )
        )
    ax.set_box_aspect((1, 1, 1), zoom=1.25)
    lim = 1.0
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_zlim(-lim, lim)
    ax.view_init(elev=22, azim=35)
    if len(classes) <= 20:
        fig.legend(
            handles=handles, loc="outside right center", fontsize=8, frameon=False, title="class", title_fontsize=8.5
        )
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def cosine_matrix(
    cosine: np.ndarray,
    path: Path,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "cos(class mean, prototype)",
) -> Path:
    """Annotated heatmap of cosines in [−1, 1] (diverging colours, 0 = white)."""
    m = np.asarray(cosine, dtype=float)
    r, c = m.shape
    cell = 0.34 if max(r, c) <= 12 else max(0.1, 4.0 / max(r, c))
    fig = _figure(max(3.8, 1.6 + cell * c), max(3.2, 1.0 + cell * r))
    ax = fig.subplots()
    image = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, aspect="equal")
    if max(r, c) <= 12:
        for i in range(r):
            for j in range(c):
                ax.text(
                    j,
                    i,
                    f"{m[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=5.8 if c > 8 else 7.5,
                    color="white" if abs(m[i, j]) > 0.6 else "black",
                )
    label_heatmap(fig, ax, image, row_labels, col_labels, cell, ("class mean", "prototype"), title)
    return _save(fig, path)


def label_heatmap(
    fig,
    ax,
    image,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    cell: float,
    axis_labels: tuple[str, str],
    title: str,
    bar_label: str | None = None,
) -> None:
    """Class names on both axes (never overlapping), axis labels (rows, columns), no frame, a colour bar, a title."""
    class_ticks(ax, list(row_labels), "y", cell)
    class_ticks(ax, list(col_labels), "x", cell)
    ax.set_ylabel(axis_labels[0], fontsize=9)
    ax.set_xlabel(axis_labels[1], fontsize=9)
    ax.tick_params(labelsize=8, length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    if bar_label:
        bar.set_label(bar_label, fontsize=8)
    bar.ax.tick_params(labelsize=8)
    ax.set_title(title, fontsize=10)


def timings(tasks: Sequence[TaskTiming], path: Path) -> Path:
    """Stacked train/eval seconds per task, with training throughput (img/s) on a second axis."""
    fig = _figure(max(5.0, min(11.0, 3.0 + 0.45 * len(tasks))), 3.2)
    ax = fig.subplots()
    x = np.arange(len(tasks))
    train = np.array([t.train_s or 0.0 for t in tasks])
    evals = np.array([t.eval_s or 0.0 for t in tasks])
    ax.bar(x, train, 0.6, color=color(0), label="train (s)")
    ax.bar(x, evals, 0.6, bottom=train, color=color(1), label="evaluation (s)")
    ax.set_ylabel("seconds", fontsize=9)
    _task_ticks(ax, len(tasks), "x")
    ax.set_xlabel("task", fontsize=9)
    _style(ax)
    handles, labels = ax.get_legend_handles_labels()
    speed = [t.img_per_s for t in tasks]
    if any(s is not None for s in speed):
        twin = ax.twinx()
        twin.plot(
            x,
            [np.nan if s is None else s for s in speed],
            color="black",
            marker="o",
            markersize=4,
            linewidth=1.5,
            label="train img/s",
        )
        twin.set_ylabel("images / s", fontsize=9)
        twin.set_ylim(bottom=0)
        twin.tick_params(labelsize=9)
        twin.spines["top"].set_visible(False)
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    return _save(fig, path)


def _segment_axis(ax, count: int, segments: Sequence[tuple[int, int, str]] | None) -> None:
    """x ticks of ``count`` consecutive points: one label per segment (dashed lines between them) or T1..Tn."""
    for first, _, _ in (segments or [])[1:]:
        ax.axvline(first - 0.5, color="#bbbbbb", linewidth=0.8, linestyle="--")
    if segments:
        step = max(1, math.ceil(len(segments) / 10))
        shown = segments[::step]
        ax.set_xticks([(a + b) / 2 for a, b, _ in shown], [label for _, _, label in shown])
        ax.tick_params(axis="x", length=0)
    else:
        _task_ticks(ax, count, "x")
    ax.set_xlim(-0.4, count - 0.6)


def _values(seq: Sequence) -> np.ndarray:
    return np.array([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in seq])


def alignment_drift_over_tasks(
    alignment: Sequence[float | None], drift: Sequence[float | None], path: Path, labels: Sequence[str] | None = None
) -> Path | None:
    """Two panels over tasks: mean cos(class mean, own prototype) and mean old-class drift 1 − cos; None = gap."""
    panels = [
        (values, title, ylabel, c)
        for values, title, ylabel, c in (
            (_values(alignment), "prototype alignment (higher is better)", "mean cos(class mean, prototype)", color(0)),
            (_values(drift), "old-class mean drift (lower is better)", "mean 1 − cos since learned", color(3)),
        )
        if np.isfinite(values).any()
    ]
    if not panels:
        return None
    fig = _figure(4.0 * len(panels), 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (values, title, ylabel, c) in zip(axes, panels):
        x = np.arange(len(values))
        ax.plot(x, values, marker="o", markersize=4.5, linewidth=1.8, color=c)
        if len(x) <= 12:
            for xi, yi in zip(x, values):
                if np.isfinite(yi):
                    ax.annotate(
                        f"{yi:.3f}", (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7.5
                    )
        if labels is not None:
            step = max(1, math.ceil(len(x) / 20))
            ax.set_xticks(x[::step], [labels[i] for i in x[::step]])
        else:
            _task_ticks(ax, len(x), "x")
        ax.set_xlim(-0.4, len(x) - 0.6)
        ax.margins(y=0.2)
        ax.set_title(title, fontsize=9.5)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel("after training task", fontsize=9)
        _style(ax)
    return _save(fig, path)


def per_class_bars(
    panels: Sequence[tuple[str, Sequence[str], Sequence[float], str]], path: Path, title: str = ""
) -> Path | None:
    """One bar panel per ``(title, class labels, values, y label)``; the mean is drawn as a dashed line."""
    panels = [p for p in panels if len(p[2])]
    if not panels:
        return None
    longest = max(len(p[2]) for p in panels)
    width = max(3.6, min(8.0, 1.4 + 0.32 * longest))
    fig = _figure(width * len(panels), 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for k, (ax, (name, labels, values, ylabel)) in enumerate(zip(axes, panels)):
        values = _values(values)
        x = np.arange(len(values))
        bars = ax.bar(x, np.nan_to_num(values), 0.72, color=color(0 if k == 0 else 3))
        if len(values) <= 20:
            ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "" for v in values], fontsize=6.5, padding=1.5)
        finite = values[np.isfinite(values)]
        if finite.size:
            ax.axhline(finite.mean(), color="black", linewidth=1.0, linestyle="--")
            name = f"{name} (dashed: mean {finite.mean():.3f})"
        ax.axhline(0, color="#555555", linewidth=0.8)
        class_ticks(ax, list(labels), "x", (width - 1.4) / max(1, len(x)), fontsize=9)
        ax.set_xlabel("class", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_title(name, fontsize=9.5)
        ax.margins(y=0.15)
        _style(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def corruption_errors(
    errors: dict[str, Sequence[float]],
    severities: Sequence,
    path: Path,
    by_classifier: dict[str, Sequence[float]] | None = None,
    title: str = "",
) -> Path:
    """Error (%) vs severity, one line per corruption; optionally a second panel with the mean over corruptions of
    each classifier (``by_classifier``: {classifier: [mean error per severity]})."""
    panels = 2 if by_classifier and len(by_classifier) > 1 else 1
    fig = _figure(4.8 * panels + 1.4, 3.4)
    axes = fig.subplots(1, panels, squeeze=False, sharey=True)[0]
    x = np.arange(len(severities))
    many = len(errors) > 10

    def draw(ax, series, heading, offset=0, bold=None):
        for i, (name, values) in enumerate(series.items()):
            shade = "black" if name == bold else _cmap_color(i, len(series)) if many else color(i + offset)
            ax.plot(
                x[: len(values)],
                _values(values),
                marker="o" if offset == 0 else "s",
                markersize=3.5,
                linewidth=2.4 if name == bold else 1.4,
                color=shade,
                label=name,
            )
        ax.set_xticks(x, [str(s) for s in severities])
        ax.set_xlim(-0.3, len(x) - 0.7 if len(x) > 1 else 0.3)
        ax.set_xlabel("severity", fontsize=9)
        ax.set_title(heading, fontsize=9.5)
        _style(ax)
        ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    draw(axes[0], errors, title or "per corruption")
    if panels == 2:
        draw(
            axes[1],
            by_classifier,
            "mean over corruptions, per classifier",
            offset=len(errors) % len(PALETTE),
            bold=next(iter(by_classifier)),
        )
    axes[0].set_ylabel("top-1 error (%)", fontsize=9)
    axes[0].set_ylim(-2, 102)
    return _save(fig, path)


def accuracy_over_epochs(
    series: dict[str, Sequence[float | None]],
    path: Path,
    segments: Sequence[tuple[int, int, str]] | None = None,
    xlabel: str = "epochs, grouped by task",
    title: str = "",
) -> Path | None:
    """Accuracy (%) after every epoch, one line per setting (e.g. class-IL / task-IL mean over seen tasks)."""
    series = {k: _values(v) for k, v in series.items()}
    series = {k: v for k, v in series.items() if np.isfinite(v).any()}
    if not series:
        return None
    count = max(len(v) for v in series.values())
    fig = _figure(max(5.0, min(11.0, 3.2 + 0.18 * count)), 3.2)
    ax = fig.subplots()
    for i, (name, values) in enumerate(series.items()):
        ax.plot(
            np.arange(len(values)),
            values,
            marker="o",
            markersize=3.5 if count <= 60 else 0,
            linewidth=1.7,
            color=color(i),
            label=setting_label(name),
        )
    _segment_axis(ax, count, segments)
    ax.set_ylim(-2, 102)
    ax.set_ylabel("mean accuracy on seen tasks (%)", fontsize=9)
    ax.set_xlabel(xlabel, fontsize=9)
    fig.legend(
        *ax.get_legend_handles_labels(), fontsize=8, frameon=False, loc="outside upper center", ncol=len(series)
    )  # above the axes: never over a point
    if title:
        ax.set_title(title, fontsize=10)
    _style(ax)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------------------------
def _seed_offsets(count: int, width: float) -> np.ndarray:
    """Horizontal offsets of ``count`` per-seed points inside a bar (spread, never past its edges)."""
    if count <= 1:
        return np.zeros(max(count, 0))
    return np.linspace(-0.28, 0.28, count) * width


def compare_bars(
    names: Sequence[str],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    ylabel: str = "final average accuracy (%)",
    colors: Sequence[str] | None = None,
    seeds: dict[str, Sequence[Sequence[float | None]]] | None = None,
) -> Path:
    """Grouped bars with ±std error bars: one group per config, one bar per series (e.g. class-IL / task-IL).

    A config keeps its colour (``colors[i]``, default :func:`color`) in every bar of its group; the series differ
    by hatching (the first is plain). ``seeds[series][i]``: the per-seed values of config ``i``, drawn as dots on its
    bar (None: a failed run, left out)."""
    n, k = len(names), len(series)
    colors = list(colors) if colors is not None else [color(i) for i in range(n)]
    fig = _figure(max(5.0, min(12.0, 2.5 + 0.9 * n * max(1, k) / 1.5)), 3.6)
    ax = fig.subplots()
    width = 0.8 / max(1, k)
    x = np.arange(n)
    hatches = ["", "///", "...", "xx", "\\\\"]
    for i, (label, (means, stds)) in enumerate(series.items()):
        means = np.array([np.nan if m is None else m for m in means], dtype=float)
        stds = np.array([0.0 if s is None else s for s in stds], dtype=float)
        centres = x + (i - (k - 1) / 2) * width
        bars = ax.bar(
            centres,
            means,
            width * 0.92,
            yerr=stds,
            capsize=3,
            color=colors,
            edgecolor="white",
            hatch=hatches[i % len(hatches)],
            label=label,
            error_kw={"linewidth": 1, "ecolor": "#333333"},
        )
        ax.bar_label(bars, labels=[f"{m:.1f}" if np.isfinite(m) else "" for m in means], fontsize=7, padding=2)
        for centre, values in zip(centres, (seeds or {}).get(label, [])):
            kept = [v for v in values if v is not None]
            ax.scatter(
                centre + _seed_offsets(len(kept), width),
                kept,
                s=12,
                color="black",
                edgecolors="white",
                linewidths=0.5,
                zorder=3,
            )
    ax.set_xticks(x, names, rotation=15 if n > 4 else 0, ha="right" if n > 4 else "center")
    for tick, tint in zip(ax.get_xticklabels(), colors):
        tick.set_color(tint)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_ylim(0, 105)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # the series by their hatching on a neutral face: a colour names a config, not a series
    handles = [
        Patch(facecolor="#bbbbbb", edgecolor="white", hatch=hatches[i % len(hatches)], label=label)
        for i, label in enumerate(series)
    ]
    if seeds:
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=4, color="black", label="one seed"))
    ax.legend(
        handles=handles,
        fontsize=8,
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18 if n <= 4 else -0.3),
        ncol=len(handles),
    )
    _style(ax)
    return _save(fig, path)


def compare_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    ylabel: str = "mean accuracy on seen tasks (%)",
    colors: dict[str, str] | None = None,
    seeds: dict[str, Sequence[Sequence[float] | None]] | None = None,
) -> Path:
    """Mean (line) ± std (band) over seeds of a per-task curve, one line per config in its colour (``colors[name]``,
    default :func:`color` in order); ``seeds[name]``: each seed's curve, drawn thin in the same colour."""
    fig = _figure(5.6, 3.5)
    ax = fig.subplots()
    length = 1
    for i, (name, (mean, std)) in enumerate(curves.items()):
        tint = (colors or {}).get(name, color(i))
        mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        x = np.arange(len(mean))
        length = max(length, len(mean))
        for curve in (seeds or {}).get(name) or []:
            if curve is not None:
                ax.plot(np.arange(len(curve)), curve, linewidth=0.7, alpha=0.55, color=tint, marker=".", markersize=3)
        ax.plot(x, mean, marker="o", markersize=3.5, linewidth=1.8, color=tint, label=name)
        ax.fill_between(x, mean - std, mean + std, color=tint, alpha=0.18, linewidth=0)
    _task_ticks(ax, length, "x")
    ax.set_xlabel("after training task", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_ylim(-2, 102)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, frameon=False, loc="outside right center")
    _style(ax)
    return _save(fig, path)
