"""DDP on 2 CPU processes (gloo): gathered contrastive losses equal single-process training on the global batch (also an
NCT step with a mixture of experts, some of them idle), and replay buffers are per rank.

One subprocess runs this file as a script; lightning-fabric's launcher starts the second rank by re-running it. Each
rank checks, for every contrastive loss and for one method step, that the loss and the parameter gradients after
DDP's averaging equal the single-process ones on the same global batch (no world-size scaling: the gather's backward
sums over ranks and DDP averages, see protosphere.distributed). Both ranks then run the real engine through the CLI
(ER on sklearn digits, fabric.devices=2 fabric.strategy=ddp), and the test checks each rank's replay buffer (buffer_size
/ 2 of the global memory) against that rank's own shard of the stream, that sizes 2 does not divide are refused before
anything is written, and that the logged loss is the global one (finetune on 2 processes logs what 1 process does).
Last, a whole float64 FNC2 + HSD run (two augmented views, distillation in task 2) on 2 processes equals the 1-process
run: losses, final weights to 1e-10, and every classifier's accuracy.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH, WORLD = 8, 2
# a whole contrastive run with distillation (task 1) and two augmented views, in float64, where 1 and 2 processes
# must agree to rounding: a real difference (a batch, an augmentation, a gradient, a buffer) shows as it does in
# float32, while float32 rounding differences, which the linear probe amplifies, do not (docs/scaling.md)
FNC2_FLOAT64 = [
    "method={name: fnc2, projection_dim: 16}",
    "train.augmentation=contrastive",
    "train.log_every_n_steps=1",
    "fabric.precision=64-true",
]


# ---------------------------------------------------------------------------------------------------------- worker
def _compare(fabric, build, loss_fn, inputs):
    """Loss and averaged gradients of ``loss_fn`` under DDP (local slices, gathered) vs one process (whole batch)."""
    from protosphere.distributed import gather_with_grad, shard_rows

    torch.manual_seed(0)
    module = build()
    reference = copy.deepcopy(module)
    rows = shard_rows(torch.arange(GLOBAL_BATCH), fabric.global_rank, fabric.world_size)
    ddp = fabric.setup_module(module)
    loss = loss_fn(ddp, [x[rows] for x in inputs], gather_with_grad(fabric))
    fabric.backward(loss)
    ref_loss = loss_fn(reference, inputs, lambda t: t)
    ref_loss.backward()
    loss_err = abs(float(loss) - float(ref_loss))
    grad_err = max(
        float((p.grad - q.grad).abs().max() / (1 + q.grad.abs().max()))
        for p, q in zip(module.parameters(), reference.parameters())
    )
    return {"loss": float(ref_loss), "loss_err": loss_err, "grad_err": grad_err}


def _loss_checks(fabric) -> dict:
    from protosphere import losses
    from protosphere.geometry import simplex_etf

    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randn(GLOBAL_BATCH, 6, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 1, 3, 0])
    prototypes = simplex_etf(4, 5, seed=0)

    def linear():
        return torch.nn.Linear(6, 5)

    def embed(m, x):
        return F.normalize(m(x), dim=1)

    def supcon(m, xs, gather):
        return losses.supcon(gather(embed(m, xs[0])), gather(xs[1]), temperature=0.5)

    def nt_xent(m, xs, gather):
        return losses.nt_xent(gather(embed(m, xs[0])), gather(embed(m, xs[1])), temperature=0.5)

    def asymmetric(m, xs, gather):
        return losses.asymmetric_supcon(gather(embed(m, xs[0])), gather(xs[1]), [1, 3], temperature=0.5)

    def fnc2(m, xs, gather):
        labels = gather(xs[1])
        return losses.fnc2(gather(embed(m, xs[0])), labels, prototypes, [1, 2, 3], [0], temperature=0.5)

    out = {
        name: _compare(fabric, linear, fn, inputs)
        for name, fn, inputs in [
            ("supcon", supcon, [x1, y]),
            ("nt_xent", nt_xent, [x1, x2]),
            ("asymmetric_supcon", asymmetric, [x1, y]),
            ("fnc2", fnc2, [x1, y]),
        ]
    }
    out["method_step"] = _method_check(fabric)
    return out


def _method_check(fabric) -> dict:
    """One training step of a RepresentationMethod whose loss is SupCon on the gathered batch, as the engine runs it."""
    from protosphere.config import MethodConfig
    from protosphere.losses import supcon
    from protosphere.methods.base import StepContext, StepOutput, Transforms
    from protosphere.methods.representation import RepresentationConfig, RepresentationMethod
    from protosphere.models import build_backbone

    class TinySupCon(RepresentationMethod):
        def training_step(self, images, labels, step):
            z = self.gather(self.embed(self.transforms.train(images)))
            loss = supcon(z, self.gather(labels), temperature=0.5)
            return StepOutput(loss, {"supcon": loss.detach()})

    torch.manual_seed(0)
    config = RepresentationConfig(name="tiny", projection_dim=4)
    assert isinstance(config, MethodConfig)
    identity = Transforms(lambda x: x, lambda x: x)
    method = TinySupCon(config, build_backbone("mlp", in_channels=1, image_size=4, hidden=(12,)), 4, identity)
    reference = copy.deepcopy(method)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(GLOBAL_BATCH, 1, 4, 4, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    ctx = StepContext(task=0, epoch=0, step=0, steps_in_task=1, global_step=0)
    out, ref, grad_err = _step_on_ranks_and_alone(fabric, method, reference, images, labels, ctx)
    return {"loss": float(ref.loss), "loss_err": abs(float(out.loss) - float(ref.loss)), "grad_err": grad_err}


def _step_on_ranks_and_alone(fabric, method, reference, images, labels, ctx):
    """One training step of ``method`` under DDP on this rank's slice of the global batch, and of its copy
    ``reference`` in this process on the whole batch; returns both outputs and the largest relative gradient gap."""
    from protosphere.distributed import gather_with_grad, shard_rows

    rows = shard_rows(torch.arange(len(labels)), fabric.global_rank, fabric.world_size)
    method.install_collectives(gather=gather_with_grad(fabric))
    model = fabric.setup_module(method)
    model.mark_forward_method("training_step")
    out = model.training_step(images[rows], labels[rows], ctx)
    fabric.backward(out.loss)
    ref = reference.training_step(images, labels, ctx)
    ref.loss.backward()
    grad_err = max(
        float((p.grad - q.grad).abs().max() / (1 + q.grad.abs().max()))
        for p, q in zip(method.parameters(), reference.parameters())
        if q.grad is not None
    )
    return out, ref, grad_err


def _nct_moe_check() -> dict:
    """One NCT step with a mixture of experts at task 1 (experts 0 and 1 active, expert 2 idle; the past model mixes
    expert 0 only) under the Fabric the runner builds for it, against one process on the global batch. The per-rank
    loss holds local means (own-task expert, distillation), so its mean over ranks is what equals the global loss."""
    from types import SimpleNamespace

    from protosphere.config import validate_config
    from protosphere.methods.base import StepContext, TaskContext
    from protosphere.runs.runner import build_fabric, build_method

    config = validate_config(
        {
            "model": {"backbone": "mlp", "mlp_hidden": [12]},
            "train": {"augmentation": "none"},
            "scenario": {"num_tasks": 3},
            "method": {
                "name": "nct",
                "mixture_of_experts": True,
                "projection_dim": 5,
                "projection_hidden": 8,
                "distill_weight": 2.0,
                "class_balanced": True,
            },
            "fabric": {"accelerator": "cpu", "devices": WORLD, "strategy": "ddp", "threads": 1},
        }
    )
    fabric = build_fabric(config)  # the runner's choice of DDP mode for this config
    find_unused = bool(fabric.strategy._ddp_kwargs.get("find_unused_parameters"))
    fabric.launch()
    scenario = SimpleNamespace(image_shape=(1, 4, 4), mean=(0.5,), std=(0.25,), num_classes=6, num_tasks=3)
    torch.manual_seed(0)
    method = build_method(config, scenario)
    g = torch.Generator().manual_seed(3)
    stored = torch.randint(0, 256, (4, 1, 4, 4), generator=g, dtype=torch.uint8)
    for t, classes in enumerate([(0, 1), (2, 3)]):
        method.begin_task(
            TaskContext(
                index=t,
                classes=classes,
                seen_classes=list(range(2 * t + 2)),
                num_tasks=3,
                train_images=stored,
                train_labels=torch.tensor([*classes, *classes]),
                previous_classes=[0, 1] if t else [],
                previous=[(stored, torch.tensor([0, 1, 0, 1]))] if t else [],
            )
        )
        with torch.no_grad():  # "training" of task t, the same on every rank (which weights does not matter here)
            for p in method.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    reference = copy.deepcopy(method)
    images = torch.rand(GLOBAL_BATCH, 1, 4, 4, generator=g)
    labels = torch.tensor([0, 2, 3, 1, 2, 0, 3, 2])  # old and new classes on both ranks
    ctx = StepContext(task=1, epoch=0, step=0, steps_in_task=1, global_step=0)
    out, ref, grad_err = _step_on_ranks_and_alone(fabric, method, reference, images, labels, ctx)
    loss = fabric.all_reduce(out.loss.detach(), reduce_op="mean")
    idle = [name for name, q in reference.named_parameters() if q.grad is None]
    # None under DDP too, so the optimiser (weight decay, momentum) leaves idle experts as one process does
    idle_ddp = sorted(name for name, p in method.named_parameters() if p.grad is None)
    return {
        "loss": float(ref.loss),
        "loss_err": abs(float(loss) - float(ref.loss)),
        "grad_err": grad_err,
        "terms": sorted(ref.terms),
        "idle": sorted(idle),
        "idle_ddp": idle_ddp,
        "find_unused": find_unused,
        "gate_grad": [float(r.abs().sum()) for r in reference.projector.gate.weight.grad],
    }


def _worker(out: Path, run_args: list[str]) -> None:
    from lightning_fabric import Fabric

    from protosphere.cli import main

    torch.set_num_threads(1)
    fabric = Fabric(accelerator="cpu", devices=WORLD, strategy="ddp")
    fabric.launch()
    checks = _loss_checks(fabric)
    checks["nct_moe_step"] = _nct_moe_check()
    # the real engine, through the CLI, in the same two processes (the runner's Fabric reuses the process group)
    code = main(["run", *run_args, "--no-progress"])
    # sizes the 2 processes do not divide are refused before anything is written; a per-rank loss is logged globally
    refused = {
        name: main(["run", *run_args, override, f"name={name}", "--no-progress"])
        for name, override in (("odd-buffer", "method.buffer_size=41"), ("odd-batch", "train.batch_size=15"))
    }
    finetune = main(["run", *run_args, "method={name: finetune}", "name=finetune", "--no-progress"])
    fnc2 = main(["run", *run_args, *FNC2_FLOAT64, "name=fnc2-f64", "--no-progress"])
    codes = {"exit": code, "refused": refused, "finetune": finetune, "fnc2": fnc2}
    if fabric.global_rank == 0:
        out.write_text(json.dumps({"checks": checks, "rank0_exit": code, **codes}))
    else:
        out.with_name(out.name + ".rank1").write_text(json.dumps({"checks": checks, **codes}))


# ----------------------------------------------------------------------------------------------------------- tests
def _digits_config(path: Path, output: Path) -> Path:
    path.write_text(
        "scenario: {num_tasks: 2, class_order: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}\n"
        "model: {backbone: mlp, mlp_hidden: [32]}\n"
        "method: {name: er, buffer_size: 40}\n"
        "train: {epochs: 1, batch_size: 16, augmentation: none, log_every_n_steps: 10}\n"
        "data: {dataset: digits, train_fraction: 0.4}\n"
        "optimizer: {lr: 0.05}\n"
        "eval: {neural_collapse: false, random_init_baseline: false}\n"
        f"output_dir: {output}\n"
        "name: ddp\n"
    )
    return path


def test_ddp_losses_gradients_and_per_rank_buffers(tmp_path):
    config = _digits_config(tmp_path / "digits.yaml", tmp_path / "runs")
    out = tmp_path / "ddp.json"
    run_args = [str(config), "fabric.devices=2", "fabric.strategy=ddp", "fabric.accelerator=cpu", "fabric.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(out), *run_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rank1 = json.loads(out.with_name(out.name + ".rank1").read_text())
    assert result["rank0_exit"] == 0 and rank1["exit"] == 0
    for codes in (result, rank1):
        assert codes["refused"] == {"odd-buffer": 2, "odd-batch": 2} and codes["finetune"] == 0 and codes["fnc2"] == 0
    assert not (tmp_path / "runs" / "odd-buffer").exists() and not (tmp_path / "runs" / "odd-batch").exists()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert any("method.buffer_size=41" in line and "global" in line for line in errors), proc.stderr[-2000:]
    assert any("train.batch_size=15" in line for line in errors), proc.stderr[-2000:]
    for checks in (result["checks"], rank1["checks"]):
        for name, c in checks.items():
            assert c["loss_err"] < 1e-5, (name, c)
            assert c["grad_err"] < 1e-5, (name, c)
            assert c["loss"] > 0, (name, c)
        # NCT-MoE at task 1: every term present, the runner asked DDP to find unused parameters, expert 2 idle (no
        # gradient, with one process or two) and its gate row masked out (zero gradient), rows 0 and 1 learning
        moe = checks["nct_moe_step"]
        assert moe["find_unused"] and moe["terms"] == ["distill", "dr", "expert_dr"], moe
        assert moe["idle"] and all(name.startswith("projector.experts.2.") for name in moe["idle"]), moe
        assert len(moe["idle"]) == 4 and moe["idle_ddp"] == moe["idle"], moe
        assert moe["gate_grad"][0] > 0 and moe["gate_grad"][1] > 0 and moe["gate_grad"][2] == 0, moe

    # per-rank replay buffers: each holds only rows of its own shard of the stream
    from protosphere.config import load_config
    from protosphere.distributed import shard_rows
    from protosphere.runs.engine import epoch_order
    from protosphere.runs.runner import build_scenario_from_config

    cfg = load_config(config)
    state = torch.load(tmp_path / "runs" / "ddp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    scenario = build_scenario_from_config(cfg)
    streams = [set(), set()]
    for t, task in enumerate(scenario.tasks):
        n, batch = len(task.train_labels), cfg.train.batch_size
        order = epoch_order(cfg.seed, t, 0, n)
        for step in range(n // batch):
            for rank in range(2):
                for row in shard_rows(order[step * batch : (step + 1) * batch], rank, 2).tolist():
                    streams[rank].add(task.train_images[row].numpy().tobytes())  # buffers keep uint8 images
    assert not streams[0] & streams[1] or len(streams[0] & streams[1]) < 5  # disjoint shards (up to duplicate images)
    buffers = []
    for rank in range(2):
        buffer = state["ranks"][rank]["tracked"]["buffer"]
        examples = buffer["data"]["examples"][: int(buffer["size"])]
        keys = {e.numpy().tobytes() for e in examples}
        assert int(buffer["size"]) == 20  # buffer_size: 40 is the global memory, 40 / 2 per rank
        assert keys <= streams[rank], f"rank {rank}'s buffer holds rows from another rank's shard"
        assert keys - streams[1 - rank], f"rank {rank}'s buffer is indistinguishable from the other rank's"
        buffers.append(keys)
    assert buffers[0] != buffers[1]
    results = json.loads((tmp_path / "runs" / "ddp" / "results.json").read_text())
    assert results["environment"]["world_size"] == 2

    # the logged loss is the global one: finetune on 2 processes trains exactly as on one (per-rank cross-entropies,
    # gradients averaged by DDP), so its logged losses equal those of one process, not rank 0's half-batch losses
    from protosphere.cli import main

    assert (
        main(["run", *run_args[:1], "method={name: finetune}", "name=finetune-1", "fabric.threads=1", "--no-progress"])
        == 0
    )
    losses = [train_losses(tmp_path / "runs" / name) for name in ("finetune", "finetune-1")]
    assert len(losses[0]) == len(losses[1]) > 3 and losses[0].keys() == losses[1].keys()
    for key, value in losses[1].items():
        assert abs(losses[0][key] - value) < 1e-4 * max(1.0, abs(value)), (key, losses[0][key], value)

    # float64 FNC2 + HSD, two views, two tasks: 2 processes train exactly what 1 process trains, and every
    # classifier scores the same (the probes, fitted on features equal to ~1e-15, to one test image)
    assert main(["run", *run_args[:1], *FNC2_FLOAT64, "name=fnc2-f64-1", "fabric.threads=1", "--no-progress"]) == 0
    one, two = tmp_path / "runs" / "fnc2-f64-1", tmp_path / "runs" / "fnc2-f64"
    losses = [train_losses(d) for d in (two, one)]
    assert len(losses[0]) == len(losses[1]) > 10 and losses[0].keys() == losses[1].keys()
    assert any(key[2] == "hsd" for key in losses[1]), "the run never distilled"
    for key, value in losses[1].items():
        assert abs(losses[0][key] - value) <= 1e-5 * max(1.0, abs(value)), (key, losses[0][key], value)
    weights = [
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["method"] for d in (two, one)
    ]
    gaps = {
        k: float((v - weights[0][k]).abs().max() / v.abs().max().clamp_min(1e-12))
        for k, v in weights[1].items()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    }
    assert gaps and max(gaps.values()) < 1e-10, sorted(gaps.items(), key=lambda kv: -kv[1])[:3]
    accuracy = [json.loads((d / "results.json").read_text())["accuracy"] for d in (two, one)]
    for name, cells in accuracy[1].items():
        for a, b in zip(sum(cells["class_il"], []), sum(accuracy[0][name]["class_il"], [])):
            tolerance = 3.0 if "probe" in name else 1e-9  # a probe cell: two of a task's ~70 test images
            assert abs(a - b) <= tolerance, (name, accuracy[0][name], cells)


def train_losses(run_dir: Path) -> dict:
    import csv

    with open(run_dir / "metrics.csv") as f:
        return {
            (r["task"], r["step"], r["name"]): float(r["value"])
            for r in csv.DictReader(f)
            if r["split"] == "train" and r["name"] not in ("lr", "img_per_s")
        }


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2:])
