"""The run record (results.json's schema) and the run directory's one atomic write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from protosphere.config import validate_config
from protosphere.errors import RunError
from protosphere.record import EpochNeuralCollapse, RunRecord
from protosphere.rundir import RunDir, atomic_write, read_record
from protosphere.runner import run

TINY = {"data": {"dataset": "digits"}, "scenario": {"num_tasks": 2}, "model": {"backbone": "mlp"},
        "train": {"epochs": 2, "batch_size": 64, "augmentation": "none"}, "eval": {"report": "off"},
        "fabric": {"threads": 1}}

# method and eval options of the tiny runs: replay with per-epoch evaluation and corruptions (confusion, random-init
# baseline, corruption errors), FNC2 (prototype diagnostics, NC metrics with nc3/nc4, three classifiers with their
# fit timings), LwF without NC metrics and without the baseline (the optional keys at their other values)
RUNS = {
    "er": ({"name": "er", "buffer_size": 30},
           {"per_epoch": True, "corruptions": ["gaussian_noise", "contrast"], "corruption_severities": [1, 3]}),
    "fnc2": ({"name": "fnc2", "buffer_size": 20, "projection_dim": 16, "probe_epochs": 1, "probe_min_steps": 10,
              "classifiers": ["nearest_prototype", "ncm", "linear_probe"]}, {"per_epoch": True}),
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
    results, run_dir = tiny_runs[name]
    text = (run_dir / "results.json").read_text()
    # the file is what json.dumps of the runner's results wrote before the record existed: same keys, order, floats
    assert text == json.dumps(results, indent=2)
    record = read_record(run_dir)
    assert record.to_json() == text
    assert set(json.loads(text)) <= set(RunRecord.model_fields)
    assert "nc_epochs" not in results and "embeddings" not in results  # the duplicate and the dead key are gone
    assert record.accuracy == results["accuracy"]
    assert record.headline_classifier == next(iter(results["accuracy"]))


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


def test_load_run_reads_the_record(tiny_runs):
    import protosphere

    results, run_dir = tiny_runs["fnc2"]
    loaded = protosphere.load_run(run_dir)
    assert loaded.record == read_record(run_dir) and loaded.results == results
    assert loaded.classifiers == list(results["accuracy"]) and loaded.checkpoint_path().is_file()


def test_epoch_nc_metrics_come_from_per_epoch(tiny_runs):
    """What earlier versions stored twice as ``nc_epochs`` is derived from ``per_epoch``, entry for entry."""
    results, run_dir = tiny_runs["fnc2"]
    derived = read_record(run_dir).epoch_neural_collapse()
    expected = [{"task": e["task"], "epoch": e["epoch"], **e["neural_collapse"]} for e in results["per_epoch"]
                if e["neural_collapse"]]
    assert len(expected) == 4 and [e.model_dump(exclude_none=True) for e in derived] == expected


def test_old_file_with_nc_epochs_and_without_newer_keys_loads():
    old = {  # the keys of the first protosphere versions: no classifier_data, fingerprint, code, confusion, ...
        "name": "er-seed0", "status": "complete", "seed": 0, "method": "er", "headline_classifier": "head",
        "scenario": {"name": "seq-digits", "kind": "class_il", "num_tasks": 2, "num_classes": 4,
                     "class_order": [0, 1, 2, 3], "class_names": ["0", "1", "2", "3"], "tasks": [[0, 1], [2, 3]]},
        "accuracy": {"head": {"class_il": [[90.0, 0.0], [40.0, 80.0]], "task_il": [[90.0, 50.0], [70.0, 85.0]]}},
        "metrics": {"head": {"class_il": {"final_average_accuracy": 60.0}}},
        "random_init": None, "neural_collapse": [None, {"split": "test", "classes": 4, "nc1": 0.5, "equinorm": 0.1}],
        "nc_epochs": [{"task": 1, "epoch": 0, "nc1": 0.7, "equinorm": 0.2}],
        "timings": {"total_s": 3.5}, "environment": {"torch": "2.0", "device": "cpu"},
        "config": {"method": {"name": "er"}},
    }
    record = RunRecord.from_data(old)
    assert record.epoch_neural_collapse() == [EpochNeuralCollapse(task=1, epoch=0, nc1=0.7, equinorm=0.2)]
    assert record.summary().final_average_accuracy == 60.0 and record.summary().forgetting is None
    assert record.code is None and record.classifier_data == {} and record.timings.tasks == []
    assert record.to_data() == old  # nothing is added to a file that lacked it


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["metrics"]["head"]["class_il"].update(final_average_acuracy=1.0),
     "unknown key `metrics.head.class_il.final_average_acuracy`"),
    (lambda d: d.update(neural_colapse=[]), "unknown key `neural_colapse`"),
    (lambda d: d["timings"].update(total_s="long"), "`timings.total_s`: input should be a valid number"),
    (lambda d: d["accuracy"]["head"].update(clas_il=[[1.0]]), "unknown key `accuracy.head.clas_il` (input should be 'class_il' or 'task_il')"),
    (lambda d: d["scenario"].update(num_tasks=[2]), "`scenario.num_tasks`: input should be a valid integer"),
])
def test_broken_file_fails_with_one_clear_sentence(tmp_path, change, expected):
    data = {"headline_classifier": "head", "accuracy": {"head": {"class_il": [[50.0]]}},
            "metrics": {"head": {"class_il": {"final_average_accuracy": 50.0}}},
            "scenario": {"num_tasks": 1}, "timings": {"total_s": 1.0}}
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


def test_writing_an_invalid_record_leaves_the_old_file(tmp_path):
    files = RunDir(tmp_path)
    good = files.write_results({"accuracy": {"head": {"class_il": [[50.0]]}}})
    before = files.results.read_text()
    with pytest.raises(RunError, match="unknown key `acuracy`"):
        files.write_results({"accuracy": {}, "acuracy": {}})
    assert files.results.read_text() == before and RunRecord.from_data(json.loads(before)) == good


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
    names = {files.config: "config.yaml", files.results: "results.json", files.metrics: "metrics.csv",
             files.report: "report.html", files.report_log: "report.log", files.embeddings: "embeddings.npz",
             files.last_checkpoint: "checkpoints/last.ckpt", files.task_checkpoint(3): "checkpoints/task-3.ckpt",
             files.plots: "plots"}
    for path, name in names.items():
        assert path == tmp_path / Path(name)
