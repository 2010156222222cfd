"""Exact resume: a run killed with SIGKILL mid-task and continued with --resume ends with the same numbers as an
uninterrupted run (CPU, same seed), and the checkpoint holds everything that takes (RNG, optimiser, buffer,
past-model snapshot, progress, metrics.csv position)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from protosphere.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, output: Path, method: str = "method: {name: er, buffer_size: 30}") -> Path:
    path.write_text(
        "data: {dataset: digits, train_fraction: 0.5}\n"
        "scenario: {num_tasks: 3}\n"
        "model: {backbone: mlp, mlp_hidden: [32]}\n"
        f"{method}\n"
        "train: {epochs: 2, batch_size: 8, augmentation: supervised, log_every_n_steps: 5,"
        " checkpoint_every_n_steps: 7}\n"
        "optimizer: {lr: 0.05, scheduler: cosine}\n"
        "eval: {neural_collapse: false}\n"
        f"output_dir: {output}\n"
        "fabric: {threads: 1}\n"
    )
    return path


def train_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return [(r["task"], r["step"], r["name"]) for r in csv.DictReader(f) if r["split"] == "train"]


def test_sigkill_mid_task_then_resume_is_exact(tmp_path):
    config = write_config(tmp_path / "er.yaml", tmp_path / "runs")
    assert main(["run", str(config), "name=full", "--no-progress"]) == 0
    full = json.loads((tmp_path / "runs" / "full" / "results.json").read_text())

    run_dir = tmp_path / "runs" / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "protosphere.cli", "run", str(config), "name=killed", "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    wanted, seen, last_mtime = random.Random().randint(1, 4), 0, None  # kill after a random number of checkpoints
    deadline = time.time() + 120
    try:
        while seen < wanted and time.time() < deadline and proc.poll() is None:
            if ckpt.exists() and ckpt.stat().st_mtime_ns != last_mtime:
                last_mtime, seen = ckpt.stat().st_mtime_ns, seen + 1
            time.sleep(0.005)
        time.sleep(random.Random().uniform(0, 0.05))  # somewhere between two checkpoints
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {proc.stderr.read()!r}"
    assert not (run_dir / "results.json").exists()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert {"method", "optimizer", "rng", "task", "phase", "step", "global_step", "results"} <= set(state)

    assert main(["run", str(config), "name=killed", "--resume", "--no-progress"]) == 0
    resumed = json.loads((run_dir / "results.json").read_text())
    assert resumed["accuracy"] == full["accuracy"]  # exact, every classifier and setting
    assert resumed["random_init"] == full["random_init"]
    # every training step is logged exactly once, in the same places as the uninterrupted run
    assert train_rows(run_dir) == train_rows(tmp_path / "runs" / "full")


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("crash_after", [3, 4])  # mid-task (in_task checkpoint) / right after a task checkpoint
def test_resume_in_process_restores_snapshot_and_optimizer(tmp_path, monkeypatch, crash_after):
    """LwF (past-model snapshot) with momentum SGD: crash right after the n-th checkpoint write, resume, same
    numbers."""
    from protosphere.runs.engine import Checkpoints

    config = write_config(tmp_path / "lwf.yaml", tmp_path / "runs", "method: {name: lwf}")
    overrides = ["train.epochs=1", "train.checkpoint_every_n_steps=20", "--no-progress"]
    assert main(["run", str(config), "name=full", *overrides]) == 0
    full = json.loads((tmp_path / "runs" / "full" / "results.json").read_text())

    saves, original = [], Checkpoints.save

    def crashing_save(self, *args, **kwargs):
        original(self, *args, **kwargs)
        saves.append(args)
        if len(saves) == crash_after:
            raise Interrupt

    monkeypatch.setattr(Checkpoints, "save", crashing_save)
    with pytest.raises(Interrupt):
        main(["run", str(config), "name=crashed", *overrides])
    monkeypatch.setattr(Checkpoints, "save", original)
    state = torch.load(tmp_path / "runs" / "crashed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["optimizer"]["state"], "momentum buffers are saved"
    assert main(["run", str(config), "name=crashed", "--resume", *overrides]) == 0
    resumed = json.loads((tmp_path / "runs" / "crashed" / "results.json").read_text())
    assert resumed["accuracy"] == full["accuracy"]
    assert train_rows(tmp_path / "runs" / "crashed") == train_rows(tmp_path / "runs" / "full")
