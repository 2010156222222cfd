"""The report read at a glance: contents, headline first and the rest folded, training curves, per-class accuracy,
labels that never overlap, FWT n/a in class-IL, and compare's "best" only when it is significant."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from protosphere.report import plots, write_report
from protosphere.report.compare import Column, best_labels, best_test, to_markdown, welch_p
from test_report import fake_results, write_run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = fake_results(num_tasks=3, classifiers=("nearest_prototype", "ncm", "linear_probe"))
    results["scenario"]["class_names"] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal"]
    results["confusion"] = {
        "classifier": "nearest_prototype",
        "classes": [0, 1, 2, 3, 4, 5],
        "matrix": [
            [8, 2, 0, 0, 0, 0],
            [0, 10, 0, 0, 0, 0],
            [1, 1, 5, 3, 0, 0],
            [0, 0, 0, 9, 1, 0],
            [0, 0, 0, 0, 4, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        "other": [0, 0, 0, 0, 0, 0],
    }
    run_dir = write_run(tmp_path_factory.mktemp("usability") / "run", results)
    (run_dir / "metrics.csv").write_text(
        "time,task,epoch,step,split,name,value\n"
        "0.1,0,0,4,train,loss,2.0\n0.1,0,0,4,train,lr,0.1\n0.2,0,1,9,train,loss,1.5\n0.2,0,1,9,train,lr,0.05\n"
        "0.3,0,1,,test,ncm/class_il/task0,50\n"
        "0.4,1,0,4,train,loss,2.5\n0.4,1,0,4,train,lr,0.1\n0.5,1,1,9,train,loss,1.2\n0.5,1,1,9,train,lr,0.05\n"
    )
    return run_dir, results, write_report(run_dir).read_text()


def test_table_of_contents_links_every_section_in_order(report):
    _, _, text = report
    nav = re.search(r'<nav class="toc".*?</nav>', text, flags=re.S).group(0)
    links = re.findall(r'<a href="#([^"]+)">(.*?)</a>', nav)
    headings = re.findall(r'<a class="anchor" id="([^"]+)"></a><h2>(.*?)</h2>', text)
    assert links == headings and len(links) >= 5
    assert [title for _, title in links][:3] == [
        "Headline numbers",
        "Accuracy",
        "Per-class accuracy after the last task",
    ]
    assert text.index("</header>") < text.index('<nav class="toc"') < text.index("<h2>")


def test_headline_classifier_first_and_the_others_folded(report):
    _, _, text = report
    accuracy = text[text.index("<h2>Accuracy</h2>") : text.index("<h2>Per-class")]
    first_img = accuracy.index('alt="accuracy matrix nearest_prototype (headline)"')
    folded = re.findall(r'<details class="classifier"><summary>(.*?)</summary>(.*?)</details>', accuracy, flags=re.S)
    assert [re.search(r"<code>(.*?)</code>", s).group(1) for s, _ in folded] == ["ncm", "linear_probe"]
    assert first_img < accuracy.index('<details class="classifier">')
    assert 'alt="accuracy matrix ncm"' in folded[0][1] and "final avg acc" in folded[0][0]


def test_training_curves_from_metrics_csv_with_a_global_step(report, tmp_path):
    from protosphere.report.curves import read_training_rows

    run_dir, results, text = report
    assert 'alt="training loss and learning rate"' in text and "<h2>Training curves</h2>" in text
    series = read_training_rows(run_dir / "metrics.csv")
    assert series["loss"] == [(4, 2.0, 0), (9, 1.5, 0), (14, 2.5, 1), (19, 1.2, 1)]  # task 1 starts at step 10
    assert [s for s, _, _ in series["lr"]] == [4, 9, 14, 19]
    bare = write_run(tmp_path / "bare", results)
    assert "Training curves" not in write_report(bare).read_text()  # no metrics.csv, no section


def test_per_class_accuracy_equals_the_confusion_matrix(report):
    _, results, text = report
    section = text[text.index("<h2>Per-class accuracy after the last task</h2>") :]
    cells = dict(re.findall(r'data-key="per_class/(\d+)" data-value="([^"]+)"', section))
    assert float(cells["0"]) == pytest.approx(80.0) and float(cells["2"]) == pytest.approx(50.0)
    assert cells["5"] == "null"  # no test image of that class
    assert '<td class="l">T-shirt/top</td>' in section
    assert 'alt="confusion matrix after the last task"' in text
    assert 'alt="per-class accuracy after the last task"' in text


def _tick_boxes(fig, axis="x"):
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
        boxes += [t.get_window_extent(renderer) for t in labels if t.get_text() and t.get_visible()]
    return boxes


def _capture(monkeypatch):
    figures = []
    real = plots._save

    def save(fig, path):
        figures.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return figures


def _overlaps(boxes) -> list:
    return [
        (a, b)
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a.overlaps(b) and a.intersection(a, b).width > 1 and a.intersection(a, b).height > 1
    ]


def _slanted_too_close(fig) -> list:
    """Slanted x labels: neighbours' baselines must be at least a line of text apart (their boxes overlap anyway)."""
    import math

    problems = []
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible() and t.get_rotation()]
        if len(labels) < 2:
            continue
        xs = sorted(ax.transData.transform((x, 0))[0] for x in ax.get_xticks()[: len(labels)])
        gap = min(b - a for a, b in zip(xs, xs[1:])) * math.sin(math.radians(labels[0].get_rotation()))
        line = labels[0].get_fontsize() * fig.dpi / 72
        if gap < line:
            problems.append((gap, line))
    return problems


@pytest.mark.parametrize("count", [6, 10, 30])
def test_class_names_never_overlap_on_bars_and_cosine_matrix(monkeypatch, tmp_path, count):
    figures = _capture(monkeypatch)
    names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ] * 3
    names = [f"{n}{i // 10 or ''}" for i, n in enumerate(names[:count])]
    values = np.linspace(-0.3, 0.6, count)
    plots.per_class_bars(
        [("alignment per class", names, values, "cos"), ("drift", names[:-1], values[:-1], "1-cos")],
        tmp_path / "bars.png",
    )
    plots.cosine_matrix(np.random.default_rng(0).uniform(-1, 1, (count, count)), tmp_path / "cos.png", names, names)
    for fig in figures:
        fig.canvas.draw()
        straight = [t for ax in fig.axes for t in ax.get_xticklabels() if not t.get_rotation()]
        if straight:
            assert not _overlaps(_tick_boxes(fig, "x")), "x tick labels overlap"
        assert not _slanted_too_close(fig), "slanted x tick labels overlap"
        assert not _overlaps(_tick_boxes(fig, "y")), "y tick labels overlap"


def test_legends_never_cover_a_bar_value(monkeypatch, tmp_path):
    figures = _capture(monkeypatch)
    # the last bars are the tallest: a legend in the upper right used to sit on their values
    plots.forgetting_bars({"class_il": [10.0, 30.0, 60.0, 90.0], "task_il": [5.0, 8.0, 20.0, 85.0]}, tmp_path / "f.png")
    fig = figures[-1]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = (fig.legends or [ax.get_legend() for ax in fig.axes if ax.get_legend()])[0].get_window_extent(renderer)
    values = [t.get_window_extent(renderer) for ax in fig.axes for t in ax.texts]
    assert len(values) == 8 and not any(legend.overlaps(v) for v in values)


def test_fwt_is_na_in_class_il_and_defined_in_task_il(tmp_path):
    import protosphere

    run = protosphere.run(
        {
            "data": {"dataset": "digits"},
            "scenario": {"num_tasks": 2},
            "model": {"backbone": "mlp"},
            "method": {"name": "er", "buffer_size": 20},
            "train": {"epochs": 1, "batch_size": 64},
            "eval": {"neural_collapse": False, "embeddings": False},
            "fabric": {"threads": 1},
            "output_dir": str(tmp_path),
        },
        progress=False,
    )
    metrics = run.results["metrics"]["head"]
    assert metrics["class_il"]["forward_transfer"] is None
    assert metrics["task_il"]["forward_transfer"] is not None
    text = run.report_path.read_text()
    assert 'data-key="head/class_il/forward_transfer" data-value="null">n/a' in text
    assert "FWT is not defined in class-IL" in text
    # the confusion matrix after the last task agrees with the accuracy matrix's last row
    confusion = run.results["confusion"]
    matrix = np.asarray(confusion["matrix"])
    sizes = [len(t.test_labels) for t in run.scenario.tasks]
    last = run.results["accuracy"]["head"]["class_il"][-1]
    assert matrix.trace() == pytest.approx(sum(a * n / 100 for a, n in zip(last, sizes)))
    assert matrix.sum() + sum(confusion["other"]) == sum(sizes)


# ----------------------------------------------------------------------------------------------- compare: best
def _rows(values_by_label):
    from protosphere.report.compare import mean_std

    return [{"label": label, "values": {"k": mean_std(values)}} for label, values in values_by_label.items()]


COLUMN = [Column("k", "class-IL final acc", None, "class_il", "final_average_accuracy")]


def test_welch_p_matches_scipy():
    from scipy import stats

    a, b = [50.0, 52.0, 54.0], [40.0, 47.0, 41.0, 44.0]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == 0.0
    assert welch_p([1.0], [2.0, 3.0]) is None


def test_best_needs_three_seeds_and_a_significant_difference():
    # n = 2, far apart: never bold
    assert best_labels(_rows({"a": [90.0, 91.0], "b": [10.0, 11.0]}), COLUMN) == {"k": None}
    # n = 3, overlapping spreads: not bold
    test = best_test(_rows({"a": [50.0, 60.0, 55.0], "b": [52.0, 58.0, 49.0]}), COLUMN)["k"]
    assert test["leader"] == "a" and test["p"] > 0.05 and test["best"] is None
    # n = 3, clearly apart: bold, with the test recorded
    test = best_test(_rows({"a": [50.0, 51.0, 52.0], "b": [40.0, 41.0, 42.5], "c": [30.0, 31.0, 32.0]}), COLUMN)["k"]
    assert test["best"] == "a" and test["runner_up"] == "b" and test["p"] < 0.05 and test["n"] == [3, 3]
    # forgetting: lower is better
    column = [Column("k", "forgetting", None, "class_il", "average_forgetting")]
    assert best_labels(_rows({"a": [5.0, 6.0, 5.5], "b": [20.0, 21.0, 22.0]}), column) == {"k": "a"}


def test_markdown_bolds_only_a_significant_best():
    def summary(values):
        rows = _rows(values)
        for row in rows:
            row.update(method="er", headline_classifier="head", runs=[], status=[])
        return {
            "scenario": {"description": "x"},
            "seeds": [0, 1],
            "columns": [c.__dict__ for c in COLUMN],
            "rows": rows,
            "best": best_labels(rows, COLUMN),
            "command": "protosphere compare",
        }

    two = to_markdown(summary({"a": [90.0, 91.0], "b": [10.0, 11.0]}))
    assert "**90.50" not in two and "Welch's t-test" in two
    three = to_markdown(summary({"a": [90.0, 91.0, 92.0], "b": [10.0, 11.0, 12.0]}))
    assert "**91.00 ± 1.00**" in three
    json.dumps(best_test(_rows({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}), COLUMN))  # JSON-safe
