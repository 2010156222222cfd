"""Experiment tracking: TensorBoard / W&B receive what metrics.csv logs, by a global step, and at the end the run's
continual metrics (TensorBoard's HParams tab, W&B's summary and accuracy table, W&B's nested config); plain lines off
a terminal; results.json records the command line and the code's git commit."""

from __future__ import annotations

import csv
import json
import re
import struct
import subprocess
from pathlib import Path

import pytest

from protosphere import cli
from protosphere.config import load_config
from protosphere.errors import ConfigError

TINY = (
    "data: {dataset: digits}\nscenario: {num_tasks: 2}\nmodel: {backbone: mlp}\n"
    "method: {name: er, buffer_size: 20}\ntrain: {epochs: 2, batch_size: 64, log_every_n_steps: 3}\n"
    "eval: {random_init_baseline: false}\nfabric: {threads: 1}\n"
)


def tiny_config(folder: Path) -> str:
    path = folder / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("tracked")
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(
            ["run", "--no-progress", tiny_config(out), f"output_dir={out}", "name=tracked", "logging.tensorboard=true"]
        )
    assert code == 0
    return out / "tracked", stdout.getvalue()


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def tensorboard_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def tracker_tag(split: str, name: str) -> str:
    """metrics.csv's 0-based ``task<j>`` is the trackers' ``T<j+1>``, as the report counts tasks."""
    match = re.fullmatch(r"(.*/)task(\d+)", name)
    return f"{split}/{match.group(1)}T{int(match.group(2)) + 1}" if match else f"{split}/{name}"


def test_tensorboard_gets_every_metrics_csv_value_by_a_global_step(tracked_run):
    run_dir, _ = tracked_run
    events = tensorboard_events(run_dir)
    tags = set(events.Tags()["scalars"])
    rows = csv_rows(run_dir)
    names = {tracker_tag(r["split"], r["name"]) for r in rows}
    assert names <= tags, names - tags
    for tag in (
        "train/loss",
        "train/lr",
        "train/img_per_s",
        "test/head/class_il/T1",
        "test/head/task_il/T2",
        "test/head/class_il/mean_seen",
        "test/nc/nc1",
    ):
        assert tag in tags
    assert not [tag for tag in tags if re.search(r"/task\d+$", tag)]  # tasks count from 1, as in the report
    csv_t1 = [float(r["value"]) for r in rows if r["split"] == "test" and r["name"] == "head/class_il/task0"]
    assert [e.value for e in events.Scalars("test/head/class_il/T1")] == pytest.approx(csv_t1, rel=1e-5)
    # the same values, in the same order
    csv_loss = [float(r["value"]) for r in rows if r["split"] == "train" and r["name"] == "loss"]
    tb_loss = events.Scalars("train/loss")
    assert [e.value for e in tb_loss] == pytest.approx(csv_loss, rel=1e-5)
    # the global step grows through both tasks (it does not restart with a task)
    steps = [e.step for e in tb_loss]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    tasks = [int(r["task"]) for r in rows if r["split"] == "train" and r["name"] == "loss"]
    assert tasks[0] == 0 and tasks[-1] == 1
    first_of_task1 = steps[tasks.index(1)]
    assert first_of_task1 > steps[tasks.index(1) - 1]
    test_steps = [e.step for e in events.Scalars("test/head/class_il/T1")]
    assert len(test_steps) == 2 and test_steps[1] == steps[-1]  # evaluated at the last step of each task


def test_task_and_epoch_are_written_once_per_logged_step(tracked_run):
    run_dir, _ = tracked_run
    events = tensorboard_events(run_dir)
    rows = csv_rows(run_dir)
    task = events.Scalars("task")
    steps = [e.step for e in task]
    assert len(steps) == len(set(steps))  # never twice at one step (a task's end logs train and test rows)
    logged = {
        e.step for tag in events.Tags()["scalars"] if tag.startswith(("train/", "test/")) for e in events.Scalars(tag)
    }
    assert set(steps) == logged  # and at every step that logged something
    boundaries = [e.step for e in events.Scalars("test/head/class_il/T1")]  # after task 1 and after task 2
    assert [e.value for e in task if e.step in boundaries] == [0.0, 1.0]
    train_tasks = [int(r["task"]) for r in rows if r["split"] == "train" and r["name"] == "loss"]
    train_steps = [e.step for e in events.Scalars("train/loss")]
    assert {e.step: e.value for e in task if e.step in train_steps} == dict(zip(train_steps, map(float, train_tasks)))
    epoch_steps = [e.step for e in events.Scalars("epoch")]
    assert len(epoch_steps) == len(set(epoch_steps)) and set(epoch_steps) == set(train_steps)


def flatten(node, prefix: str = "") -> dict:
    """A slow reference: nested config → dotted keys (the HParams tab's hyper-parameters)."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def expected_final_metrics(results: dict) -> dict[str, float]:
    return {
        f"final/{classifier}/{setting}/{metric}": summary[metric]
        for classifier, settings in results["metrics"].items()
        for setting, summary in settings.items()
        for metric in (
            "final_average_accuracy",
            "average_incremental_accuracy",
            "average_forgetting",
            "backward_transfer",
            "forward_transfer",
        )
        if summary[metric] is not None
    }


def test_tensorboard_hparams_hold_the_config_and_the_continual_metrics(tracked_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, _ = tracked_run
    results = json.loads((run_dir / "results.json").read_text())
    events = tensorboard_events(run_dir)
    content = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(data)
        for tag, data in events.PluginTagToContent("hparams").items()
    }
    expected = expected_final_metrics(results)
    assert len(expected) == 8  # head × class-IL/task-IL × final, avg incremental, forgetting, BWT (no FWT baseline)
    experiment = content["_hparams_/experiment"].experiment
    assert {m.name.tag for m in experiment.metric_infos} == set(expected)
    config = flatten(results["config"])
    assert {h.name for h in experiment.hparam_infos} == set(config)
    values = content["_hparams_/session_start_info"].session_start_info.hparams
    assert set(values) == set(config)
    for key, value in config.items():
        held = values[key]
        if isinstance(value, bool):
            assert held.WhichOneof("kind") == "bool_value" and held.bool_value is value, key
        elif isinstance(value, (int, float)):
            assert held.WhichOneof("kind") == "number_value" and held.number_value == value, key
        elif isinstance(value, str):
            assert held.string_value == value, key
        else:  # the tab takes no lists or None: they are shown as text
            assert held.string_value == ("null" if value is None else str(value)), key
    assert values["train.epochs"].number_value == 2 and values["method.name"].string_value == "er"
    assert values["logging.tensorboard"].bool_value is True and values["data.root"].string_value == "null"
    last = max(e.step for e in events.Scalars("train/loss"))
    for tag, value in expected.items():  # the metrics' values: scalars at the run's last step
        (event,) = events.Scalars(tag)
        assert event.step == last and event.value == pytest.approx(value, rel=1e-6), tag


def test_plain_lines_per_epoch_off_a_terminal(tracked_run):
    run_dir, out = tracked_run
    lines = [line for line in out.splitlines() if " epoch " in line and line.startswith("task ")]
    assert [line.split("  ")[:2] for line in lines] == [
        ["task 1/2", "epoch 1/2"],
        ["task 1/2", "epoch 2/2"],
        ["task 2/2", "epoch 1/2"],
        ["task 2/2", "epoch 2/2"],
    ]
    for line in lines:
        assert "loss " in line and "lr " in line and "img/s" in line and "ETA run ~" in line
    assert "\x1b" not in out and "━" not in out.split("report:")[0].split("accuracy (%)")[0]
    assert f"report:  {run_dir / 'report.html'}" in out


def test_results_record_command_line_and_git_commit(tracked_run):
    run_dir, _ = tracked_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["command"].startswith(f"protosphere run --no-progress {run_dir.parent / 'tiny.yaml'} output_dir=")
    assert "logging.tensorboard=true" in results["command"]
    source = Path(__import__("protosphere").__file__).parent
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert results["code"]["git_commit"] == head.stdout.strip()
        assert isinstance(results["code"]["git_dirty"], bool)
    else:
        assert results["code"]["git_commit"] is None


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run's ``.wandb`` file, W&B's transaction log: a 7-byte header (``:W&B``,
    0xBEE1, version 0), then LevelDB-log blocks of 32 KiB whose chunks (crc32, length, type FULL/FIRST/MIDDLE/LAST)
    carry ``wandb_internal_pb2.Record`` protobufs (the file ``wandb sync`` uploads)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    block, position, records, pending = 32768, 7, [], b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST: a record is whole
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_gets_a_nested_config_the_continual_metrics_and_the_accuracy_table(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: nothing may reach the network
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    code = cli.main(
        [
            "run",
            "--no-progress",
            tiny_config(tmp_path),
            "train.epochs=1",
            "eval.neural_collapse=false",
            "eval.embeddings=false",
            "eval.random_init_baseline=true",
            f"output_dir={tmp_path}",
            "name=wb",
            "logging.wandb={project: protosphere-test, mode: offline, group: g1, tags: [a, b]}",
        ]
    )
    assert code == 0
    run_dir = tmp_path / "wb"
    results = json.loads((run_dir / "results.json").read_text())
    folder = run_dir / "wandb"
    run_id = (folder / "run-id").read_text().strip()
    runs = list(folder.glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list(folder.iterdir())
    records = wandb_records(next(runs[0].glob("*.wandb")))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == run_id and run.project == "protosphere-test" and run.run_group == "g1"
    # the config: nested and typed as results.json holds it (lists stay lists, None stays None)
    config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
    assert config == results["config"]
    assert config["logging"]["wandb"]["tags"] == ["a", "b"] and config["data"]["root"] is None
    assert config["train"]["epochs"] == 1 and config["eval"]["random_init_baseline"] is True
    # the summary: every continual metric of every classifier and setting (FWT too: a random-init baseline ran)
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for u in record.summary.update:
                summary["/".join(u.nested_key) if u.nested_key else u.key] = json.loads(u.value_json)
    expected = expected_final_metrics(results)
    assert "final/head/task_il/forward_transfer" in expected
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-12), key
    # the accuracy matrices as one table: classifier, setting, after task, accuracy on T1..Tn
    table = json.loads((runs[0] / "files" / summary["accuracy_matrix/path"]).read_text())
    assert table["columns"] == ["classifier", "setting", "after_task", "T1", "T2"]
    assert table["data"] == [
        [classifier, setting, f"T{t + 1}", *row]
        for classifier, settings in results["accuracy"].items()
        for setting, matrix in settings.items()
        for t, row in enumerate(matrix)
    ]


def test_logging_config_and_missing_packages(monkeypatch):
    config = load_config(None, ["logging.wandb=true"])
    assert config.logging.wandb.mode == "offline" and config.logging.wandb.project == "protosphere"
    assert load_config(None, ["logging.wandb=false"]).logging.wandb is None
    with pytest.raises(ConfigError, match="did you mean `logging.tensorboard`"):
        load_config(None, ["logging.tensorbord=true"])
    with pytest.raises(ConfigError, match="logging.wandb.mode"):
        load_config(None, ["logging.wandb={mode: sometimes}"])
    import importlib.util

    from protosphere.runs.loggers import check_trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tensorboard", "tensorboardX", "wandb") else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install protosphere\[tensorboard\]"):
        check_trackers(load_config(None, ["logging.tensorboard=true"]))
    with pytest.raises(ConfigError, match=r"pip install protosphere\[wandb\]"):
        check_trackers(load_config(None, ["logging.wandb=true"]))
    check_trackers(load_config(None, []))  # nothing asked, nothing needed


def test_trackers_do_not_change_the_fingerprint():
    from protosphere.config import config_fingerprint

    assert config_fingerprint(
        load_config(None, ["logging.tensorboard=true", "logging.wandb=true"])
    ) == config_fingerprint(load_config(None, []))


def test_run_eta_counts_training_left_and_evaluations_left(monkeypatch):
    from protosphere.runs import progress as progress_module

    clock = {"now": 0.0}
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock["now"])
    p = progress_module.RunProgress(None, False, 3, [10, 10, 10])
    p.start_evaluation("untrained", 4, count=False)
    clock["now"] = 2.0
    p.end_evaluation()  # 2 s: the estimate of an evaluation until one after a task is timed
    p.start_task(0, 10, 0)
    clock["now"] = 7.0
    p.train_step(4, 0, 1)  # 5 steps in 5 s
    assert p.eta_run() == pytest.approx((5 + 20) * 1.0 + 3 * 2.0)
    clock["now"] = 12.0
    p.train_step(9, 0, 1)
    p.start_evaluation("after task 1", 4)
    clock["now"] = 13.0  # 1 s into an evaluation expected to take 2 s; training time stays 10 s for 10 steps
    assert p.eta_run() == pytest.approx(20 * 1.0 + 2 * 2.0 + 1.0)
    clock["now"] = 16.0
    assert p.end_evaluation() == pytest.approx(4.0)
    assert p.eta_run() == pytest.approx(20 * 1.0 + 2 * 4.0)  # measured evaluations replace the estimate
    p.start_task(1, 12, 0)  # the exact step count of a task replaces the plan's
    clock["now"] = 22.0
    p.train_step(5, 0, 1)  # 16 steps in 16 s of training
    assert p.eta_run() == pytest.approx((6 + 10) * 1.0 + 2 * 4.0)
    clock["now"] = 28.0
    p.train_step(11, 0, 1)
    p.start_evaluation("after task 2", 4)
    clock["now"] = 34.0
    p.end_evaluation()  # 6 s: evaluations grow with the seen data, the latest one is the estimate
    assert p.eta_run() == pytest.approx(10 * 1.0 + 1 * 6.0)
