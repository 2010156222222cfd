"""Experiment tracking: TensorBoard / W&B receive what metrics.csv logs, by a global step; plain lines off a
terminal; results.json records the command line and the code's git commit."""

from __future__ import annotations

import csv
import json
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


def test_tensorboard_gets_every_metrics_csv_value_by_a_global_step(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    rows = csv_rows(run_dir)
    names = {f"{r['split']}/{r['name']}" for r in rows}
    assert names <= tags, names - tags
    for tag in (
        "train/loss",
        "train/lr",
        "train/img_per_s",
        "test/head/class_il/task0",
        "test/head/task_il/task1",
        "test/head/class_il/mean_seen",
        "test/nc/nc1",
    ):
        assert tag in tags
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
    test_steps = [e.step for e in events.Scalars("test/head/class_il/task0")]
    assert len(test_steps) == 2 and test_steps[1] == steps[-1]  # evaluated at the last step of each task


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


def test_wandb_offline_writes_under_the_run_folder(tmp_path, monkeypatch):
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
            f"output_dir={tmp_path}",
            "name=wb",
            "logging.wandb={project: protosphere-test, mode: offline}",
        ]
    )
    assert code == 0
    folder = tmp_path / "wb" / "wandb"
    run_id = (folder / "run-id").read_text().strip()
    runs = list(folder.glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list(folder.iterdir())
    assert (list(runs[0].glob("*.wandb"))[0]).stat().st_size > 0


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
