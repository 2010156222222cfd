"""``fabric.precision=64-true``: every registered method trains and evaluates in float64 (parameters, batches, replayed
images, prototypes, queues, past models), which is how exactness is checked (e.g. DDP against one process,
docs/scaling.md). A float64 run computes what a float32 run does, to float32's precision."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from protosphere.cli import main
from protosphere.registry import METHODS

TWO_VIEW = {"co2l", "fnc2", "supcon", "simclr", "moco", "cassle", "sycon", "clop"}


def write_config(path: Path, output: Path, method: str) -> Path:
    augmentation = "contrastive" if method in TWO_VIEW else "supervised"
    path.write_text(
        "data: {dataset: digits, train_fraction: 0.12}\n"
        "scenario: {num_tasks: 2}\n"
        "model: {backbone: mlp, mlp_hidden: [16]}\n"
        f"method: {{name: {method}}}\n"
        f"train: {{epochs: 1, batch_size: 16, augmentation: {augmentation}, log_every_n_steps: 1}}\n"
        "eval: {neural_collapse: false, random_init_baseline: false, report: off}\n"
        f"output_dir: {output}\n"
        "fabric: {threads: 1, precision: 64-true}\n"
    )
    return path


def float_tensors(state, prefix=""):
    if isinstance(state, torch.Tensor):
        if state.is_floating_point():
            yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from float_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from float_tensors(value, f"{prefix}.{i}")


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_method_runs_in_float64(tmp_path, method):
    config = write_config(tmp_path / "cfg.yaml", tmp_path / "runs", method)
    assert main(["run", str(config), "name=f64", "--no-progress"]) == 0
    run_dir = tmp_path / "runs" / "f64"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["environment"]["precision"] == "64-true"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    tensors = dict(float_tensors(state["method"]))
    assert tensors, "the checkpoint holds no floating-point state"
    wrong = {name: t.dtype for name, t in tensors.items() if t.dtype != torch.float64}
    assert not wrong, f"float64 run kept tensors in another dtype: {wrong}"
    with open(run_dir / "metrics.csv") as f:
        losses = [float(r["value"]) for r in csv.DictReader(f) if r["split"] == "train" and r["name"] == "loss"]
    assert losses and all(v == v and abs(v) < 1e6 for v in losses)
    assert torch.get_default_dtype() == torch.float32  # the run restores the process's default dtype


def test_float64_run_computes_what_float32_does(tmp_path):
    """Same seed, no augmentation: the first logged SupCon losses of a float64 and a float32 run agree to float32's
    precision (the float64 run is the same computation, not another one)."""
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "data: {dataset: digits, train_fraction: 0.2}\n"
        "scenario: {num_tasks: 1}\n"
        "model: {backbone: mlp, mlp_hidden: [32]}\n"
        "method: {name: supcon}\n"
        "train: {epochs: 1, batch_size: 32, augmentation: none, log_every_n_steps: 1}\n"
        "eval: {neural_collapse: false, random_init_baseline: false, report: off}\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        "fabric: {threads: 1}\n"
    )
    curves = {}
    for precision in ("32-true", "64-true"):
        assert main(["run", str(config), f"name={precision}", f"fabric.precision={precision}", "--no-progress"]) == 0
        with open(tmp_path / "runs" / precision / "metrics.csv") as f:
            curves[precision] = [
                float(r["value"]) for r in csv.DictReader(f) if r["split"] == "train" and r["name"] == "loss"
            ]
    single, double = curves["32-true"], curves["64-true"]
    assert len(single) == len(double) >= 3
    for a, b in zip(single[:3], double[:3]):
        assert abs(a - b) < 1e-4 * max(1.0, abs(b)), (single[:3], double[:3])
