"""The bad-input catalogue, end to end: every bad input of the README's error contract, each run as its own process
through the command line, checked against the contract.

    python tests/bad_inputs.py [--fresh] [--only ID ...] [--json OUT] [--list]

The contract: a problem a user can cause ends with exit status 2 and exactly one line on stderr, starting with
``error:`` (what is wrong, where, how to fix it), no traceback, nothing on stdout, and nothing written or deleted:
every case runs in a fresh folder (its config, data folders, download cache, earlier runs and the user's own files)
that must be byte for byte the same afterwards. Every case fails before training (a tiny config on scikit-learn's
digits, or a dataset that is missing or broken).

By default each case is a process forked from this one after protosphere is imported (``sys.exit(main(argv))`` as in
``python -m protosphere.cli``), so the whole catalogue takes seconds; ``--fresh`` starts each case as a new
``python -m protosphere.cli run ...`` instead (about 5 s a case). Prints one row per case and exits 1 when any case
breaks the contract. ``tests/test_bad_input.py`` runs it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

TINY = (
    "data: {dataset: digits, train_fraction: 0.3}\n"
    "scenario: {num_tasks: 2}\n"
    "model: {backbone: mlp, mlp_hidden: [16]}\n"
    "method: {name: finetune}\n"
    "train: {epochs: 1, batch_size: 16, augmentation: none}\n"
    "eval: {neural_collapse: false, random_init_baseline: false}\n"
    "fabric: {threads: 1}\n"
    "output_dir: runs\n"
    "name: run\n"
)

# nine levels of ten aliases each: 10**9 values from a few hundred bytes
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)


@dataclass
class Case:
    id: str
    what: str
    args: list[str]  # after `protosphere run`; the world's config is cfg.yaml
    setup: Callable[[Path], None] = lambda world: None
    needle: str = ""  # a word the error line must contain
    tags: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ worlds
def idx_gz(array: np.ndarray, corrupt_magic: bool = False) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) if not corrupt_magic else b"\x12\x34\x56\x78"
    return gzip.compress(header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes(), 1)


def mnist_files(folder: Path, truncate: bool = False, corrupt_magic: bool = False) -> None:
    """The four MNIST files in the true IDX format (zero pixels, few rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": np.zeros((10, 28, 28)),
        "train-labels-idx1-ubyte": np.zeros(10),
        "t10k-images-idx3-ubyte": np.zeros((10, 28, 28)),
        "t10k-labels-idx1-ubyte": np.zeros(10),
    }
    for stem, array in arrays.items():
        data = idx_gz(array, corrupt_magic and stem.startswith("train-images"))
        if truncate and stem.startswith("train-images"):
            data = data[: len(data) // 2]
        (folder / f"{stem}.gz").write_bytes(data)


def garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 this is not what it claims to be" * 10)


def run_folder(world: Path, name: str, finished: bool = True, checkpoints: tuple[str, ...] = ()) -> None:
    """What a protosphere run of cfg.yaml named ``name`` leaves behind (its config, results, checkpoints)."""
    from protosphere.config import dump_config, load_config

    folder = world / "runs" / name
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump_config(load_config(world / "cfg.yaml", [f"name={name}"])))
    if finished:
        (folder / "results.json").write_text(json.dumps({"name": name, "status": "complete"}))
    for ckpt in checkpoints:
        garbage(folder / "checkpoints" / ckpt)


def ddp_run_folder(world: Path, name: str) -> None:
    """A run of cfg.yaml that 2 processes (DDP) trained part-way: its config.yaml says so and so does its checkpoint."""
    import torch

    from protosphere.config import config_fingerprint, dump_config, load_config
    from protosphere.runs.engine import CHECKPOINT_VERSION

    config = load_config(world / "cfg.yaml", [f"name={name}", "fabric.devices=2", "fabric.strategy=ddp"])
    folder = world / "runs" / name
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_config(config))
    torch.save(
        {
            "version": CHECKPOINT_VERSION,
            "fingerprint": config_fingerprint(config),
            "world_size": 2,
            "task": 0,
            "phase": "task_done",
            "step": 0,
            "global_step": 10,
            "results": {},
        },
        folder / "checkpoints" / "last.ckpt",
    )


def user_folder(world: Path, name: str) -> None:
    folder = world / "runs" / name
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("months of work")
    (folder / "config.yaml").write_text("data: {dataset: digits}\n")  # a config, but not a run's


def write(relative: str, text: str | bytes) -> Callable[[Path], None]:
    if isinstance(text, bytes):
        return lambda world: (world / relative).write_bytes(text)
    return lambda world: (world / relative).write_text(text)


def link(relative: str, target: str) -> Callable[[Path], None]:
    """A symbolic link at ``relative`` (in the world) to ``target`` (as written in the link)."""
    return lambda world: (world / relative).symlink_to(target)


def steps(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(world: Path) -> None:
        for step in setups:
            step(world)

    return setup


CASES = [
    # datasets
    Case("data-missing", "dataset absent everywhere", ["data.dataset=mnist"], needle="MNIST"),
    Case(
        "data-missing-cifar",
        "CIFAR-10 absent (the hint is a CLI command)",
        ["data.dataset=cifar10"],
        needle="protosphere datasets --ensure cifar10",
    ),
    Case(
        "data-missing-root",
        "data.root names a folder that does not exist",
        ["data.dataset=mnist", "data.root=nowhere"],
        needle="nowhere",
    ),
    Case(
        "data-truncated",
        "truncated .gz",
        ["data.dataset=mnist"],
        lambda w: mnist_files(w / "data" / "mnist", truncate=True),
        needle="train-images",
    ),
    Case(
        "data-magic",
        "wrong IDX magic number",
        ["data.dataset=mnist"],
        lambda w: mnist_files(w / "data" / "mnist", corrupt_magic=True),
        needle="magic",
    ),
    Case(
        "data-checksum",
        "checksum mismatch in the download cache",
        ["data.dataset=mnist"],
        lambda w: mnist_files(w / "cache" / "protosphere" / "mnist"),
        needle="MD5",
    ),
    Case(
        "data-corrupt-cifar",
        "corrupt CIFAR archive",
        ["data.dataset=cifar10", "data.root=archives"],
        lambda w: garbage(w / "archives" / "cifar-10-python.tar.gz"),
        needle="cifar-10-python.tar.gz",
    ),
    Case(
        "data-corrupt-tiny",
        "corrupt Tiny-ImageNet archive",
        ["data.dataset=tiny_imagenet", "data.root=archives"],
        lambda w: garbage(w / "archives" / "tiny-imagenet-200.zip"),
        needle="tiny-imagenet-200.zip",
    ),
    # config files and keys
    Case("config-missing", "config file does not exist", ["nowhere.yaml"], needle="does not exist"),
    Case(
        "config-syntax",
        "config file is not valid YAML",
        ["broken.yaml"],
        write("broken.yaml", "data: {dataset: digits\n"),
        needle="not valid YAML",
    ),
    Case(
        "config-scalar",
        "config file is a scalar (with an override)",
        ["scalar.yaml", "seed=1"],
        write("scalar.yaml", "42\n"),
        needle="mapping",
    ),
    Case(
        "config-list",
        "config file is a list",
        ["list.yaml"],
        write("list.yaml", "- data\n- method\n"),
        needle="mapping",
    ),
    Case("key-unknown-section", "misspelt section", ["trian.epochs=2"], needle="did you mean `train`"),
    Case("key-unknown", "misspelt key", ["train.epoch=2"], needle="did you mean `train.epochs`"),
    Case("key-type", "wrong type", ["train.epochs=many"], needle="train.epochs"),
    Case("key-range", "out of range", ["optimizer.lr=-1"], needle="optimizer.lr"),
    Case("key-choice", "not one of the choices", ["fabric.precision=fp8"], needle="fabric.precision"),
    Case("key-not-of-method", "a key the method does not have", ["method.buffer_size=10"], needle="method.buffer_size"),
    Case("method-unknown", "unknown method", ["method.name=fnc3"], needle="fnc2"),
    Case("method-not-mapping", "method given as a plain value", ["method=er"], needle="method"),
    Case("fabric-strategy", "unknown fabric strategy", ["fabric.strategy=warp_drive"], needle="fabric"),
    Case("override-no-equals", "an override without `=`", ["epochs"], needle="key=value"),
    Case("override-into-value", "a sub-key of a plain value", ["seed.x=1"], needle="seed"),
    Case(
        "etf-too-small",
        "ETF dimension too small for the label space",
        ["method.name=fnc2", "method.projection_dim=8"],
        needle="9",
    ),
    # scenarios
    Case(
        "order-duplicate",
        "class order repeats a class",
        ["scenario.class_order=[0,0,1,2,3,4,5,6,7,8]"],
        needle="class_order",
    ),
    Case(
        "order-outside",
        "class order names a class outside the data",
        ["scenario.class_order=[0,1,2,3,4,5,6,7,8,12]"],
        needle="class_order",
    ),
    Case("order-short", "class order misses classes", ["scenario.class_order=[0,1,2]"], needle="class_order"),
    Case(
        "order-and-shuffle",
        "class order and shuffle together",
        ["scenario.class_order=[0,1,2,3,4,5,6,7,8,9]", "scenario.shuffle_classes=true"],
        needle="shuffle",
    ),
    Case("task-empty", "more tasks than classes (an empty task)", ["scenario.num_tasks=11"], needle="task"),
    Case(
        "classes-per-task-sum",
        "task sizes that do not add up",
        ["scenario.classes_per_task=[5,4]"],
        needle="classes_per_task",
    ),
    Case(
        "classes-per-task-count",
        "task sizes for another number of tasks",
        ["scenario.classes_per_task=[5,3,2]"],
        needle="classes_per_task",
    ),
    # run names, output folders, resume
    Case(
        "name-dotdot",
        "run name `..` with --overwrite (would remove the working folder)",
        ["name=..", "--overwrite"],
        lambda w: run_folder(w, "done"),
        needle="plain folder name",
    ),
    Case(
        "name-dot",
        "run name `.` with --overwrite (would remove every run)",
        ["name=.", "--overwrite"],
        lambda w: run_folder(w, "done"),
        needle="plain folder name",
    ),
    Case("name-path", "run name with a slash", ["name=a/b"], needle="plain folder name"),
    Case(
        "overwrite-not-a-run",
        "--overwrite of a folder that holds no run",
        ["name=mine", "--overwrite"],
        lambda w: user_folder(w, "mine"),
        needle="not one",
    ),
    Case(
        "exists",
        "the run folder exists, neither --resume nor --overwrite",
        ["name=done"],
        lambda w: run_folder(w, "done"),
        needle="--resume",
    ),
    Case(
        "resume-and-overwrite",
        "--resume and --overwrite together",
        ["name=done", "--resume", "--overwrite"],
        lambda w: run_folder(w, "done"),
        needle="contradict",
    ),
    Case("resume-nothing", "--resume of a run that does not exist", ["name=ghost", "--resume"], needle="holds no run"),
    Case(
        "resume-changed-config",
        "--resume with a changed config",
        ["name=done", "--resume", "seed=1"],
        lambda w: run_folder(w, "done"),
        needle="different config",
    ),
    Case(
        "resume-no-checkpoint",
        "--resume of a run that stopped before its first checkpoint",
        ["name=early", "--resume"],
        lambda w: run_folder(w, "early", finished=False),
        needle="no checkpoint",
    ),
    Case(
        "resume-unreadable",
        "--resume when no checkpoint is readable",
        ["name=broken", "--resume"],
        lambda w: run_folder(w, "broken", finished=False, checkpoints=("last.ckpt", "task-0.ckpt")),
        needle="readable",
    ),
    Case("output-under-a-file", "output_dir inside a file", ["output_dir=notes.txt/runs"], needle="output"),
    # the file system and the shared folder
    Case(
        "config-not-utf8",
        "a config file in Latin-1, not UTF-8",
        ["latin1.yaml"],
        write("latin1.yaml", "seed: 1\n# caf\xe9\n".encode("latin-1")),
        needle="UTF-8",
    ),
    Case(
        "name-too-long", "a run name longer than a file system allows", ["name=" + "a" * 300], needle="200 characters"
    ),
    Case(
        "overwrite-foreign-file",
        "--overwrite of a run folder that also holds the user's own file",
        ["name=done", "--overwrite"],
        steps(lambda w: run_folder(w, "done"), write("runs/done/notes.md", "mine")),
        needle="notes.md",
    ),
    Case(
        "run-folder-link",
        "the run folder is a symbolic link to another folder",
        ["name=alias", "--resume"],
        steps(lambda w: run_folder(w, "done"), link("runs/alias", "done")),
        needle="symbolic link",
    ),
    Case(
        "resume-metrics-link",
        "--resume where metrics.csv links to a file outside the run folder",
        ["name=linked", "--resume"],
        steps(lambda w: run_folder(w, "linked", finished=False), link("runs/linked/metrics.csv", "../../notes.txt")),
        needle="metrics.csv",
    ),
    Case(
        "resume-other-world-size",
        "--resume of a 2-process (DDP) run with 1 process",
        ["name=ddp", "--resume"],
        lambda w: ddp_run_folder(w, "ddp"),
        needle="2 process(es)",
    ),
    # input that validates but should not
    Case(
        "yaml-billion-laughs",
        "a few hundred bytes of YAML aliases that expand into a billion values",
        ["laughs.yaml"],
        write("laughs.yaml", BILLION_LAUGHS),
        needle="aliases",
    ),
    Case(
        "yaml-duplicate-key",
        "a key given twice in one mapping (YAML keeps the last silently)",
        ["twice.yaml"],
        write("twice.yaml", TINY.replace("output_dir: runs\n", "output_dir: runs\nseed: 1\nseed: 2\n")),
        needle="lines 9 and 10",
    ),
    Case(
        "override-empty-section",
        "an override without a value (`method=` would reset the method)",
        ["method="],
        needle="no value",
    ),
    Case("override-empty-value", "an override without a value for a number", ["train.epochs="], needle="no value"),
    Case("seed-negative", "a seed below 0", ["seed=-1"], needle="seed"),
    Case("seed-too-large", "a seed above 2**32-1", ["seed=4294967296"], needle="seed"),
    Case("threads-too-many", "fabric.threads far above the cores", ["fabric.threads=100000"], needle="core"),
    Case(
        "buffer-beyond-ram",
        "a replay buffer larger than half the RAM",
        ["method.name=er", "method.buffer_size=1000000000000"],
        needle="RAM",
    ),
    Case(
        "override-value-quoted-short",
        "an ill-typed override 10,000 characters long",
        ["train.epochs=" + "x" * 10000],
        needle="(10000 characters)",
    ),
]


def make_world(root: Path, case: Case) -> Path:
    world = root / case.id
    for sub in ("data", "cache"):
        (world / sub).mkdir(parents=True)
    (world / "cfg.yaml").write_text(TINY)
    (world / "notes.txt").write_text("the user's own file")
    case.setup(world)
    return world


def snapshot(folder: Path) -> dict[str, str]:
    """Every file (by content), folder and link under ``folder``."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[key] = "dir"
        else:
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------------------ running
def run_fresh(argv: list[str], env: dict, cwd: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "protosphere.cli", *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_forked(argv: list[str], env: dict, cwd: Path) -> tuple[int, str, str]:
    """``python -m protosphere.cli ARGV`` in a child process forked from this one (protosphere already imported)."""
    from protosphere.cli import main

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: the CLI's own entry point, as `python -m protosphere.cli` runs it
            code = 1
            try:
                os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:  # noqa: BLE001 - what the interpreter would print
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()


def check(case: Case, code: int, stdout: str, stderr: str, before: dict, after: dict) -> list[str]:
    problems = []
    lines = stderr.strip().splitlines()
    if code != 2:
        problems.append(f"exit status {code}, not 2")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"stderr is {len(lines)} line(s), not one `error:` line")
    if "Traceback" in stdout + stderr:
        problems.append("a traceback")
    if stdout.strip():
        problems.append("output on stdout")
    if case.needle and case.needle not in stderr:
        problems.append(f"the error does not mention {case.needle!r}")
    if before != after:
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
        problems.append(f"the folder changed (added {added[:3]}, removed {removed[:3]}, changed {changed[:3]})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="start every case as a new interpreter")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these cases")
    parser.add_argument("--json", metavar="OUT", help="write the per-case verdicts as JSON")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or c.id in args.only]
    if args.only and len(cases) != len(set(args.only)):
        parser.error(f"unknown case(s): {sorted(set(args.only) - {c.id for c in CASES})}")
    if args.list:
        for c in cases:
            print(f"{c.id:24} {c.what}")
        return 0
    fresh = args.fresh or not hasattr(os, "fork")
    if not fresh:  # import what the cases use once, so that each forked case starts at once
        import lightning_fabric  # noqa: F401
        import rich.console  # noqa: F401
        import sklearn.datasets  # noqa: F401

        import protosphere.cli  # noqa: F401
        import protosphere.data.augment  # noqa: F401
        import protosphere.data.scenarios  # noqa: F401
        import protosphere.methods  # noqa: F401
        import protosphere.models  # noqa: F401
        import protosphere.runs.engine  # noqa: F401
        import protosphere.runs.runner  # noqa: F401
    source = str(Path(__file__).resolve().parents[1] / "src")
    verdicts, started = [], time.time()
    with tempfile.TemporaryDirectory(prefix="protosphere-bad-inputs-") as tmp:
        for case in cases:
            world = make_world(Path(tmp), case)
            env = {
                **os.environ,
                "PROTOSPHERE_DATA": str(world / "data"),
                "XDG_CACHE_HOME": str(world / "cache"),
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p),
            }
            configs = [a for a in case.args if a.endswith(".yaml")] or ["cfg.yaml"]
            argv = ["run", *configs, *(a for a in case.args if not a.endswith(".yaml")), "--no-progress"]
            before = snapshot(world)
            start = time.time()
            code, stdout, stderr = (run_fresh if fresh else run_forked)(argv, env, world)
            problems = check(case, code, stdout, stderr, before, snapshot(world))
            verdicts.append(
                {
                    "id": case.id,
                    "what": case.what,
                    "argv": argv,
                    "exit": code,
                    "ok": not problems,
                    "problems": problems,
                    "stderr": stderr.strip(),
                    "seconds": round(time.time() - start, 2),
                }
            )
            mark = "ok  " if not problems else "FAIL"
            print(f"{mark} {case.id:24} exit {code}  {'; '.join(problems) or stderr.strip()[:110]}", flush=True)
    failed = [v for v in verdicts if not v["ok"]]
    print(
        f"{len(verdicts) - len(failed)}/{len(verdicts)} bad inputs end as the contract says "
        f"({'fresh interpreters' if fresh else 'forked processes'}, {time.time() - started:.1f} s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": verdicts, "fresh": fresh}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
