"""What a shared folder and a careless user do to a run, in-process: the file system says no (a full disk, a folder
that cannot be read or removed, no home), a symlink out of the run folder, input that validates but should not, a
broken stdout, and the leftovers of a killed run. Each ends in one `error:` line with exit status 2 and loses
nothing, or (stdout, leftovers) does not disturb the run at all. The cases that fit one process on a fresh folder
are in tests/bad_inputs.py as well."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from protosphere.cli import main

ROOT = Path(__file__).resolve().parents[1]

TINY = (
    "data: {dataset: digits, train_fraction: 0.3}\n"
    "scenario: {num_tasks: 2}\n"
    "model: {backbone: mlp, mlp_hidden: [16]}\n"
    "method: {name: finetune}\n"
    "train: {epochs: 1, batch_size: 16, augmentation: none}\n"
    "eval: {neural_collapse: false, random_init_baseline: false, report: off}\n"
    "fabric: {threads: 1}\n"
)


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOSPHERE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = tmp_path / "cfg.yaml"
    config.write_text(TINY + f"output_dir: {tmp_path / 'runs'}\nname: run\n")
    return {"tmp": tmp_path, "config": str(config), "run": tmp_path / "runs" / "run"}


def fails(capsys, args: list[str]) -> str:
    """Run the CLI; exit status 2 and one `error:` line on stderr, which is returned."""
    capsys.readouterr()
    code = main([*args, "--no-progress"] if args[0] == "run" else args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


# --------------------------------------------------------------------------------------- the file system says no
def test_full_disk_at_a_checkpoint_keeps_the_previous_one(world, capsys, monkeypatch):
    """ENOSPC while task 1's checkpoint is written: one line naming the file and what to free, saying the last
    checkpoint is intact; it is (task 0's, whole), and no temporary file is left."""
    import protosphere.runs.rundir as rundir

    original = rundir.atomic_write

    def full_disk(path, content):
        if Path(path).name != "task-1.ckpt":
            return original(path, content)

        def write_half(file):
            file.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")  # a failing write names no file

        return original(path, write_half)

    monkeypatch.setattr(rundir, "atomic_write", full_disk)
    line = fails(capsys, ["run", world["config"]])
    assert "task-1.ckpt" in line and "ENOSPC" in line and "free space" in line
    assert "last.ckpt is intact" in line and "--resume" in line
    folder = world["run"] / "checkpoints"
    state = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert (state["task"], state["phase"]) == (0, "task_done")
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "task-0.ckpt"]  # no .tmp left
    assert not (world["run"] / "results.json").exists()
    monkeypatch.setattr(rundir, "atomic_write", original)
    assert main(["run", world["config"], "--resume", "--no-progress"]) == 0  # and it continues from there


def test_unreadable_data_folder(world, capsys, monkeypatch):
    import protosphere.runs.runner as runner

    def denied(config):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/mnist/train-images-idx3-ubyte.gz")

    monkeypatch.setattr(runner, "build_scenario_from_config", denied)
    line = fails(capsys, ["run", world["config"]])
    assert "/data/mnist/train-images-idx3-ubyte.gz" in line and "permissions" in line
    assert not world["run"].exists()


def test_no_home_directory(world, capsys, monkeypatch):
    def no_home(cls=None):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(Path, "home", classmethod(no_home))
    line = fails(capsys, ["run", world["config"], "data.dataset=mnist"])
    assert "HOME" in line
    assert not world["run"].exists()


def test_overwrite_checks_the_whole_folder_can_go_before_removing_anything(world, capsys, monkeypatch):
    import os

    import protosphere.runs.runner as runner

    assert main(["run", world["config"], "--no-progress"]) == 0
    before = snapshot(world["run"])
    read_only = str(world["run"] / "checkpoints")
    real_access = os.access
    monkeypatch.setattr(runner.os, "access", lambda path, mode: path != read_only and real_access(path, mode))
    line = fails(capsys, ["run", world["config"], "--overwrite"])
    assert read_only in line and "not writable" in line
    assert snapshot(world["run"]) == before


# ------------------------------------------------------------------------------------------------------- symlinks
def test_resume_never_writes_through_a_metrics_link(world, capsys):
    """metrics.csv is cut back and appended on --resume: as a link to a file outside, that file would be cut and
    written. The run is refused and the file stays as it was."""
    assert main(["run", world["config"], "train.checkpoint_every_n_steps=5", "--no-progress"]) == 0
    (world["run"] / "results.json").unlink()
    outside = world["tmp"] / "someone-elses.csv"
    outside.write_text("a,b\n" + "1,2\n" * 5000)
    before = outside.read_bytes()
    (world["run"] / "metrics.csv").unlink()
    (world["run"] / "metrics.csv").symlink_to(outside)
    line = fails(capsys, ["run", world["config"], "train.checkpoint_every_n_steps=5", "--resume"])
    assert "metrics.csv" in line and "symbolic link" in line
    assert outside.read_bytes() == before


def test_report_refuses_a_plots_link(world, capsys):
    assert main(["run", world["config"], "--no-progress"]) == 0
    elsewhere = world["tmp"] / "elsewhere"
    elsewhere.mkdir()
    (world["run"] / "plots").symlink_to(elsewhere, target_is_directory=True)
    line = fails(capsys, ["report", str(world["run"])])
    assert "plots" in line and "symbolic link" in line
    assert not any(elsewhere.iterdir()) and not (world["run"] / "report.html").exists()


# ------------------------------------------------------------------------------- input that validates but should not
def test_yaml_refuses_duplicate_keys_and_alias_bombs_but_keeps_anchors_and_merges():
    from protosphere.config import load_yaml
    from protosphere.errors import ConfigError

    assert load_yaml("a: &x {p: 1, q: 2}\nb:\n  <<: *x\n  q: 3\nc: [*x, *x]\n") == {
        "a": {"p": 1, "q": 2},
        "b": {"p": 1, "q": 3},
        "c": [{"p": 1, "q": 2}, {"p": 1, "q": 2}],
    }
    with pytest.raises(ConfigError, match=r"`epochs` appears twice in one mapping \(lines 2 and 4\)"):
        load_yaml("train:\n  epochs: 1\n  batch_size: 8\n  epochs: 2\n")
    bomb = "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 8)}]\n" for i in range(7)
    )
    assert len(bomb) < 400
    # level k holds 1 + 8 x (level k-1) nodes, level 0 nine; plus the root and its eight keys
    levels = [9]
    for _ in range(7):
        levels.append(1 + 8 * levels[-1])
    with pytest.raises(ConfigError, match=f"expand into {1 + 8 + sum(levels):,} values"):
        load_yaml(bomb)


def test_output_dir_expands_the_home_folder(world, monkeypatch):
    home = world["tmp"] / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(world["tmp"])
    assert main(["run", world["config"], "output_dir=~/runs", "--no-progress"]) == 0
    assert (home / "runs" / "run" / "results.json").is_file()
    assert not (world["tmp"] / "~").exists()


# ------------------------------------------------------------------------------------------ the terminal goes away
def cli_process(world, *args, stdout) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "protosphere.cli", "run", world["config"], *args, "--no-progress"],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        cwd=world["tmp"],
    )


def test_a_pipe_closed_after_the_first_line_does_not_stop_the_run(world):
    """`protosphere run ... | head -1`: the reader goes away after one line, the run trains on and writes results."""
    proc = cli_process(world, "train.epochs=4", stdout=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert first.strip()
    assert proc.returncode == 0 and not err.strip(), err.decode()
    assert json.loads((world["run"] / "results.json").read_text())["status"] == "complete"


def test_stdout_on_a_full_device_does_not_stop_the_run(world):
    with open("/dev/full", "w") as full:
        proc = cli_process(world, stdout=full)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and not err.strip(), err.decode()
    assert (world["run"] / "results.json").is_file()


# ------------------------------------------------------------------------------------- what a killed run leaves
def test_resume_removes_temporary_files_and_cuts_a_partial_metrics_row(world, capsys):
    args = [world["config"], "train.checkpoint_every_n_steps=5", "--no-progress"]
    assert main(["run", *args, "name=full"]) == 0
    assert main(["run", *args]) == 0
    (world["run"] / "results.json").unlink()
    for leftover in (world["run"] / "checkpoints" / ".last.ckpt.0123abcd.tmp", world["run"] / ".results.json.x.tmp"):
        leftover.write_bytes(b"half a file")
    metrics = world["run"] / "metrics.csv"
    state = torch.load(world["run"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    metrics.write_bytes(metrics.read_bytes()[: state["metrics_bytes"]] + b"12.5,1,0,3,tr")  # a row cut by a kill
    assert main(["run", *args, "--resume"]) == 0
    assert not list(world["run"].rglob("*.tmp"))

    def places(path):  # (task, epoch, step, split, name) of every row: each step logged once, in order
        return [line.split(",")[1:6] for line in path.read_text().splitlines()]

    assert places(metrics) == places(world["tmp"] / "runs" / "full" / "metrics.csv")


def test_a_partial_last_row_is_cut_before_appending(tmp_path):
    from protosphere.runs.engine import MetricsLog

    path = tmp_path / "metrics.csv"
    path.write_text("time,task,epoch,step,split,name,value\n0.1,0,0,0,train,loss,2.3\n0.2,0,0,1,tra")
    log = MetricsLog(path, append=True)
    log.log("train", {"loss": 1.5}, task=0, epoch=0, step=2)
    log.close()
    lines = path.read_text().splitlines()
    assert lines[:2] == ["time,task,epoch,step,split,name,value", "0.1,0,0,0,train,loss,2.3"]
    assert len(lines) == 3 and lines[2].endswith(",0,0,2,train,loss,1.5")
    path.write_text("time,task,ep")  # not even the header is whole: a new file
    MetricsLog(path, append=True).close()
    assert path.read_bytes() == b"time,task,epoch,step,split,name,value\r\n"


def test_resume_without_metrics_csv_recreates_it_with_a_note(world, capsys):
    args = [world["config"], "train.checkpoint_every_n_steps=5", "--no-progress"]
    assert main(["run", *args]) == 0
    (world["run"] / "results.json").unlink()
    (world["run"] / "metrics.csv").unlink()
    capsys.readouterr()
    assert main(["run", *args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "metrics.csv is missing; it is started afresh" in " ".join(out.split())
    assert (world["run"] / "metrics.csv").read_text().startswith("time,task,epoch,step,split,name,value")
