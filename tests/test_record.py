"""The run record (results.json's schema: strict as written, lenient as read) and the run directory's one atomic
write."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from protosphere.config import validate_config
from protosphere.errors import RunError
from protosphere.runs.record import SCHEMA_VERSION, EpochNeuralCollapse, Evaluation, RunRecord, StoredRecord, TaskTiming
from protosphere.runs.rundir import RunDir, atomic_write, read_record
from protosphere.runs.runner import run

TINY = {
    "data": {"dataset": "digits"},
    "scenario": {"num_tasks": 2},
    "model": {"backbone": "mlp"},
    "train": {"epochs": 2, "batch_size": 64, "augmentation": "none"},
    "eval": {"report": "off"},
    "fabric": {"threads": 1},
}

# method and eval options of the tiny runs: replay with per-epoch evaluation and corruptions (confusion, random-init
# baseline, corruption errors), FNC2 (prototype diagnostics, NC metrics with nc3/nc4, three classifiers with their
# fit timings), LwF without NC metrics and without the baseline (the optional keys at their other values)
RUNS = {
    "er": (
        {"name": "er", "buffer_size": 30},
        {"per_epoch": True, "corruptions": ["gaussian_noise", "contrast"], "corruption_severities": [1, 3]},
    ),
    "fnc2": (
        {
            "name": "fnc2",
            "buffer_size": 20,
            "projection_dim": 16,
            "probe_epochs": 1,
            "probe_min_steps": 10,
            "classifiers": ["nearest_prototype", "ncm", "linear_probe"],
        },
        {"per_epoch": True},
    ),
    "lwf": ({"name": "lwf"}, {"neural_collapse": False, "random_init_baseline": False}),
}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("record")
    runs = {}
    for name, (method, evaluation) in RUNS.items():
        data = json.loads(json.dumps(TINY))
        data.update(output_dir=str(out), name=name, method=method)
        data["eval"].update(evaluation)
        results, run_dir = run(validate_config(data), show_progress=False)
        runs[name] = (results, run_dir)
    return runs


@pytest.mark.parametrize("name", list(RUNS))
def test_results_json_of_real_runs_validates_and_is_written_unchanged(tiny_runs, name):
    record, run_dir = tiny_runs[name]
    text = (run_dir / "results.json").read_text()
    # the file holds exactly the record (keys, order, floats), written as json.dumps always wrote results.json
    assert text == json.dumps(record.to_data(), indent=2)
    data = json.loads(text)
    assert RunRecord.model_validate(data).to_json() == text  # the strict model takes what it wrote, unchanged
    assert read_record(run_dir) == record and record.schema_version == SCHEMA_VERSION
    assert set(data) <= set(RunRecord.model_fields)
    assert "nc_epochs" not in data and "embeddings" not in data  # the duplicate and the dead key are gone
    assert record.headline_classifier == next(iter(data["accuracy"]))


def test_typed_parts_hold_what_each_option_wrote(tiny_runs):
    er = read_record(tiny_runs["er"][1])
    assert set(er.corruptions[er.headline_classifier]) == {"gaussian_noise", "contrast"}
    assert all(len(errors) == 2 for errors in er.corruptions[er.headline_classifier].values())
    assert er.random_init is not None and len(er.per_epoch) == 2 * 2  # 2 tasks × 2 epochs
    assert sum(er.confusion.matrix[0]) + er.confusion.other[0] > 0
    fnc2 = read_record(tiny_runs["fnc2"][1])
    assert list(fnc2.accuracy) == ["nearest_prototype", "ncm", "linear_probe"]
    assert fnc2.diagnostics[-1].old_classes and fnc2.diagnostics[-1].old_mean_drift is not None
    assert fnc2.neural_collapse[-1].nc3 is not None and fnc2.neural_collapse[0].classes == len(fnc2.scenario.tasks[0])
    assert set(fnc2.timings.tasks[-1].classifiers) >= {"nearest_prototype", "ncm", "linear_probe"}
    assert fnc2.code is not None and fnc2.environment.world_size == 1
    lwf = read_record(tiny_runs["lwf"][1])
    assert lwf.random_init is None and lwf.neural_collapse == [None, None] and lwf.per_epoch == []
    assert "corruptions" not in lwf.to_data()


def test_load_run_reads_the_record(tiny_runs):
    import protosphere

    record, run_dir = tiny_runs["fnc2"]
    loaded = protosphere.load_run(run_dir)
    assert loaded.record == record and loaded.results == record.to_data()
    assert loaded.classifiers == list(record.accuracy) and loaded.checkpoint_path().is_file()


def test_epoch_nc_metrics_come_from_per_epoch(tiny_runs):
    """What earlier versions stored twice as ``nc_epochs`` is derived from ``per_epoch``, entry for entry."""
    record, run_dir = tiny_runs["fnc2"]
    derived = read_record(run_dir).epoch_neural_collapse()
    expected = [
        {"task": e["task"], "epoch": e["epoch"], **e["neural_collapse"]}
        for e in record.to_data()["per_epoch"]
        if e["neural_collapse"]
    ]
    assert len(expected) == 4 and [e.model_dump(exclude_none=True) for e in derived] == expected


DATA = Path(__file__).parent / "data"
# results.json of tiny digits runs written by earlier versions of protosphere (the commit in the name): the oldest
# that runs (no per_epoch, fingerprint, diagnostics, classifier timings...), the first with nc_epochs, the last before
# the record was typed (every key of today but nc_epochs written twice), and the first with today's layout
OLD_FILES = {
    "results-v1-d52f1cb.json": 1,
    "results-v1-210563d.json": 1,
    "results-v1-232fb6c.json": 1,
    "results-v2-b5a7424.json": 2,
}


@pytest.mark.parametrize("name, version", OLD_FILES.items())
def test_files_of_earlier_versions_read_through_the_lenient_model(tmp_path, name, version):
    text = (DATA / name).read_text()
    (tmp_path / "results.json").write_text(text)
    record = read_record(tmp_path)
    assert record.schema_version == version
    assert record.to_data() == json.loads(text)  # nothing is added to a file that lacked it, nothing is lost
    if version == SCHEMA_VERSION:
        assert json.dumps(RunRecord.model_validate(json.loads(text)).to_data(), indent=2) == text
    else:
        with pytest.raises(ValidationError):  # the strict model is for writing: an older file does not pass it
            RunRecord.model_validate(json.loads(text))
    assert record.summary().final_average_accuracy == pytest.approx(
        record.to_data()["metrics"]["head"]["class_il"]["final_average_accuracy"]
    )
    assert record.scenario.num_tasks == 2 and len(record.accuracy["head"]["class_il"]) == 2


def test_absent_keys_read_as_empty_and_nc_epochs_as_epoch_metrics():
    old = json.loads((DATA / "results-v1-d52f1cb.json").read_text())
    record = StoredRecord.from_data(old)
    assert record.per_epoch == [] and record.diagnostics == [] and record.classifier_data == {}
    assert record.fingerprint is None and record.confusion.classes == [] and record.code.git_commit is None
    assert "classifiers" not in record.to_data()["timings"]["tasks"][0] and record.timings.tasks[0].classifiers == {}
    with_nc_epochs = json.loads((DATA / "results-v1-232fb6c.json").read_text())
    record = StoredRecord.from_data(with_nc_epochs)
    assert [e.model_dump(exclude_unset=True) for e in record.epoch_neural_collapse()] == with_nc_epochs["nc_epochs"]
    assert record.epoch_neural_collapse()[0] == EpochNeuralCollapse(**with_nc_epochs["nc_epochs"][0])


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda d: d["metrics"]["head"]["class_il"].update(final_average_acuracy=1.0),
            "unknown key `metrics.head.class_il.final_average_acuracy`",
        ),
        (lambda d: d.update(neural_colapse=[]), "unknown key `neural_colapse`"),
        (lambda d: d["timings"].update(total_s="long"), "`timings.total_s`: input should be a valid number"),
        (
            lambda d: d["accuracy"]["head"].update(clas_il=[[1.0]]),
            "unknown key `accuracy.head.clas_il` (input should be 'class_il' or 'task_il')",
        ),
        (lambda d: d["scenario"].update(num_tasks=[2]), "`scenario.num_tasks`: input should be a valid integer"),
    ],
)
def test_broken_file_fails_with_one_clear_sentence(tmp_path, change, expected):
    data = {
        "headline_classifier": "head",
        "accuracy": {"head": {"class_il": [[50.0]]}},
        "metrics": {"head": {"class_il": {"final_average_accuracy": 50.0}}},
        "scenario": {"num_tasks": 1},
        "timings": {"total_s": 1.0},
    }
    change(data)
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(RunError) as info:
        read_record(tmp_path)
    message = str(info.value)
    assert expected in message and str(tmp_path / "results.json") in message
    assert message.count("\n") == 0 and message.endswith("rerun the run to rewrite it.")


def test_not_a_results_file(tmp_path):
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="not a protosphere results file"):
        read_record(tmp_path)
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(RunError, match="not readable JSON"):
        read_record(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no results.json"):
        read_record(tmp_path / "empty")


def test_a_misspelt_key_fails_where_the_value_is_made():
    evaluation = Evaluation.of()
    with pytest.raises(ValueError, match="random_innit"):
        evaluation.random_innit = {"head": {"class_il": [10.0]}}
    with pytest.raises(ValidationError, match="clas_il"):
        evaluation.add_row({"head": {"clas_il": [50.0]}})
    with pytest.raises(ValidationError, match="Input should be a valid number"):
        evaluation.random_init = {"head": {"class_il": ["high"]}}  # assignments are validated too
    with pytest.raises(ValidationError, match="clasifiers"):
        TaskTiming(task=0, train_s=1.0, eval_s=1.0, images=10, img_per_s=10.0, clasifiers={})
    with pytest.raises(ValidationError, match="eval_s"):  # and a key the record needs cannot be left out
        TaskTiming(task=0, train_s=1.0, images=10, img_per_s=10.0, classifiers={})
    assert evaluation.accuracy == {} and evaluation.random_init is None  # nothing half-made was kept


def test_the_evaluation_a_checkpoint_keeps_round_trips_and_older_checkpoints_resume():
    # what an earlier version saved in a checkpoint before its first task: no diagnostics yet
    older = {"accuracy": {}, "random_init": None, "neural_collapse": [], "timings": {"tasks": []}, "per_epoch": []}
    evaluation = Evaluation.of(older)
    assert evaluation.saved() == {**older, "diagnostics": []}  # every key set, so the next checkpoint keeps them all
    evaluation.add_row({"head": {"class_il": [50.0, 0.0]}})
    evaluation.neural_collapse.append(None)
    saved = evaluation.saved()
    assert Evaluation.of(saved) == evaluation and Evaluation.of(saved).saved() == saved
    assert "corruptions" not in saved and "confusion" not in saved  # measured after the last task only


def test_a_misspelt_key_stops_the_run_at_its_first_evaluation(tmp_path, monkeypatch):
    """A metric that comes back under a wrong name stops the run when it is measured, after task 0, before its first
    checkpoint; not at the end, when results.json is written."""
    import protosphere.runs.protocol as protocol

    measure = protocol.neural_collapse

    def misspelt(*args, **kwargs):
        metrics = measure(*args, **kwargs)
        metrics["equinrom"] = metrics.pop("equinorm")
        return metrics

    monkeypatch.setattr(protocol, "neural_collapse", misspelt)
    data = json.loads(json.dumps(TINY))
    data.update(output_dir=str(tmp_path), name="misspelt", method={"name": "finetune"})
    with pytest.raises(ValidationError, match="equinrom"):
        run(validate_config(data), show_progress=False)
    files = RunDir(tmp_path / "misspelt")
    assert not files.results.exists() and not files.task_checkpoint(0).exists()
    assert [row["task"] for row in csv.DictReader(files.metrics.open()) if row["split"] == "train"][-1] == "0"


class Boom(Exception):
    pass


def _failing_serializer(file):
    file.write(b"half of a file")
    raise Boom("disk full")


@pytest.mark.parametrize("content", [_failing_serializer, "text", b"bytes"])
def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch, content):
    path = tmp_path / "results.json"
    path.write_text("old content")
    if not callable(content):  # text and bytes: fail at the flush to disk, after the data went to the temporary file

        def fail(fd):
            raise Boom("fsync failed")

        monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(Boom):
        atomic_write(path, content)
    assert path.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left behind


def test_atomic_write_of_text_bytes_and_checkpoints(tmp_path):
    atomic_write(tmp_path / "a.txt", "π ≈ 3.14")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "π ≈ 3.14"
    atomic_write(tmp_path / "a.txt", b"\x00\x01")
    assert (tmp_path / "a.txt").read_bytes() == b"\x00\x01"
    state = {"weights": torch.arange(6.0).reshape(2, 3), "task": 1}
    path = RunDir(tmp_path / "run").save_checkpoint(state)
    assert path == tmp_path / "run" / "checkpoints" / "last.ckpt"
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["task"] == 1
    mask = os.umask(0o022)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~mask  # the permissions a plain open() gives, not 0600


def test_run_dir_names_every_file(tmp_path):
    files = RunDir(tmp_path)
    names = {
        files.config: "config.yaml",
        files.results: "results.json",
        files.metrics: "metrics.csv",
        files.report: "report.html",
        files.report_log: "report.log",
        files.embeddings: "embeddings.npz",
        files.last_checkpoint: "checkpoints/last.ckpt",
        files.task_checkpoint(3): "checkpoints/task-3.ckpt",
        files.plots: "plots",
    }
    for path, name in names.items():
        assert path == tmp_path / Path(name)
