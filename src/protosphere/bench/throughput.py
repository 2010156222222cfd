"""Train-step throughput (img/s) of every method next to the bare backbone, measured side by side in one run.

For each method, a task-1 state is prepared (task 0 trained for a few steps, so replay buffers are full and past-model
snapshots exist); then ``--steps`` full training steps (augmentation, replay, distillation, loss, backward, SGD step)
are timed on the same batches as two "bare" steps: the same backbone + a linear head, forward/backward of the stream
batch without augmentation (1 view) or of the batch twice (2 views), plus the SGD step. Timings interleave the three
so that machine load affects all alike; the ratio method/bare is the method's overhead (ER/DER++ also push the replay
batch through the network, so ~2× the 1-view step is their floor; two-view methods compare with the 2-view step).

    python -m protosphere.bench.throughput [--batch-size 256] [--steps 20] [--methods er der++ ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import protosphere  # noqa: F401  (before torch: protosphere's OpenMP wait policy applies, as in a run)

# isort: split
import torch
import torch.nn.functional as F

from protosphere.config import validate_config
from protosphere.data import load_dataset
from protosphere.data.scenarios import build_scenario, model_input
from protosphere.methods import method_names
from protosphere.methods.base import StepContext, TaskContext
from protosphere.models.heads import MixtureOfExperts, Predictor, ProjectionHead
from protosphere.optim import build_optimizer
from protosphere.provenance import environment
from protosphere.runs.engine import train_step
from protosphere.runs.runner import build_method

HEADS = (ProjectionHead, Predictor, MixtureOfExperts)  # the networks a method puts on top of its backbone

DEFAULT_METHOD_SETTINGS = {
    "er": {"buffer_size": 500},
    "der++": {"buffer_size": 500},
}


def batches(context: TaskContext, batch_size: int, count: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        rows = torch.randint(len(context.train_labels), (batch_size,), generator=generator)
        x = model_input(context.train_images[rows], channels_last=True)
        yield x, context.train_labels[rows]


def bench_method(name: str, scenario, args, device) -> dict:
    settings = {"name": name, **DEFAULT_METHOD_SETTINGS.get(name, {})}
    config = validate_config(
        {
            "method": settings,
            "model": {"backbone": args.backbone},
            "train": {"batch_size": args.batch_size, "augmentation": args.augmentation},
            "optimizer": {"lr": 0.01},
        }
    )
    torch.manual_seed(0)
    method = build_method(config, scenario).to(device)
    method.train()
    first = TaskContext.of(scenario, 0, device)
    method.begin_task(first)
    optimizer = build_optimizer(config.optimizer, method.parameters())
    for i, (x, y) in enumerate(batches(first, args.batch_size, args.warmup_task0_steps, seed=1)):
        train_step(method, optimizer, x, y, StepContext(0, 0, i, args.warmup_task0_steps, i))
    method.end_task(first)
    second = TaskContext.of(scenario, 1, device)
    method.begin_task(second)
    optimizer = build_optimizer(config.optimizer, method.parameters())

    bare_head = torch.nn.Linear(method.backbone.out_dim, scenario.num_classes).to(device)
    bare_params = list(method.backbone.parameters()) + list(bare_head.parameters())
    bare_optimizer = torch.optim.SGD(bare_params, lr=1e-6, momentum=0.9)
    normalize = method.transforms.eval

    def bare_step(x, y):
        loss = F.cross_entropy(bare_head(method.backbone(normalize(x))), y)
        bare_optimizer.zero_grad()
        loss.backward()
        bare_optimizer.step()

    def bare_two_view_step(x, y):
        both = torch.cat([x, x])
        loss = F.cross_entropy(bare_head(method.backbone(normalize(both))), torch.cat([y, y]))
        bare_optimizer.zero_grad()
        loss.backward()
        bare_optimizer.step()

    past_backbone = copy.deepcopy(method.backbone).eval().requires_grad_(False)

    def bare_two_view_past_step(x, y):  # the floor of any method that distils from a frozen past model
        bare_two_view_step(x, y)
        with torch.no_grad():
            past_backbone(normalize(torch.cat([x, x])))

    total = args.steps + args.warmup

    # the method's own floor, whatever its loss: every pass through a network of the backbone's class during one
    # step (the trained backbone on each view, a past model, a momentum encoder), recorded by a global forward hook
    # with its rows, whether it builds a graph, and its mode; replayed with a linear head and SGD on the bare backbone
    calls: list[tuple[str, int, bool, bool]] = []
    # and every pass through one of its heads (projector, predictor, their past and momentum copies): the module, its
    # input shape, whether it builds a graph and its mode; replayed on copies of those heads
    head_calls: list[tuple[torch.nn.Module, tuple, bool, bool]] = []
    augment = method.transforms.train

    def record(module, inputs, output):
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
        if type(module) is type(method.backbone):
            calls.append(("net", inputs[0].shape[0], grad, module.training))
        elif module is augment and args.augmentation != "none":  # the views themselves: augmenting is unavoidable too
            calls.append(("aug", inputs[0].shape[0], False, False))
        elif isinstance(module, HEADS):
            head_calls.append((module, tuple(inputs[0].shape), grad, module.training))

    x0, y0 = next(batches(second, args.batch_size, 1, seed=3))
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        out = method.training_step(x0, y0, StepContext(1, 0, 0, 1, 0))
    finally:
        handle.remove()
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.zero_grad()
    frozen_backbone = copy.deepcopy(method.backbone).requires_grad_(False)
    # a head inside another head (an expert of a mixture) ran as part of the outer pass: count the outer one only
    inner = {id(sub) for module, *_ in head_calls for sub in module.modules() if sub is not module}
    head_calls = [call for call in head_calls if id(call[0]) not in inner]
    head_copies = {id(m): copy.deepcopy(m).requires_grad_(grad) for m, _, grad, _ in head_calls}
    head_params = [p for m in head_copies.values() for p in m.parameters() if p.requires_grad]
    head_optimizer = torch.optim.SGD(head_params, lr=1e-6, momentum=0.9) if head_params else None
    head_inputs = [torch.randn(shape, device=device, requires_grad=grad) for _, shape, grad, _ in head_calls]

    def heads_step():
        """The head passes of one step on copies of the heads: forward with or without a graph, backward through every
        graph (into the head's input too, as when it sits on the backbone), SGD on the trained heads."""
        loss = None
        for (module, _, grad, training), x in zip(head_calls, head_inputs):
            head = head_copies[id(module)].train(training)
            with torch.set_grad_enabled(grad):
                output = head(x)
            output = output[0] if isinstance(output, tuple) else output
            if grad:
                term = output.float().square().mean()
                loss = term if loss is None else loss + term
        if loss is not None:
            head_optimizer.zero_grad()
            loss.backward()
            head_optimizer.step()

    def floor_step(x, y):
        outputs = []
        for kind, rows, grad, training in calls:
            xb = x.repeat((rows + len(x) - 1) // len(x), 1, 1, 1)[:rows]
            if kind == "aug":
                augment(xb)
                continue
            xb = normalize(xb)
            if grad:
                outputs.append(method.backbone(xb))
            else:
                frozen_backbone.train(training)
                with torch.no_grad():
                    frozen_backbone(xb)
        loss = sum(F.cross_entropy(bare_head(o), y.repeat((len(o) + len(y) - 1) // len(y))[: len(o)]) for o in outputs)
        bare_optimizer.zero_grad()
        loss.backward()
        bare_optimizer.step()

    def floor_heads_step(x, y):
        floor_step(x, y)
        heads_step()

    def method_step(x, y, i):
        train_step(method, optimizer, x, y, StepContext(1, 0, i, total, i))

    bare_times, bare2_times, past_times, floor_times, heads_times, method_times = [], [], [], [], [], []
    data = list(batches(second, args.batch_size, args.steps + args.warmup, seed=2))
    for i, (x, y) in enumerate(data):
        t0 = time.perf_counter()
        bare_step(x, y)
        t1 = time.perf_counter()
        bare_two_view_step(x, y)
        t2 = time.perf_counter()
        bare_two_view_past_step(x, y)
        t3 = time.perf_counter()
        floor_step(x, y)
        t4 = time.perf_counter()
        floor_heads_step(x, y)
        t5 = time.perf_counter()
        method_step(x, y, i)
        t6 = time.perf_counter()
        if i >= args.warmup:
            bare_times.append(t1 - t0)
            bare2_times.append(t2 - t1)
            past_times.append(t3 - t2)
            floor_times.append(t4 - t3)
            heads_times.append(t5 - t4)
            method_times.append(t6 - t5)
    bare, bare2, past, floor, heads, meth = (
        statistics.median(t) for t in (bare_times, bare2_times, past_times, floor_times, heads_times, method_times)
    )
    passes = " + ".join(
        f"{'aug ' if kind == 'aug' else ''}{rows}{'' if grad or kind == 'aug' else ' no-grad'}"
        for kind, rows, grad, _ in calls
    )
    if head_calls:
        passes += "; heads " + " + ".join(
            f"{type(m).__name__} {shape[0]}×{shape[1]}{'' if grad else ' no-grad'}" for m, shape, grad, _ in head_calls
        )
    return {
        "method": name,
        "bare_img_s": args.batch_size / bare,
        "bare2_img_s": args.batch_size / bare2,
        "past_img_s": args.batch_size / past,
        "floor_img_s": args.batch_size / floor,
        "heads_img_s": args.batch_size / heads,
        "ratio_heads": meth / heads,
        "method_img_s": args.batch_size / meth,
        "ratio": meth / bare,
        "ratio2": meth / bare2,
        "ratio_past": meth / past,
        "ratio_floor": meth / floor,
        "passes": passes,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--warmup-task0-steps", type=int, default=5)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--augmentation", default="supervised")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scenario = build_scenario(load_dataset(args.dataset), "class_il", 5, train_fraction=0.2)
    names = args.methods or [m for m in method_names()]
    env = environment()
    lines = [
        f"# protosphere train-step throughput — {args.dataset}, {args.backbone}, batch {args.batch_size}, "
        f"augmentation {args.augmentation}, median of {args.steps} steps",
        f"# machine: {env['cpu']} ({env['cpu_count']} cores, {env['torch_threads']} torch threads), "
        f"gpu: {env['gpu']}, torch {env['torch']}, python {platform.python_version()}",
        f"# command: python -m protosphere.bench.throughput "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}".rstrip(),
        "# bare = backbone + linear head forward/backward + SGD step on the stream batch (1 view) or on the batch "
        "twice (2 views, what two-view methods push through the network); +past = the 2-view step plus a no-grad "
        "forward of a frozen copy of the backbone on both views (the floor of past-model distillation); img/s counts "
        "stream images",
        "# floor = the method's own unavoidable passes, recorded by a forward hook on every network of the backbone's "
        "class during one step (trained backbone per view, past model, momentum encoder; rows listed under 'passes', "
        "no-grad = without a graph) and on its augmentation ('aug' rows), replayed on the bare backbone with a linear "
        "head and SGD; whatever the method adds above it (heads, losses, queues, buffer) is the 'vs floor' ratio",
        "# +heads = the floor plus every pass through the method's heads (projector, predictor, mixture of experts, "
        "and their past/momentum copies), recorded the same way and replayed on copies of those heads (forward, "
        "backward into their input, SGD); the heads are part of each method's architecture as its paper defines it, "
        "so what remains above +heads (losses, queues, buffers, bookkeeping) is the 'vs +heads' ratio",
        f"{'method':<12} {'bare 1-view':>12} {'bare 2-view':>12} {'2-view+past':>12} {'floor':>9} {'+heads':>9} "
        f"{'method':>9} {'vs 1-view':>10} {'vs 2-view':>10} {'vs +past':>9} {'vs floor':>9} {'vs +heads':>10}  passes",
    ]
    print("\n".join(lines), flush=True)
    for name in names:
        row = bench_method(name, scenario, args, device)
        line = (
            f"{row['method']:<12} {row['bare_img_s']:>12,.0f} {row['bare2_img_s']:>12,.0f} "
            f"{row['past_img_s']:>12,.0f} {row['floor_img_s']:>9,.0f} {row['heads_img_s']:>9,.0f} "
            f"{row['method_img_s']:>9,.0f} {row['ratio']:>10.2f} {row['ratio2']:>10.2f} {row['ratio_past']:>9.2f} "
            f"{row['ratio_floor']:>9.2f} {row['ratio_heads']:>10.2f}  "
            f"{row['passes']}"
        )
        print(line, flush=True)
        lines.append(line)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
