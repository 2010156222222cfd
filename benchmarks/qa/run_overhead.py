"""Where a short run's wall time goes: interpreter start, imports, data, model, training, evaluation, checkpoints,
results and report — and the whole ``protosphere run`` command's wall time, measured from outside.

Each round starts fresh processes (nothing cached in memory): one child runs the config through
``protosphere.runs.runner.run`` with timers wrapped around the phases (no change to the library's code), and one plain
``python -m protosphere.cli run CONFIG`` is timed from the outside, start-up included (the number a user waits for).
Medians over ``--repeats`` rounds.

    python benchmarks/qa/run_overhead.py [CONFIG.yaml] [--repeats 3] [--out FILE] [key=value ...]

Phases: ``start`` (interpreter up to the first import), ``import torch``, ``import lightning_fabric``, ``import
protosphere`` (config, runner, engine, methods), ``fabric`` (Fabric set-up), ``data`` (dataset + scenario),
``model`` (method), ``random-init baseline``, ``train`` (the training steps, all tasks), ``eval`` (accuracy matrix
rows after each task, classifiers, NC metrics, diagnostics), ``checkpoints``, ``final extras`` (embeddings snapshot,
corruptions), ``results`` (results.json, config.yaml), ``report`` (the report's share on the run's critical path),
``other`` (the rest of the run: metrics log, progress, ...), and ``exit`` (interpreter shut-down, from outside).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT_MODES = ("inline", "background")
T0 = time.perf_counter()
if "--child" in sys.argv:  # start-up measured against the parent's clock
    START_WALL = time.time()


def child(config_path: str, out_dir: str, overrides: list[str]) -> int:
    phases = {}
    t = time.perf_counter()
    import torch  # noqa: F401

    phases["import torch"] = time.perf_counter() - t
    t = time.perf_counter()
    import lightning_fabric  # noqa: F401

    phases["import lightning_fabric"] = time.perf_counter() - t
    t = time.perf_counter()
    import protosphere.methods  # noqa: F401
    from protosphere.config import load_config
    from protosphere.runs import runner
    from protosphere.runs.engine import Checkpoints
    from protosphere.runs.protocol import Protocol
    from protosphere.runs.rundir import RunDir

    phases["import protosphere"] = time.perf_counter() - t

    timers: dict[str, float] = {}

    def timed(owner, name, phase):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers[phase] = timers.get(phase, 0.0) + time.perf_counter() - start

        setattr(owner, name, wrapper)

    timed(runner, "build_fabric", "fabric")
    timed(runner, "build_scenario_from_config", "data")
    timed(runner, "build_method", "model")
    timed(Checkpoints, "save", "checkpoints")
    timed(Protocol, "final_extras", "final extras")
    timed(RunDir, "write_results", "results")
    timed(RunDir, "write_config", "results")
    import protosphere.report as report

    timed(report, "try_write_report", "report")  # set on the package, where the runner imports it from
    timed(Protocol, "random_init_baseline", "random-init baseline")
    timed(Protocol, "neural_collapse", "of eval: NC metrics")

    t = time.perf_counter()
    config = load_config(config_path, [*overrides, f"output_dir={out_dir}", "name=overhead"])
    phases["config"] = time.perf_counter() - t
    t = time.perf_counter()
    record, _ = runner.run(config, overwrite=True, show_progress=False)
    phases["run"] = time.perf_counter() - t
    tasks = record.timings.tasks
    phases["train"] = sum(x.train_s for x in tasks)
    phases["eval"] = sum(x.eval_s for x in tasks)
    phases.update(timers)
    phases["img/s"] = sum(x.images for x in tasks) / phases["train"]
    import gc

    gc.freeze()  # as `protosphere run` does before its process exits
    print(json.dumps({"start_wall": START_WALL, "end_wall": time.time(), "phases": phases}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/mammoth-protocol/er-200.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args(argv)
    if args.child:
        return child(args.config, args.dir, overrides)

    import torch

    from protosphere.provenance import environment

    env = environment()
    load_before = os.getloadavg()
    rounds, cli_walls = [], {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.time()
            out = subprocess.run(
                [sys.executable, __file__, args.config, "--child", "--dir", tmp, *overrides],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            ).stdout
            wall = time.time() - started
            row = json.loads(out.strip().splitlines()[-1])
            phases = row["phases"]
            phases["start"] = row["start_wall"] - started
            phases["total (process wall)"] = wall
            phases["exit"] = started + wall - row["end_wall"]
            rounds.append(phases)
        for mode in REPORT_MODES:  # the user's wait, start-up included, with the report inline and in the background
            with tempfile.TemporaryDirectory() as tmp:
                started = time.time()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "protosphere.cli",
                        "run",
                        args.config,
                        f"output_dir={tmp}",
                        *overrides,
                        f"eval.report={mode}",
                        "--no-progress",
                    ],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    check=True,
                )
                cli_walls.setdefault(mode, []).append(time.time() - started)
                if mode == "background":  # let the report finish before the next round (and the folder goes)
                    deadline = time.time() + 120
                    report = next(Path(tmp).glob("*/report.html"), None)
                    while report is None and time.time() < deadline:
                        time.sleep(0.2)
                        report = next(Path(tmp).glob("*/report.html"), None)
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    inside = (
        "fabric",
        "data",
        "model",
        "random-init baseline",
        "train",
        "eval",
        "checkpoints",
        "final extras",
        "results",
        "report",
    )
    median["other"] = median["run"] - sum(median.get(k, 0.0) for k in inside)
    load_after = os.getloadavg()
    lines = [
        f"# protosphere: where a short run's wall time goes — {args.config} {' '.join(overrides)}".rstrip(),
        f"# machine: {env['cpu']} ({os.cpu_count()} cores), torch {torch.__version__}, python "
        f"{platform.python_version()}; median of {args.repeats} fresh processes",
        f"# command: python benchmarks/qa/run_overhead.py {' '.join(sys.argv[1:])}".rstrip(),
        f"{'phase':<28} {'seconds':>8} {'share':>7}",
    ]
    total = median["total (process wall)"]
    order = [
        "start",
        "import torch",
        "import lightning_fabric",
        "import protosphere",
        "config",
        "fabric",
        "data",
        "model",
        "random-init baseline",
        "train",
        "eval",
        "of eval: NC metrics",
        "checkpoints",
        "final extras",
        "results",
        "report",
        "other",
        "exit",
    ]
    for key in order:
        if key in median and median[key] == median[key]:  # skip NaN (phase not reported)
            lines.append(f"{key:<28} {median[key]:>8.2f} {median[key] / total:>7.1%}")
    lines.append(f"{'total (process wall)':<28} {total:>8.2f} {1:>7.0%}")
    lines.append(f"training speed: {median['img/s']:,.0f} img/s")
    for mode, walls in cli_walls.items():
        lines.append(
            f"`protosphere run {' '.join([args.config, *overrides])} eval.report={mode}` wall, start-up "
            f"included: {statistics.median(walls):.2f} s (median; runs: "
            f"{', '.join(f'{w:.2f}' for w in walls)})"
        )
    lines.append(
        f"# load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
        f"{', '.join(f'{v:.2f}' for v in load_after)} (includes this benchmark's own process)"
    )
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
