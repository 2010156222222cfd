"""Faults a cluster produces, end to end: signals (what SLURM and systemd send before they kill a job) and two
processes on one run folder. Each scenario runs real ``python -m protosphere.cli`` processes on a tiny config in a
fresh folder and returns what broke the contract (an empty list when nothing did).

    python tests/cluster_faults.py [--only NAME ...] [--list]

The contract: SIGTERM / SIGINT stop a run at its next safe point with exit status 143 / 130, one line on stderr that
says where it stopped, that ``last.ckpt`` holds it and the exact command that continues it, and that command ends
with the same results.json as an uninterrupted run; ``protosphere compare --jobs N`` passes the signal on to its runs
and waits for them (no orphan keeps training). A run folder in use by one process (``run.lock``) is refused by a
second ``run --resume``, ``run --overwrite`` or ``report``, in one ``error:`` line naming the holder's PID, and a
holder that dies (SIGKILL) leaves no lock behind. ``tests/test_cluster_faults.py`` runs every scenario.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]

# long enough to be signalled mid-training on a busy machine (about 250 steps), short enough for a test
CONFIG = (
    "data: {dataset: digits, train_fraction: 0.5}\n"
    "scenario: {num_tasks: 3}\n"
    "model: {backbone: mlp, mlp_hidden: [32]}\n"
    "method: {name: er, buffer_size: 30}\n"
    "train: {epochs: 3, batch_size: 8, augmentation: supervised, log_every_n_steps: 5}\n"
    "optimizer: {lr: 0.05, scheduler: cosine}\n"
    "eval: {neural_collapse: false, report: off}\n"
    "fabric: {threads: 1}\n"
    "output_dir: runs\n"
)


def environment() -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p),
    }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "protosphere.cli", *args]


def default_signals() -> None:
    """In the child: SIGINT as an interactive shell leaves it (a script's background job would start it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(world: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        cli(*args),
        cwd=world,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )


def finish(world: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), cwd=world, env=environment(), capture_output=True, text=True, timeout=timeout)


def make_world(root: Path, name: str) -> Path:
    world = root / name
    world.mkdir(parents=True)
    (world / "cfg.yaml").write_text(CONFIG)
    return world


def train_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return [(r["task"], r["step"], r["name"]) for r in csv.DictReader(f) if r["split"] == "train"]


def count_train_rows(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "metrics.csv").read_text().splitlines() if ",train,loss," in line)
    except OSError:
        return 0


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 300) -> bool:
    """Poll ``condition`` until it holds (True), the process ends or the time is up (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def children(pid: int) -> list[int]:
    """PIDs of the live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def resume_command(line: str) -> list[str] | None:
    """The `protosphere ...` command an interrupted run's stderr line gives to continue it, as an argv."""
    marker = "continue with: "
    if marker not in line:
        return None
    words = shlex.split(line.split(marker, 1)[1].rstrip(". "))
    return words[1:] if words and words[0] == "protosphere" else None


# ----------------------------------------------------------------------------------------------------- signals
def signal_then_resume(root: Path, signum: signal.Signals) -> list[str]:
    """A run stopped by ``signum`` at a random point of its training, then continued with the command it printed,
    ends with the results and metrics rows of an uninterrupted run."""
    world = make_world(root, f"signal-{signum.name}")
    full = finish(world, "run", "cfg.yaml", "name=full", "--no-progress")
    if full.returncode != 0:
        return [f"the uninterrupted run failed: {full.stderr[-500:]}"]
    total_rows = count_train_rows(world / "runs" / "full")
    run_dir = world / "runs" / "stopped"
    proc = start(world, "run", "cfg.yaml", "name=stopped", "--no-progress")
    # somewhere in training, tasks 0 to 2, early enough that the run cannot end before the signal arrives
    wanted = random.Random().randint(1, max(1, total_rows * 3 // 4))
    reached = wait_until(lambda: count_train_rows(run_dir) >= wanted, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    problems = []
    if not reached:
        problems.append(f"the run ended before it was signalled (exit {proc.returncode}: {stderr[-300:]!r})")
        return problems
    lines = stderr.strip().splitlines()
    expected = 128 + signum
    if proc.returncode != expected:
        problems.append(f"exit status {proc.returncode}, not {expected}")
    if len(lines) != 1:
        problems.append(f"stderr is {len(lines)} lines, not one: {stderr[-600:]!r}")
    if "Traceback" in stderr:
        problems.append("a traceback")
    line = lines[-1] if lines else ""
    for word in ("task", "last.ckpt", "--resume", signum.name):
        if word not in line:
            problems.append(f"the line does not mention {word!r}: {line!r}")
    if (run_dir / "results.json").exists():
        problems.append("results.json exists after the interruption")
    command = resume_command(line)
    if command is None:
        return problems + [f"no command to continue in {line!r}"]
    resumed = finish(world, *command, "--no-progress")
    if resumed.returncode != 0:
        return problems + [f"`{' '.join(command)}` failed: {resumed.stderr[-500:]}"]
    first = json.loads((world / "runs" / "full" / "results.json").read_text())
    second = json.loads((run_dir / "results.json").read_text())
    if second["accuracy"] != first["accuracy"]:
        problems.append("the resumed run's accuracy differs from the uninterrupted run's")
    if train_rows(run_dir) != train_rows(world / "runs" / "full"):
        problems.append("metrics.csv does not log every training step once, as the uninterrupted run")
    return problems


def sigterm_then_resume(root: Path) -> list[str]:
    return signal_then_resume(root, signal.SIGTERM)


def sigint_then_resume(root: Path) -> list[str]:
    return signal_then_resume(root, signal.SIGINT)


def compare_forwards_sigterm(root: Path) -> list[str]:
    """SIGTERM to `compare --jobs 2` reaches both of its run processes, which stop at a checkpoint, and compare waits
    for them; the same command then finishes both runs."""
    world = make_world(root, "compare")
    args = ["compare", "cfg.yaml", "train.epochs=10", "--seeds", "2", "--jobs", "2", "--out", "cmp", "--no-progress"]
    proc = start(world, *args)
    runs = [world / "cmp" / f"cfg-seed{s}" for s in (0, 1)]
    started = wait_until(lambda: all(count_train_rows(r) >= 2 for r in runs), proc)
    kids = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    if not started:
        return [f"compare ended before both runs trained (exit {proc.returncode}: {stderr[-300:]!r})"]
    problems = []
    if len(kids) != 2:
        problems.append(f"compare had {len(kids)} child processes, not 2")
    if proc.returncode != 143:
        problems.append(f"compare's exit status is {proc.returncode}, not 143: {stderr[-300:]!r}")
    orphans = [pid for pid in kids if alive(pid)]
    if orphans:
        problems.append(f"run processes {orphans} still run after compare ended")
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
    for run in runs:
        log = (world / "cmp" / f"{run.name}.log").read_text()
        if "SIGTERM" not in log or "last.ckpt" not in log:
            problems.append(f"{run.name}.log does not say the run was interrupted: {log[-300:]!r}")
    again = finish(world, *args)
    if again.returncode != 0:
        problems.append(f"the same compare command did not finish the runs: {again.stderr[-400:]!r}")
    elif again.stdout.count("resumed") < 2:
        problems.append(f"the runs were not resumed: {again.stdout[-400:]!r}")
    return problems


# ------------------------------------------------------------------------------------- two processes, one folder
def second_process_refused(root: Path) -> list[str]:
    """While one process trains a run, `run --resume`, `run --overwrite` and `report` of its folder refuse in one
    line naming its PID and touch nothing; once it is killed (SIGKILL) its lock is gone: `--overwrite` runs."""
    world = make_world(root, "two-processes")
    run_dir = world / "runs" / "shared"
    same = ["cfg.yaml", "name=shared", "train.epochs=300", "train.checkpoint_every_n_steps=20"]  # minutes
    holder = start(world, "run", *same, "--no-progress")
    problems = []
    try:
        if not wait_until(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), holder):
            return [f"the first run ended before its first checkpoint: {holder.stderr.read()[-300:]!r}"]
        for args in (["run", *same, "--resume"], ["run", *same, "--overwrite"], ["report", "runs/shared"]):
            second = finish(world, *args, *(["--no-progress"] if args[0] == "run" else []))
            lines = second.stderr.strip().splitlines()
            if second.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
                problems.append(
                    f"`{' '.join(args)}` beside a running run: exit {second.returncode}, "
                    f"stderr {second.stderr[-300:]!r}"
                )
            elif str(holder.pid) not in lines[0]:
                problems.append(f"`{' '.join(args)}`: the error does not name the PID {holder.pid}: {lines[0]!r}")
        if holder.poll() is not None:
            problems.append(f"the first run stopped while the others were refused (exit {holder.returncode})")
        if not (run_dir / "checkpoints" / "last.ckpt").exists() or not (run_dir / "config.yaml").exists():
            problems.append("the running run's files were removed")
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    again = finish(world, "run", "cfg.yaml", "name=shared", "--overwrite", "--no-progress")
    if again.returncode != 0 or not (run_dir / "results.json").exists():
        problems.append(f"--overwrite after the holder was killed failed: {again.stderr[-400:]!r}")
    if (run_dir / "run.lock").exists():
        problems.append("run.lock is left behind after the run finished")
    return problems


SCENARIOS: dict[str, Callable[[Path], list[str]]] = {
    "sigterm-then-resume": sigterm_then_resume,
    "sigint-then-resume": sigint_then_resume,
    "compare-forwards-sigterm": compare_forwards_sigterm,
    "second-process-refused": second_process_refused,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(SCENARIOS), help="run only these")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    if args.list:
        for name in names:
            print(f"{name:28} {(SCENARIOS[name].__doc__ or '').split(chr(10))[0]}")
        return 0
    failed = 0
    with tempfile.TemporaryDirectory(prefix="protosphere-cluster-faults-") as tmp:
        for name in names:
            started = time.time()
            problems = SCENARIOS[name](Path(tmp))
            failed += bool(problems)
            print(
                f"{'ok  ' if not problems else 'FAIL'} {name:28} {time.time() - started:5.1f} s  {'; '.join(problems)}",
                flush=True,
            )
    print(f"{len(names) - failed}/{len(names)} cluster faults end as the contract says")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
