"""Determinism: one seed fixes data order, augmentation, initialisation and class order; and mixed precision runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from protosphere.cli import main


def write_config(path: Path, output: Path) -> Path:
    path.write_text(
        "data: {dataset: digits, train_fraction: 0.3}\n"
        "scenario: {num_tasks: 2, shuffle_classes: true}\n"
        "model: {backbone: mlp, mlp_hidden: [32]}\n"
        "method: {name: er, buffer_size: 20}\n"
        "train: {epochs: 1, batch_size: 8, augmentation: supervised}\n"
        "eval: {neural_collapse: false}\n"
        f"output_dir: {output}\n"
        "fabric: {threads: 1}\n"
    )
    return path


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[dict, dict]:
    config = write_config(tmp_path / "cfg.yaml", tmp_path / "runs")
    assert main(["run", str(config), f"name={name}", "--no-progress", *overrides]) == 0
    run_dir = tmp_path / "runs" / name
    results = json.loads((run_dir / "results.json").read_text())
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return results, state["method"]


def test_same_seed_identical_different_seed_differs(tmp_path):
    a, wa = run(tmp_path, "a", "seed=3")
    b, wb = run(tmp_path, "b", "seed=3")
    c, wc = run(tmp_path, "c", "seed=4")
    assert a["accuracy"] == b["accuracy"] and a["random_init"] == b["random_init"]
    assert a["scenario"]["class_order"] == b["scenario"]["class_order"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa if isinstance(wa[k], torch.Tensor))
    assert c["scenario"]["class_order"] != a["scenario"]["class_order"] or c["accuracy"] != a["accuracy"]
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if isinstance(wa[k], torch.Tensor) and k in wc)


def test_bf16_mixed_precision_cpu_run(tmp_path):
    results, weights = run(tmp_path, "bf16", "fabric.precision=bf16-mixed", "fabric.accelerator=cpu")
    assert results["environment"]["precision"] == "bf16-mixed"
    matrix = results["accuracy"]["head"]["class_il"]
    assert len(matrix) == 2 and all(math.isfinite(a) for row in matrix for a in row)
    assert all(
        torch.isfinite(w).all() and w.dtype == torch.float32
        for k, w in weights.items()
        if isinstance(w, torch.Tensor) and w.is_floating_point()
    )
