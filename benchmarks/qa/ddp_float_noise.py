"""Is a gap between 1 and 2 DDP processes a real difference or amplified float rounding? Measured, two ways.

1. **Whole runs, 1 vs 2 processes, float32 and float64** (``--runs``): the same config through the CLI on one process
   and on two gloo processes (``fabric.devices=2 fabric.strategy=ddp``), in ``32-true`` and ``64-true``; printed: the
   largest gap between the logged losses, and the largest gap between the final parameters relative to each tensor's
   largest entry. A real difference (another batch, another gradient, another buffer) shows in float64 as in float32;
   rounding shows in float64 at ~1e-15.
2. **How fast the training dynamics amplify a rounding-sized difference** (``--sensitivity``): one process, two copies
   of the same method from the same weights, one of them with every parameter multiplied by (1 ± 2⁻²⁴) (half a
   float32 ulp: the size of the differences a different summation order leaves after one step), trained on the same
   batches as the engine draws them; printed: the relative parameter gap after each step, and its growth per step.
   Where it grows by orders of magnitude within a few dozen steps, two float32 runs whose kernels round differently
   (half-batch GEMMs on each rank, a different CPU's kernels) cannot stay equal however correct the code is; only
   float64 shows that the computation is the same.
3. **How far the linear probe amplifies it** (``--probe``): the probe of a float64 FNC2 run on sklearn's digits refitted
   on the same features times (1 + 1e-13·noise).

Usage (the config of the reliability report: SupCon, MLP, no augmentation, 5 % of Fashion-MNIST, 2 epochs)::

    python benchmarks/qa/ddp_float_noise.py --runs --sensitivity --probe --out benchmarks/results/ddp_float_noise.txt
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

CONFIG = "configs/nc/supcon.yaml"
OVERRIDES = [
    "model.backbone=mlp",
    "train.augmentation=none",
    "data.train_fraction=0.05",
    "train.epochs=2",
    "fabric.threads=1",
    "train.log_every_n_steps=1",
    "eval.report=off",
    "eval.neural_collapse=false",
    "eval.random_init_baseline=false",
]
ROOT = Path(__file__).resolve().parents[2]


def _losses(run_dir: Path) -> dict:
    with open(run_dir / "metrics.csv") as f:
        return {
            (r["task"], int(r["step"])): float(r["value"])
            for r in csv.DictReader(f)
            if r["split"] == "train" and r["name"] == "loss"
        }


def _relative_gaps(a: dict, b: dict) -> dict:
    return {
        k: float((v - b[k]).abs().max() / v.abs().max().clamp_min(1e-30))
        for k, v in a.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    }


def whole_runs(config: str, overrides: list[str], out) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("32-true", "64-true"):
            dirs = {}
            for procs in (1, 2):
                name = f"p{procs}-{precision}"
                ddp = ["fabric.accelerator=cpu", "fabric.devices=2", "fabric.strategy=ddp"] if procs == 2 else []
                cmd = [
                    sys.executable,
                    "-m",
                    "protosphere.cli",
                    "run",
                    config,
                    *overrides,
                    *ddp,
                    f"fabric.precision={precision}",
                    f"name={name}",
                    f"output_dir={tmp}",
                    "--no-progress",
                ]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
                if proc.returncode:
                    raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
                dirs[procs] = Path(tmp) / name
            la, lb = _losses(dirs[1]), _losses(dirs[2])
            steps = sorted(la)
            loss_gaps = [abs(la[k] - lb[k]) for k in steps]
            first = next((i for i, g in enumerate(loss_gaps) if g > 0), None)
            pa = torch.load(dirs[1] / "checkpoints" / "last.ckpt", weights_only=True)["method"]
            pb = torch.load(dirs[2] / "checkpoints" / "last.ckpt", weights_only=True)["method"]
            gaps = _relative_gaps(pa, pb)
            worst = max(gaps, key=gaps.get)
            print(
                f"{precision}: {len(steps)} steps; logged losses (6 significant digits) first differ at step "
                f"{first}, largest gap {max(loss_gaps):.3g}; final parameters: largest relative gap "
                f"{gaps[worst]:.3g} ({worst}), median {sorted(gaps.values())[len(gaps) // 2]:.3g}",
                file=out,
                flush=True,
            )


def sensitivity(config: str, overrides: list[str], out, method_name: str | None = None) -> None:
    from protosphere.config import load_config
    from protosphere.data.scenarios import model_input
    from protosphere.methods.base import StepContext, TaskContext
    from protosphere.optim import build_optimizer, lr_factor, set_lr
    from protosphere.runs.engine import epoch_order, train_step
    from protosphere.runs.runner import build_method, build_scenario_from_config, precision_dtype

    torch.set_num_threads(1)
    extra = [f"method={{name: {method_name}}}"] if method_name else []
    cfg = load_config(ROOT / config, overrides + extra)
    scenario = build_scenario_from_config(cfg)
    for dtype, precision in ((torch.float32, "32-true"), (torch.float64, "64-true")):
        copies = []
        for perturb in (False, True):
            torch.manual_seed(cfg.seed)
            method = build_method(cfg, scenario).to(dtype)
            if perturb:
                g = torch.Generator().manual_seed(123)
                with torch.no_grad():
                    for p in method.parameters():
                        sign = torch.randint(0, 2, p.shape, generator=g).to(p.dtype) * 2 - 1
                        p.mul_(1 + sign * 2.0**-24)
            copies.append(method)
        with precision_dtype(precision):
            context = TaskContext.of(scenario, 0, torch.device("cpu"))
            optimizers = []
            for method in copies:
                method.train()
                method.begin_task(context)
                optimizers.append(build_optimizer(cfg.optimizer, method.parameters()))
            images, labels = copies[0].training_data(context)
            batch, epochs = cfg.train.batch_size, cfg.train.epochs_for(0)
            per_epoch = max(1, len(labels) // batch)
            total = epochs * per_epoch
            curve = []
            for step in range(total):
                epoch, index = divmod(step, per_epoch)
                rows = epoch_order(cfg.seed, 0, epoch, len(labels))[index * batch : (index + 1) * batch]
                where = StepContext(
                    task=0, epoch=epoch, step=step, steps_in_task=total, global_step=step, epochs_in_task=epochs
                )
                for method, optimizer in zip(copies, optimizers):
                    set_lr(optimizer, cfg.optimizer.lr, lr_factor(cfg.optimizer, step, total, per_epoch))
                    torch.manual_seed(step)  # any randomness inside the step is the same for both copies
                    train_step(method, optimizer, model_input(images[rows]), labels[rows], where)
                a = {n: p.detach() for n, p in copies[0].named_parameters()}
                gap = max(
                    float((p.detach() - a[n]).abs().max() / a[n].abs().max()) for n, p in copies[1].named_parameters()
                )
                curve.append(gap)
        shown = [s for s in (0, 1, 2, 4, 9, 14, 19, total - 1) if s < total]
        growth = (curve[-1] / curve[0]) ** (1 / max(1, total - 1)) if curve[0] > 0 else float("nan")
        print(
            f"{cfg.method.name} {precision}: start gap 2^-24 = {2.0**-24:.2g}; relative parameter gap after step "
            + ", ".join(f"{s + 1}: {curve[s]:.2g}" for s in shown)
            + f"; growth x{growth:.2f} per step over {total} steps",
            file=out,
            flush=True,
        )


def probe_sensitivity(out) -> None:
    """The linear probe (the headline classifier of co2l/fnc2) refitted on the same features multiplied by
    (1 + 1e-13·N(0, 1)): how much of a rounding-sized difference in the features survives into its predictions."""
    import protosphere

    torch.set_num_threads(1)
    for augmentation in ("contrastive", "none"):
        with tempfile.TemporaryDirectory() as tmp:
            run = protosphere.run(
                str(ROOT / "configs/seq-fmnist/fnc2.yaml"),
                **{
                    "data.dataset": "digits",
                    "model.backbone": "mlp",
                    "train.epochs": 1,
                    "train.batch_size": 32,
                    "train.augmentation": augmentation,
                    "fabric.precision": "64-true",
                    "fabric.threads": 1,
                    "eval.report": "off",
                    "output_dir": tmp,
                    "name": "probe",
                },
            )
            _refit_probes(run, f"augmentation={augmentation}", out)


def _refit_probes(run, label: str, out) -> None:
    from protosphere.evaluation import fit_linear_probe

    cfg, num_classes = run.model.config, run.scenario.num_classes
    options = dict(
        epochs=cfg.probe_epochs,
        lr=cfg.probe_lr,
        batch_size=cfg.probe_batch_size,
        class_balanced=cfg.probe_class_balanced,
        seed=0,
        schedule=cfg.probe_schedule,
        min_steps=cfg.probe_min_steps,
    )
    for task in run.scenario.tasks:
        x, y = run.encode(task.train_images), task.train_labels  # float64, as the run computed them
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
        a = fit_linear_probe(x, y, num_classes, **options)
        b = fit_linear_probe(x * (1 + 1e-13 * noise), y, num_classes, **options)
        changed = float((a(x).argmax(1) != b(x).argmax(1)).double().mean())
        gap = float((a.weight - b.weight).abs().max() / a.weight.abs().max())
        steepness = cfg.probe_lr * float(x.square().sum(1).mean())
        print(
            f"{label}, probe on task {task.classes}: features perturbed by 1e-13 -> weights {gap:.2g} apart, "
            f"{100 * changed:.1f} % of predictions change; lr * mean |x|^2 = {steepness:.0f} (plain SGD on a "
            "convex loss is stable below ~2)",
            file=out,
            flush=True,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", action="store_true", help="1 vs 2 processes, whole runs, float32 and float64")
    parser.add_argument("--sensitivity", action="store_true", help="growth of a half-ulp parameter perturbation")
    parser.add_argument("--probe", action="store_true", help="how far the linear probe amplifies 1e-13 feature noise")
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--out", type=Path, help="also write the output here")
    args = parser.parse_args(argv)

    class Tee:
        def __init__(self, *streams):
            self.streams = streams

        def write(self, text):
            for s in self.streams:
                s.write(text)

        def flush(self):
            for s in self.streams:
                s.flush()

    handle = open(args.out, "w") if args.out else None
    out = Tee(sys.stdout, *([handle] if handle else []))
    from protosphere.provenance import environment

    env = environment()
    print(
        f"machine: {env.get('cpu')}, torch {torch.__version__}; config {args.config} " + " ".join(OVERRIDES), file=out
    )
    if args.runs:
        whole_runs(args.config, OVERRIDES, out)
    if args.sensitivity:
        sensitivity(args.config, OVERRIDES, out)
        sensitivity(args.config, OVERRIDES, out, method_name="finetune")
    if args.probe:
        probe_sensitivity(out)
    if handle:
        handle.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
