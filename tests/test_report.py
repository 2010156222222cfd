"""Reports (report.html, plots) and ``compare`` (mean ± std, reuse of finished runs, scenario check)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from protosphere.errors import ConfigError, RunError
from protosphere.metrics.continual import summarize
from protosphere.report import save_embedding_snapshot, write_report
from protosphere.report.compare import format_mean_std, mean_std
from protosphere.runs import runner
from protosphere.runs.record import StoredRecord
from protosphere.runs.rundir import RunDir
from protosphere.runs.sweep import compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_results(
    num_tasks=3,
    task_il=True,
    nc=True,
    classifiers=("head",),
    seed=0,
    method="er",
    config=None,
    value=None,
    nc_epochs=False,
    extras=False,
) -> dict:
    """A results dict shaped like runner.run's; with ``value`` every accuracy equals it (known metrics)."""
    rng = np.random.default_rng(seed)
    accuracy, metrics = {}, {}
    for c in classifiers:
        accuracy[c], metrics[c] = {}, {}
        for setting in ("class_il", "task_il") if task_il else ("class_il",):
            if value is None:
                matrix = np.tril(rng.uniform(20, 100, (num_tasks, num_tasks))).round(3).tolist()
            else:
                matrix = np.full((num_tasks, num_tasks), float(value)).tolist()
            accuracy[c][setting] = matrix
            metrics[c][setting] = summarize(matrix, [10.0] * num_tasks)
    nc_list = (
        [None]
        + [
            {
                "split": "test",
                "classes": 2 * (t + 1),
                "nc1": 0.1 * (t + 1),
                "equinorm": 0.2,
                "equiangularity": 0.3,
                "max_angle": 0.05 * t,
                "nc3": 0.9,
                "nc4": 0.01,
                "within_class_effective_rank": 3.0 + t,
                "between_class_effective_rank": 1.0 + t,
            }
            for t in range(1, num_tasks)
        ]
        if nc
        else [None] * num_tasks
    )
    results = {
        "name": f"{method}-seed{seed}",
        "status": "complete",
        "seed": seed,
        "method": method,
        "headline_classifier": classifiers[0],
        "scenario": {
            "name": "seq-digits",
            "kind": "class_il" if task_il else "domain_il",
            "num_tasks": num_tasks,
            "num_classes": 2 * num_tasks,
            "class_order": list(range(2 * num_tasks)),
            "class_names": [str(i) for i in range(2 * num_tasks)],
            "tasks": [[2 * t, 2 * t + 1] for t in range(num_tasks)],
        },
        "accuracy": accuracy,
        "metrics": metrics,
        "random_init": None,
        "neural_collapse": nc_list,
        "timings": {
            "tasks": [
                {"task": t, "train_s": 0.5 + t, "eval_s": 0.1, "images": 1000, "img_per_s": 1000 / (0.5 + t)}
                for t in range(num_tasks)
            ],
            "total_s": 9.0,
        },
        "environment": {"device": "cpu", "world_size": 1, "precision": "32-true", "torch": "x"},
        "config": config
        if config is not None
        else {"name": f"{method}-seed{seed}", "seed": seed, "method": {"name": method}},
    }
    if nc_epochs:
        results["nc_epochs"] = [
            {"task": t, "epoch": e, "nc1": 1.0 / (1 + e + t), "equinorm": 0.1}
            for t in range(num_tasks)
            for e in range(2)
        ]
    if extras:
        add_extras(results, num_tasks, classifiers, task_il)
    return results


SEVERITIES = [1, 3, 5]
UNSEEN = -1000.0  # per-epoch accuracy of a task not trained yet: must never enter a mean over seen tasks


def add_extras(results: dict, num_tasks: int, classifiers, task_il: bool = True) -> None:
    """Diagnostics, corruption errors and per-epoch accuracies shaped like the engine's (known numbers)."""
    diagnostics = []
    for t in range(num_tasks):
        classes = list(range(2 * (t + 1)))
        entry = {"classes": classes, "prototype_alignment_per_class": [0.9 - 0.1 * t - 0.01 * c for c in classes]}
        entry["prototype_alignment"] = float(np.mean(entry["prototype_alignment_per_class"]))
        if t:
            old = list(range(2 * t))
            entry.update(old_classes=old, old_mean_drift_per_class=[0.05 * t + 0.02 * c for c in old])
            entry["old_mean_drift"] = float(np.mean(entry["old_mean_drift_per_class"]))
        diagnostics.append(entry)
    results["diagnostics"] = diagnostics
    results["corruptions"] = {
        c: {
            "gaussian_noise": [10.0 + k, 20.5 + k, 47.25 + k],
            "contrast": [5.0 + k, 7.5 + k, 9.125 + k],
            "pixelate": [30.0 + k, 31.0 + k, 60.0 + k],
        }
        for k, c in enumerate(classifiers)
    }  # every classifier differs, so showing the wrong one fails
    results["config"].setdefault("eval", {})["corruption_severities"] = SEVERITIES
    per_epoch = []
    for t in range(num_tasks):
        for e in range(2):
            accuracy = {}
            for k, c in enumerate(classifiers):
                seen = [50.0 + 10 * j + 5 * e + k for j in range(t + 1)]
                accuracy[c] = {"class_il": seen + [UNSEEN] * (num_tasks - t - 1)}
                if task_il:
                    accuracy[c]["task_il"] = [a + 20 for a in seen] + [UNSEEN] * (num_tasks - t - 1)
            per_epoch.append({"task": t, "epoch": e, "accuracy": accuracy, "neural_collapse": None})
    results["per_epoch"] = per_epoch


def write_run(run_dir: Path, results: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def check_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 50 and image.size[1] > 50


# ---------------------------------------------------------------------------------------------------------------
# report.html
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """One report with every optional part (rendered once: plotting is the slow part of these tests)."""
    results = fake_results(num_tasks=3, classifiers=("ncm", "linear_probe"), nc_epochs=True, extras=True)
    run_dir = write_run(tmp_path_factory.mktemp("report") / "run", results)
    rng = np.random.default_rng(0)
    prototypes = np.linalg.qr(rng.normal(size=(8, 6)))[0].T  # 6 orthonormal rows in 8-d
    labels = rng.integers(0, 6, 300)
    save_embedding_snapshot(run_dir, prototypes[labels] * 2 + 0.3 * rng.normal(size=(300, 8)), labels, prototypes)
    return run_dir, results, write_report(run_dir)


def test_report_is_self_contained_with_valid_pngs(full_report):
    run_dir, _, path = full_report
    text = path.read_text()
    assert path == run_dir / "report.html"
    sources = re.findall(r"""src\s*=\s*["']([^"']*)""", text, flags=re.I)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"<(link|script|iframe)\b", text, flags=re.I)
    assert not re.search(r"url\(|@import|https?://", text, flags=re.I)
    pngs = sorted((run_dir / "plots").glob("*.png"))
    names = {p.name for p in pngs}
    assert {
        "accuracy_matrix_ncm.png",
        "accuracy_over_time_linear_probe.png",
        "forgetting_ncm.png",
        "nc_over_tasks.png",
        "nc_over_epochs.png",
        "embedding_sphere.png",
        "prototype_cosine.png",
        "timings.png",
        "accuracy_over_epochs.png",
        "alignment_drift.png",
        "alignment_drift_per_class.png",
        "corruption_errors.png",
    } <= names
    import base64

    for png in pngs:
        check_png(png)
        assert base64.b64encode(png.read_bytes()).decode() in text  # every plot is embedded
    assert len(sources) == len(pngs)
    assert "<details>" in text and "Resolved config (YAML)" in text
    # every plot also as a vector PDF beside its PNG, with no time stamp (the same record renders the same bytes)
    pdfs = sorted((run_dir / "plots").glob("*.pdf"))
    assert [p.stem for p in pdfs] == [p.stem for p in pngs]
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-32:] and b"CreationDate" not in data, pdf
    # and each figure links its two files, relative to the page
    for png in pngs:
        assert f'<a href="plots/{png.name}">PNG</a> · <a href="plots/{png.stem}.pdf">PDF</a>' in text, png.name


def test_headline_numbers_equal_results_json(full_report):
    _, _, path = full_report
    results = json.loads((path.parent / "results.json").read_text())
    text = path.read_text()
    cells = dict(re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', text))
    checked = 0
    for classifier, settings in results["metrics"].items():
        for setting, m in settings.items():
            for key in (
                "final_average_accuracy",
                "average_incremental_accuracy",
                "average_forgetting",
                "backward_transfer",
                "forward_transfer",
            ):
                raw = cells[f"{classifier}/{setting}/{key}"]
                assert float(raw) == m[key]
                shown = re.search(rf'data-key="{classifier}/{setting}/{key}"[^>]*>([^<]*)<', text).group(1)
                assert shown == f"{m[key]:.2f}"
                checked += 1
    assert checked == 2 * 2 * 5


def test_report_without_optional_parts(tmp_path):
    results = fake_results(num_tasks=1, task_il=False, nc=False)
    del results["timings"]
    results["neural_collapse"] = [None]
    run_dir = write_run(tmp_path / "run", results)
    text = write_report(run_dir).read_text()
    names = {p.name for p in (run_dir / "plots").glob("*.png")}
    assert names == {"accuracy_matrix_head.png"}
    assert "Neural collapse" not in text and "Embeddings" not in text
    assert not re.search(r"alignment|drift|corruption|over epochs", text, flags=re.I)
    cells = dict(re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', text))
    assert cells["head/class_il/average_forgetting"] == "null"
    assert "No task-IL numbers" in text


def cells_of(text: str) -> dict[str, str]:
    return dict(re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', text))


def shown_of(text: str, key: str) -> str:
    return re.search(rf'data-key="{re.escape(key)}"[^>]*>([^<]*)<', text).group(1)


def section_of(text: str, title: str) -> str:
    """The HTML from the <h2> called ``title`` up to the next <h2> (or the footer)."""
    match = re.search(rf"<h2>{re.escape(title)}</h2>(.*?)(?=<h2>|<footer>)", text, flags=re.S)
    assert match, f"no section {title!r}"
    return match.group(1)


def test_corruption_table_equals_results(full_report):
    _, results, path = full_report
    text = path.read_text()
    section = section_of(text, "Robustness to corruptions")
    cells = cells_of(section)
    errors = results["corruptions"]["ncm"]  # the headline classifier, not linear_probe
    assert "<code>ncm</code>" in section and "corruption/linear_probe/" not in section
    assert re.findall(r"<th>severity (\d+)</th>", section) == [str(s) for s in SEVERITIES]
    for name, values in errors.items():
        for severity, value in zip(SEVERITIES, values):
            assert float(cells[f"corruption/ncm/{name}/{severity}"]) == value
        mean = float(np.mean(values))
        assert float(cells[f"corruption/ncm/{name}/mean"]) == pytest.approx(mean, abs=1e-12)
        assert shown_of(section, f"corruption/ncm/{name}/mean") == f"{mean:.2f}"
    for i, severity in enumerate(SEVERITIES):
        column = np.mean([v[i] for v in errors.values()])
        assert float(cells[f"corruption/ncm/all/{severity}"]) == pytest.approx(column, abs=1e-12)
    overall = np.mean([x for v in errors.values() for x in v])
    assert float(cells["corruption/ncm/all/mean"]) == pytest.approx(overall, abs=1e-12)
    assert section.count("<img ") == 1  # the error-vs-severity plot, inline


def test_diagnostics_numbers_equal_results(full_report):
    _, results, path = full_report
    section = section_of(path.read_text(), "Prototype alignment and drift")
    cells = cells_of(section)
    for t, entry in enumerate(results["diagnostics"]):
        key = f"diagnostics/T{t + 1}"
        assert float(cells[f"{key}/prototype_alignment"]) == entry["prototype_alignment"]
        assert shown_of(section, f"{key}/prototype_alignment") == f"{entry['prototype_alignment']:.3f}"
        if t == 0:
            assert cells[f"{key}/old_mean_drift"] == "null"  # no drift after the first task
        else:
            assert float(cells[f"{key}/old_mean_drift"]) == entry["old_mean_drift"]
    assert section.count("<img ") == 2  # over tasks, and per class for the last task
    assert "after task 3" in section


def test_epoch_accuracy_is_mean_over_seen_tasks(full_report):
    _, results, path = full_report
    text = path.read_text()
    section = section_of(text, "Neural collapse")  # drawn in the same section as NC over epochs
    assert "<h3>Accuracy over epochs</h3>" in section
    cells = cells_of(section)
    checked = 0
    for entry in results["per_epoch"]:
        t, e = entry["task"], entry["epoch"]
        for setting, values in entry["accuracy"]["ncm"].items():
            expected = float(np.mean(values[: t + 1]))
            assert float(cells[f"epoch/T{t + 1}/E{e + 1}/{setting}"]) == pytest.approx(expected, abs=1e-12)
            checked += 1
    assert checked == 3 * 2 * 2
    assert str(UNSEEN) not in section and "-1000" not in section


def test_new_sections_fallbacks_and_absence(tmp_path):
    """Per-epoch accuracy without NC gets its own section; corruption severities default to 1..n and another
    classifier is shown when the headline one has none; empty or None diagnostics leave the section out."""
    results = fake_results(num_tasks=2, task_il=False, nc=False, classifiers=("head", "probe"), extras=True)
    del results["config"]["eval"]
    del results["corruptions"]["head"]
    results["diagnostics"] = [None, {"classes": [0, 1, 2, 3]}]
    del results["timings"]
    run_dir = write_run(tmp_path / "run", results)
    text = write_report(run_dir).read_text()
    per_classifier = ("accuracy_matrix_", "accuracy_over_time_", "forgetting_")
    names = {p.name for p in (run_dir / "plots").glob("*.png") if not p.name.startswith(per_classifier)}
    assert names == {"accuracy_over_epochs.png", "corruption_errors.png"}
    for png in (run_dir / "plots").glob("*.png"):
        check_png(png)
    assert "Neural collapse" not in text and "Prototype alignment" not in text
    epochs = section_of(text, "Accuracy over epochs")
    assert float(cells_of(epochs)["epoch/T2/E2/class_il"]) == pytest.approx(np.mean([55.0, 65.0]))
    corruption = section_of(text, "Robustness to corruptions")
    assert "No corruption numbers for the headline classifier" in corruption and "<code>probe</code>" in corruption
    assert re.findall(r"<th>severity (\d+)</th>", corruption) == ["1", "2", "3"]
    assert float(cells_of(corruption)["corruption/probe/contrast/3"]) == 10.125

    for empty in (
        {"corruptions": {}, "per_epoch": [], "diagnostics": []},
        {
            "corruptions": {"head": {}},
            "per_epoch": [{"task": 0, "epoch": 0, "accuracy": {}}],
            "diagnostics": [None, None],
        },
    ):
        results.update(empty)
        text = write_report(run_dir, results).read_text()
        assert not re.search(r"alignment|drift|corruption|over epochs", text, flags=re.I)
        assert all(p.name.startswith(per_classifier) for p in (run_dir / "plots").glob("*.png"))


def test_rerender_removes_stale_plots(tmp_path):
    run_dir = write_run(tmp_path / "run", fake_results(num_tasks=1, task_il=False, nc=False))
    save_embedding_snapshot(run_dir, np.random.default_rng(0).normal(size=(40, 5)), np.arange(40) % 4)
    write_report(run_dir)
    assert (run_dir / "plots" / "embedding_sphere.png").exists()
    (run_dir / "embeddings.npz").unlink()
    write_report(run_dir)
    assert not (run_dir / "plots" / "embedding_sphere.png").exists()
    assert not (run_dir / "plots" / "embedding_sphere.pdf").exists()
    assert (run_dir / "plots" / "accuracy_matrix_head.pdf").exists()


def test_report_shows_the_command_and_the_commit_and_links_the_run_files(tmp_path):
    results = fake_results(num_tasks=2, task_il=False, nc=False)
    command = "protosphere run configs/a.yaml " + " ".join(f"train.option_{i}=<{i}>&" for i in range(30))
    results.update(
        command=command,
        code={"version": "9.8.7", "git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": True},
        fingerprint="feedbeefcafe0001",
    )
    run_dir = write_run(tmp_path / "run", results)
    files = RunDir(run_dir)
    files.config.write_text("seed: 0\n")
    files.metrics.write_text("time,task,epoch,step,split,name,value\n")
    files.checkpoints.mkdir()
    for checkpoint in (files.last_checkpoint, files.task_checkpoint(1)):
        checkpoint.write_bytes(b"x")
    text = write_report(run_dir).read_text()
    header = re.search(r"<header>.*?</header>", text, flags=re.S).group(0)
    import html

    assert f'<pre class="command">{html.escape(command)}</pre>' in header  # the whole command, escaped
    assert 'title="0123456789abcdef0123456789abcdef01234567">0123456789ab</code>' in header
    assert "protosphere 9.8.7" in header and "with uncommitted changes" in header and "feedbeefcafe0001" in header
    links = re.findall(r'href="([^"#]+)"', text)
    for expected in ("config.yaml", "results.json", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/task-1.ckpt"):
        assert expected in links, expected
    assert "plots/" in links and "tensorboard/" not in links  # only what exists
    for link in links:  # every link is relative to the report and names a file or folder of the run
        assert not re.match(r"[a-z]+:|/", link), link
        assert (run_dir / link).exists(), link
    del results["command"], results["code"], results["fingerprint"]  # an earlier version's record still renders
    text = write_report(run_dir, results).read_text()
    assert 'class="command"' not in text and "config.yaml" in re.findall(r'href="([^"#]+)"', text)


def chance_record(rows: dict, num_tasks: int = 5, diagnostics=None, classifier_data=None) -> dict:
    """A record whose classifiers have the given last rows (class-IL and task-IL; earlier rows at 90 %)."""
    results = fake_results(num_tasks=num_tasks, classifiers=tuple(rows), nc=False)
    for classifier, (class_il, task_il) in rows.items():
        for setting, last in (("class_il", class_il), ("task_il", task_il)):
            matrix = [[90.0] * num_tasks for _ in range(num_tasks - 1)] + [list(last)]
            results["accuracy"][classifier][setting] = matrix
            results["metrics"][classifier][setting] = summarize(matrix, None)
    results["diagnostics"] = diagnostics or []
    results["classifier_data"] = classifier_data or {}
    return results


def test_a_classifier_at_chance_is_named_with_the_reason_the_record_gives(tmp_path):
    from protosphere.report.html import CHANCE_MARGIN, chance_notes, near_chance

    # at, near or below: within 2.5 points or 6 % of the way from chance to 100 %, whichever is more
    assert near_chance(15.39, 10.0) and not near_chance(15.41, 10.0)  # 10 classes: 10 + 0.06 × 90
    assert near_chance(52.99, 50.0) and not near_chance(53.01, 50.0)  # 2 classes: 50 + 0.06 × 50
    assert near_chance(3.5, 1.0) and near_chance(6.93, 1.0) and not near_chance(6.95, 1.0)  # 100 classes
    assert near_chance(0.0, 10.0)  # below chance counts

    # 5 tasks × 2 classes: chance is 10 % in class-IL, 50 % in task-IL; the final average is the last row's mean
    rows = {
        "linear_probe": ([80.0] * 5, [95.0] * 5),
        "nearest_prototype": ([50.0, 0.0, 0.0, 0.0, 0.0], [70.0] * 5),  # everything to T1's classes: exactly 10 %
        "ncm": ([10.0 + CHANCE_MARGIN] * 5, [53.01] * 5),  # at the margin: in; task-IL just past 53: out
        "knn": ([15.5] * 5, [45.0] * 5),  # 15.5: out; task-IL below chance: in
    }
    diagnostics = [{"prototype_alignment": 0.5}] * 4 + [{"prototype_alignment": 0.031}]
    results = chance_record(rows, diagnostics=diagnostics, classifier_data={"knn": "the current task's data"})
    record = StoredRecord.from_data(results)
    notes = chance_notes(record)
    flagged = [re.search(r'data-classifier="(\w+)" data-setting="(\w+)"', n).groups() for n in notes]
    assert flagged == [("nearest_prototype", "class_il"), ("ncm", "class_il"), ("knn", "task_il")]
    prototype, ncm, knn = notes
    assert "final average accuracy 10.00 % against 10.00 % for a uniform guess over 10 classes" in prototype
    assert "nearest fixed prototype" in prototype and "mean cosine of 0.03 to their prototypes" in prototype
    assert "only on T1 (50.0 %): it sends nearly every image to the classes of that task" in prototype
    assert f"{10 + CHANCE_MARGIN:.2f} % against 10.00 %" in ncm and "class means" in ncm and "only on" not in ncm
    assert "is at chance" in prototype and "is at chance" in ncm and "(+2.50 points)" in ncm
    assert "45.00 % against 50.00 %" in knn and "(below it)" in knn and "tell apart the classes of one task" in knn
    results["accuracy"]["knn"]["class_il"][-1] = [10.0] * 5
    results["metrics"]["knn"]["class_il"] = summarize(results["accuracy"]["knn"]["class_il"], None)
    knn = chance_notes(StoredRecord.from_data(results))[2]
    assert "class-IL" in knn and "It was fitted on the current task&#x27;s data" in knn
    # on the page: under the headline numbers, before the accuracy sections
    text = write_report(write_run(tmp_path / "run", results)).read_text()
    headline = section_of(text, "Headline numbers")
    assert all(note in headline for note in notes)
    # a record without diagnostics or task lists still gets the class-IL note
    del results["diagnostics"], results["scenario"]["tasks"]
    notes = chance_notes(StoredRecord.from_data(results))
    assert [re.search(r'data-setting="(\w+)"', n).group(1) for n in notes] == ["class_il"] * 3
    assert "mean cosine" not in notes[0]


def test_report_on_directory_without_results(tmp_path, capsys):
    from protosphere.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no results.json"):
        write_report(tmp_path / "empty")
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no results.json" in err and err.count("\n") == 1


def test_embedding_snapshot_contents(tmp_path):
    rng = np.random.default_rng(1)
    prototypes = np.linalg.qr(rng.normal(size=(10, 4)))[0].T  # 4 classes, 10-d
    labels = np.repeat(np.arange(4), 50)
    features = 5 * prototypes[labels] + 0.01 * rng.normal(size=(200, 10))
    path = save_embedding_snapshot(tmp_path, features, labels, prototypes, max_points=80)
    with np.load(path) as npz:
        assert npz["features"].shape == (80, 10) and npz["labels"].shape == (80,)
        assert npz["classes"].tolist() == [0, 1, 2, 3]
        np.testing.assert_allclose(npz["cosine"], np.eye(4), atol=1e-3)
    with pytest.raises(ValueError):
        save_embedding_snapshot(tmp_path, features, labels, prototypes[:, :3])


# ---------------------------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------------------------
def test_mean_std_known_values():
    stat = mean_std([1.0, 2.0, 3.0, 4.0])
    assert stat["mean"] == 2.5 and stat["n"] == 4
    assert stat["std"] == pytest.approx(np.sqrt(5 / 3), abs=1e-12)  # sample std (n − 1)
    assert format_mean_std(stat) == "2.50 ± 1.29"
    assert mean_std([7.0]) == {"mean": 7.0, "std": None, "n": 1, "values": [7.0]}
    assert format_mean_std(mean_std([7.0])) == "7.00"
    assert mean_std([None, 2.0, 4.0])["mean"] == 3.0
    assert format_mean_std(mean_std([None, None])) == "n/a"


BASE = {"er": 50.0, "finetune": 30.0}
STEP = {"er": 2.0, "finetune": 3.0}


def write_configs(folder: Path, num_tasks=(3, 3)) -> list[Path]:
    paths = []
    for (name, extra), tasks in zip((("er", ", buffer_size: 20"), ("finetune", "")), num_tasks):
        path = folder / f"{name}.yaml"
        path.write_text(
            f"data: {{dataset: digits}}\nscenario: {{num_tasks: {tasks}}}\nmodel: {{backbone: mlp}}\n"
            f"method: {{name: {name}{extra}}}\ntrain: {{epochs: 1}}\n"
        )
        paths.append(path)
    return paths


@pytest.fixture
def fake_run(monkeypatch):
    calls = []

    def run(config, resume=False, overwrite=False, console=None, show_progress=True):
        calls.append((config.name, config.seed, resume, overwrite))
        method = config.method.name
        results = fake_results(
            num_tasks=config.scenario.num_tasks,
            seed=config.seed,
            method=method,
            config=config.model_dump(mode="json"),
            value=BASE[method] + STEP[method] * config.seed,
        )
        results["name"] = config.name
        run_dir = RunDir.of(config).prepare(resume=resume, overwrite=overwrite)
        (run_dir / "results.json").write_text(json.dumps(results))
        return StoredRecord.from_data(results), run_dir

    monkeypatch.setattr(runner, "run", run)
    return calls


def test_compare_mean_std_and_reuse(tmp_path, fake_run):
    paths = write_configs(tmp_path)
    out = tmp_path / "out"
    summary = compare(paths, seeds=3, out=out, overrides=["optimizer.lr=0.01"])
    assert [c[:2] for c in fake_run] == [(f"{m}-seed{s}", s) for m in ("er", "finetune") for s in range(3)]
    rows = {r["label"]: r for r in summary["rows"]}
    er = rows["er"]["values"]["headline/class_il/final_average_accuracy"]
    assert er["mean"] == pytest.approx(52.0) and er["std"] == pytest.approx(2.0)
    ft = rows["finetune"]["values"]["headline/task_il/final_average_accuracy"]
    assert ft["mean"] == pytest.approx(33.0) and ft["std"] == pytest.approx(3.0)
    assert rows["er"]["values"]["headline/class_il/average_forgetting"]["mean"] == 0.0
    assert rows["er"]["status"] == ["trained"] * 3

    saved = json.loads((out / "compare.json").read_text())
    assert saved["rows"][0]["values"]["headline/class_il/final_average_accuracy"]["mean"] == pytest.approx(52.0)
    markdown = (out / "compare.md").read_text()
    assert "| er | er | head | **52.00 ± 2.00** |" in markdown and "33.00 ± 3.00" in markdown
    assert "protosphere compare" in markdown and "optimizer.lr=0.01" in markdown and "--seeds 3" in markdown
    html = (out / "compare.html").read_text()
    assert 'data-mean="52.0"' in html and not re.search(r"""src=["'](?!data:)""", html)
    for png in (out / "plots").glob("*.png"):
        check_png(png)

    # the same command again reuses all six finished runs
    again = compare(paths, seeds=3, out=out, overrides=["optimizer.lr=0.01"])
    assert len(fake_run) == 6
    assert all(s == "reused" for r in again["rows"] for s in r["status"])
    # one more seed trains only the new runs
    compare(paths, seeds=4, out=out, overrides=["optimizer.lr=0.01"])
    assert [c[0] for c in fake_run[6:]] == ["er-seed3", "finetune-seed3"]
    # a different config never silently reuses a run: refused, then rerun with --overwrite
    with pytest.raises(RunError, match="different config"):
        compare(paths, seeds=1, out=out, overrides=["optimizer.lr=0.02"])
    assert len(fake_run) == 8
    compare(paths, seeds=1, out=out, overrides=["optimizer.lr=0.02"], overwrite=True)
    assert [c[0] for c in fake_run[8:]] == ["er-seed0", "finetune-seed0"]


def test_compare_refuses_different_scenarios(tmp_path, fake_run, capsys):
    from protosphere.cli import main

    paths = write_configs(tmp_path, num_tasks=(3, 5))
    with pytest.raises(ConfigError, match="do not share one scenario"):
        compare(paths, seeds=2, out=tmp_path / "out")
    assert fake_run == []
    assert main(["compare", *map(str, paths), "--seeds", "1", "--out", str(tmp_path / "out")]) == 2
    assert "scenario.num_tasks" in capsys.readouterr().err
    # an override that makes them agree is applied to all configs
    compare(paths, seeds=1, out=tmp_path / "out", overrides=["scenario.num_tasks=3"])
    assert len(fake_run) == 2


def test_compare_cli_parses_overrides_and_options(tmp_path, fake_run):
    from protosphere.cli import main

    paths = write_configs(tmp_path)
    out = tmp_path / "cli-out"
    assert (
        main(
            [
                "compare",
                str(paths[0]),
                str(paths[1]),
                "train.epochs=2",
                "--seeds",
                "2",
                "--out",
                str(out),
                "optimizer.lr=0.3",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(fake_run) == 4
    saved = json.loads((out / "compare.json").read_text())
    assert "train.epochs=2" in saved["command"] and "optimizer.lr=0.3" in saved["command"]
    config = json.loads((out / "er-seed1" / "results.json").read_text())["config"]
    assert config["train"]["epochs"] == 2 and config["optimizer"]["lr"] == 0.3 and config["seed"] == 1


def test_try_write_report_never_raises(tmp_path, monkeypatch):
    from protosphere.report import plots, try_write_report

    run_dir = write_run(tmp_path / "run", fake_results(num_tasks=1, task_il=False, nc=False))

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(plots, "accuracy_heatmaps", broken)
    with pytest.warns(UserWarning, match="results.json is intact"):
        assert try_write_report(run_dir) is None
    assert (run_dir / "results.json").exists() and not (run_dir / "report.html").exists()


def test_report_and_console_say_which_data_each_classifier_saw(tmp_path):
    from protosphere.cli import _summary_lines

    results = fake_results(num_tasks=2, classifiers=("linear_probe", "ncm"), nc=False)
    results["classifier_data"] = {
        "linear_probe": "the current task + 200 classifier-only samples",
        "ncm": "the current task's training data",
    }
    text = write_report(write_run(tmp_path / "run", results)).read_text()
    assert "Fitted on the current task + 200 classifier-only samples." in text
    # its class-IL and task-IL rows, and its section (a note on a classifier at chance names the data too)
    assert re.sub(r'<p class="chance".*?</p>', "", text).count("200 classifier-only samples") == 3
    lines = _summary_lines(StoredRecord.from_data(results))
    assert any(
        line.strip() == "linear_probe fitted on the current task + 200 classifier-only samples" for line in lines
    )
    del results["classifier_data"]  # runs written before the field existed still render
    assert "Fitted on" not in write_report(write_run(tmp_path / "old", results)).read_text()
