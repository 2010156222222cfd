"""Training throughput on a quiet machine and beside one busy process, side by side in one run, per thread choice.

For each workload (a config plus overrides), a fresh child process builds the run's scenario and method exactly as
``protosphere run`` does, trains task 0 for a few steps (full buffers, past models), then times ``--steps`` of the
engine's training steps of task 1 (``protosphere.runs.engine.train_step``: method step, backward, SGD step) and prints
img/s. Each child runs once on the quiet machine and once beside a busy neighbour (``python3 -c "while True: pass"``,
started before the child and stopped after it), with 1 thread, 2 threads and protosphere's default choice
(``protosphere.threads``), quiet and loaded runs interleaved over ``--repeats`` rounds; the table gives medians.
"loaded/quiet" is the share of quiet speed a run keeps beside the neighbour; "vs best quiet" compares a setting's quiet
speed with the fastest quiet setting.

    python benchmarks/qa/throughput_loaded.py [--repeats 3] [--steps 600] [--workloads NAME ...] [--out FILE]

The machine's own load (other users) is printed as ``os.getloadavg()`` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# name -> (config, overrides, steps multiplier): the Mammoth protocol (MLP, batch 10) and the CPU tables' CNN
WORKLOADS = {
    "mammoth-er-200 (mlp, b10)": ("configs/mammoth-protocol/er-200.yaml", [], 1.0),
    "mammoth-derpp-200 (mlp, b10)": ("configs/mammoth-protocol/derpp-200.yaml", [], 0.5),
    "mlp er b128": ("configs/mammoth-protocol/er-200.yaml", ["train.batch_size=128"], 0.2),
    "small_cnn er b10": (
        "configs/mammoth-protocol/er-200.yaml",
        ["model.backbone=small_cnn", "model.channels_last=true"],
        0.3,
    ),
    "small_cnn er b64 (seq-fmnist)": ("configs/seq-fmnist/er-200.yaml", [], 0.05),
}


def child(args) -> int:
    import torch  # before protosphere, so that the OpenMP wait policy is the one this process was started with

    from protosphere.config import load_config
    from protosphere.data.scenarios import model_input
    from protosphere.methods.base import StepContext, TaskContext
    from protosphere.optim import build_optimizer
    from protosphere.runs.engine import epoch_order, train_step
    from protosphere.runs.runner import build_method, build_scenario_from_config
    from protosphere.threads import apply_threads

    config = load_config(
        args.child,
        [
            *args.overrides,
            "data.train_fraction=0.5",
            *([] if args.threads == "auto" else [f"fabric.threads={args.threads}"]),
        ],
    )
    torch.manual_seed(0)
    scenario = build_scenario_from_config(config)
    method = build_method(config, scenario)
    threads = apply_threads(config, method, scenario.image_shape)
    batch = config.train.batch_size

    def train(t, steps, timed):
        ctx = TaskContext.of(scenario, t)
        method.train()
        method.begin_task(ctx)
        optimizer = build_optimizer(config.optimizer, method.parameters())
        images, labels = method.training_data(ctx)
        order = epoch_order(config.seed, t, 0, len(labels))
        start = None
        for step in range(steps):
            if step == steps // 10:
                start = time.perf_counter()  # the first tenth warms up
            rows = order[(step * batch) % (len(labels) - batch) :][:batch]
            train_step(
                method,
                optimizer,
                model_input(images[rows], config.model.channels_last),
                labels[rows],
                StepContext(t, 0, step, steps, step),
            )
        elapsed = time.perf_counter() - start
        method.end_task(ctx)
        return (steps - steps // 10) * batch / elapsed

    train(0, max(20, args.steps // 10), False)
    print(json.dumps({"img_s": train(1, args.steps, True), "threads": threads}))
    return 0


def measure(config, overrides, steps, setting, loaded) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if not setting.endswith("spin"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # protosphere's default (set by `import protosphere`)
    threads = setting.split()[0]
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        if neighbour:
            time.sleep(0.3)
        cmd = [sys.executable, __file__, "--child", config, "--threads", threads, "--steps", str(steps), *overrides]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True, env=env).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        if neighbour:
            neighbour.kill()
            neighbour.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", default="auto", help=argparse.SUPPRESS)
    parser.add_argument(
        "--steps", type=int, default=2000, help="training steps per measurement at batch 10 (scaled down per workload)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["2 spin", "1", "2", "auto"],
        help="thread settings: a count or auto, with ' spin' for torch's default OpenMP spin-waiting "
        "instead of protosphere's passive waits",
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS), metavar="NAME")
    parser.add_argument("--out", type=Path, default=None)
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    if args.child:
        return child(args)

    import torch

    from protosphere.provenance import environment

    env = environment()
    load_before = os.getloadavg()
    lines = [
        "# protosphere training throughput, quiet vs beside one busy process (python3 -c 'while True: pass'), "
        f"median of {args.repeats} interleaved rounds",
        f"# machine: {env['cpu']} ({os.cpu_count()} cores), torch {torch.__version__}, python "
        f"{platform.python_version()}",
        f"# command: python benchmarks/qa/throughput_loaded.py {' '.join(sys.argv[1:])}".rstrip(),
        "# threads: 1, 2, or auto = protosphere's default choice (protosphere.threads; the number it chose in "
        "brackets), all with passive OpenMP waits (protosphere's default); '2 spin' = 2 threads with torch's default "
        "spin-waiting (the old default); loaded/quiet = share of quiet speed kept beside the busy process",
        f"{'workload':<32} {'threads':>9} {'quiet img/s':>12} {'loaded img/s':>13} {'loaded/quiet':>13} "
        f"{'vs best quiet':>14}",
    ]
    print("\n".join(lines), flush=True)
    for name in args.workloads:
        config, extra, scale = WORKLOADS[name]
        steps = max(50, int(args.steps * scale))
        samples = {(s, loaded): [] for s in args.settings for loaded in (False, True)}
        chosen = {}
        for _ in range(args.repeats):
            for setting in args.settings:
                for loaded in (False, True):
                    row = measure(config, extra, steps, setting, loaded)
                    samples[(setting, loaded)].append(row["img_s"])
                    chosen[setting] = row["threads"]
        best_quiet = max(statistics.median(samples[(s, False)]) for s in args.settings)
        for setting in args.settings:
            quiet = statistics.median(samples[(setting, False)])
            loaded = statistics.median(samples[(setting, True)])
            label = f"auto [{chosen[setting]}]" if setting == "auto" else setting
            line = (
                f"{name:<32} {label:>9} {quiet:>12,.0f} {loaded:>13,.0f} {loaded / quiet:>13.2f} "
                f"{quiet / best_quiet:>14.2f}"
            )
            print(line, flush=True)
            lines.append(line)
    load_after = os.getloadavg()
    tail = (
        f"# load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
        f"{', '.join(f'{v:.2f}' for v in load_after)} (includes this benchmark's own processes)"
    )
    print(tail)
    lines.append(tail)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
