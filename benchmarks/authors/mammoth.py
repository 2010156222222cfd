"""Mammoth's own ER / DER++ (aimagelab/mammoth) on Seq-FashionMNIST, beside protosphere's Mammoth-protocol configs.

Runs the authors' code **unmodified from a checkout you point to** (``--mammoth PATH``) on its own ``seq-mnist``
setting (MLP 784-100-100-10 with Xavier init, batch 10, one epoch per task, plain SGD, ``ToTensor()`` inputs, tasks
(0, 1), (2, 3), ... — protosphere's ``configs/mammoth-protocol/``) and writes one JSON per run with the class-IL and
task-IL accuracy rows Mammoth prints after each task. What is replaced, and nothing else:

1. **the data**: Fashion-MNIST instead of MNIST. Both come as the same four idx files, so a data folder is prepared
   in which ``MNIST/<class>/raw/`` holds Fashion-MNIST's files (found as protosphere finds them) under MNIST's names;
   torchvision's ``MNIST`` (and Mammoth's ``MyMNIST`` subclass) read them as they would read MNIST (``--base_path``).
2. **which of Mammoth's modules are imported**: ``datasets/__init__.py`` and ``models/__init__.py`` import every
   module of their folders, and some of them download CLIP weights or need packages this benchmark does not use; while
   Mammoth starts, ``os.listdir`` of those two folders lists only ``seq_mnist.py`` and the model run.
3. **torchvision's compiled operators**: PyPI's torchvision wheel is built against CUDA torch; with the CPU torch its
   ``_C`` extension does not load and ``torchvision/_meta_registrations.py`` fails registering fake kernels for
   operators that do not exist. Those registrations (detection ops, unused here) are skipped while torchvision
   imports. With a torchvision built for your torch, nothing is skipped.

Environment (the authors' code needs torchvision; keep it out of protosphere's own environment)::

    python3 -m venv /path/to/authors-venv
    /path/to/authors-venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    /path/to/authors-venv/bin/pip install --no-deps torchvision==0.28.0
    /path/to/authors-venv/bin/pip install numpy pillow tqdm pyyaml kornia onedrivedownloader ftfy regex six \\
        python-dotenv pandas scikit-learn

Usage (learning rates and minibatch sizes as in Mammoth's best arguments for seq-mnist)::

    python benchmarks/authors/mammoth.py --mammoth ~/src/mammoth --python /path/to/authors-venv/bin/python \\
        --model er --buffer 200 --seeds 0 1 2 --out runs/authors
    python benchmarks/authors/mammoth.py --mammoth ~/src/mammoth --python /path/to/authors-venv/bin/python \\
        --model derpp --buffer 200 --seeds 0 1 2 --out runs/authors

Output: ``OUT/mammoth-<model>-<buffer>-seed<S>.json`` (written atomically) with ``class_il`` / ``task_il``: row t =
the accuracies (%) on test tasks 0..t after task t, as Mammoth logs them ("Raw accuracy values"); ``wall_s``; the
command; Mammoth's commit; the replacements above.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# Mammoth's best arguments for seq-mnist (the DER paper's table, models/config/best.yaml of older Mammoth releases)
RECIPES = {
    ("er", 200): ["--lr", "0.01", "--minibatch_size", "10"],
    ("er", 500): ["--lr", "0.1", "--minibatch_size", "10"],
    ("derpp", 200): ["--lr", "0.03", "--minibatch_size", "128", "--alpha", "0.2", "--beta", "1.0"],
    ("derpp", 500): ["--lr", "0.03", "--minibatch_size", "10", "--alpha", "1.0", "--beta", "0.5"],
}
REPLACEMENTS = [
    "data: Fashion-MNIST's idx files in MNIST's folder layout (--base_path), read by torchvision's MNIST",
    "import-time module listing of mammoth/datasets and mammoth/models limited to seq_mnist.py and the model run",
    "torchvision's fake-kernel registrations for its compiled (detection) operators skipped when they cannot load",
]
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ROW = re.compile(r"Raw accuracy values: Class-IL (\[[^\]]*\]) \| Task-IL (\[[^\]]*\])")


def _idx_bytes(array) -> bytes:
    """The idx file of a uint8 array (images (N, H, W) or labels (N,)): magic 0x0000080<ndim>, big-endian sizes."""
    import struct

    return struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def prepare_data(folder: Path) -> Path:
    """``folder/MNIST/{MNIST,MyMNIST}/raw/`` holding Fashion-MNIST (as protosphere loads it) in MNIST's four idx
    files, uncompressed (what torchvision's MNIST checks for and reads); returns the base path to give Mammoth."""
    raw = folder / "MNIST" / "MNIST" / "raw"
    if not all((raw / name).exists() for name in FILES):
        from protosphere.data.mnist import load_fashion_mnist

        data = load_fashion_mnist()
        raw.mkdir(parents=True, exist_ok=True)
        arrays = (
            data.train_images[..., 0],
            data.train_labels.astype("uint8"),
            data.test_images[..., 0],
            data.test_labels.astype("uint8"),
        )
        for name, array in zip(FILES, arrays):
            tmp = raw / f"{name}.tmp"
            tmp.write_bytes(_idx_bytes(array))
            tmp.replace(raw / name)
    alias = folder / "MNIST" / "MyMNIST" / "raw"  # torchvision's folder is named after the class (Mammoth's subclass)
    if not alias.exists():
        alias.parent.mkdir(parents=True, exist_ok=True)
        alias.symlink_to(raw.resolve(), target_is_directory=True)
    return folder


def inner(mammoth: Path, model: str, argv: list[str]) -> None:
    """Run Mammoth's ``main.py`` in this process with the import-time replacements of the module docstring."""
    import runpy

    import torch.library as library

    register_fake = library.register_fake
    try:
        import torchvision  # noqa: F401
    except RuntimeError:  # a torchvision built for another torch: its operators are missing
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        library.register_fake = lambda *args, **kwargs: lambda fn: fn
        import torchvision  # noqa: F401
    finally:
        library.register_fake = register_fake
    mammoth = mammoth.resolve()
    keep = {str(mammoth / "datasets"): {"seq_mnist.py"}, str(mammoth / "models"): {f"{model}.py"}}
    listdir = os.listdir

    def only_used(path="."):
        names = listdir(path)
        wanted = keep.get(os.path.abspath(path))
        if wanted is None:
            return names
        return [n for n in names if not n.endswith(".py") or n == "__init__.py" or n in wanted]

    os.listdir = only_used
    os.chdir(mammoth)
    sys.path.insert(0, str(mammoth))
    sys.argv = [str(mammoth / "main.py"), *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


def run(args, seed: int) -> Path:
    out = Path(args.out) / f"mammoth-{args.model}-{args.buffer}-seed{seed}.json"
    if out.exists() and not args.overwrite:
        print(f"{out} exists; skipped (--overwrite reruns it)")
        return out
    base = prepare_data(Path(args.out) / "mammoth-data")
    argv = [
        "--dataset",
        "seq-mnist",
        "--model",
        args.model,
        "--buffer_size",
        str(args.buffer),
        "--batch_size",
        "10",
        "--n_epochs",
        "1",
        "--seed",
        str(seed),
        "--base_path",
        f"{base.resolve()}/",
        "--non_verbose",
        "1",
        "--num_workers",
        "0",
        *RECIPES[(args.model, args.buffer)],
    ]
    cmd = [
        args.python,
        str(Path(__file__).resolve()),
        "--inner",
        "--mammoth",
        str(args.mammoth),
        "--model",
        args.model,
        "--",
        *argv,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - start
    rows = ROW.findall(proc.stdout + proc.stderr)
    if proc.returncode or len(rows) < 5:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(
            f"error: Mammoth failed (exit {proc.returncode}, {len(rows)} task rows); command: {' '.join(cmd)}\n{tail}"
        )
    rows = rows[-5:]  # Mammoth logs each row twice (stdout and its logger); the last five are one per task
    commit = subprocess.run(
        ["git", "-C", str(args.mammoth), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    record = {
        "code": "mammoth",
        "commit": commit,
        "model": args.model,
        "buffer_size": args.buffer,
        "seed": seed,
        "class_il": [ast.literal_eval(c) for c, _ in rows],
        "task_il": [ast.literal_eval(t) for _, t in rows],
        "wall_s": wall,
        "threads": args.threads,
        "command": " ".join(cmd),
        "replacements": REPLACEMENTS,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(out)
    final = record["class_il"][-1]
    print(f"{out.name}: class-IL {sum(final) / len(final):.2f} %  ({wall:.0f} s)")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--inner" in argv:
        split = argv.index("--")
        own = argparse.ArgumentParser()
        own.add_argument("--inner", action="store_true")
        own.add_argument("--mammoth", type=Path, required=True)
        own.add_argument("--model", required=True)
        inner_args = own.parse_args(argv[:split])
        inner(inner_args.mammoth, inner_args.model, argv[split + 1 :])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mammoth", type=Path, required=True, help="a checkout of aimagelab/mammoth")
    parser.add_argument("--python", default=sys.executable, help="the Python of an environment with torchvision")
    parser.add_argument("--model", choices=["er", "derpp"], default="er")
    parser.add_argument("--buffer", type=int, choices=[200, 500], default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/authors")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if not (args.mammoth / "main.py").is_file():
        raise SystemExit(
            f"error: {args.mammoth} is not a Mammoth checkout (no main.py); clone aimagelab/mammoth and "
            "pass its folder with --mammoth."
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print("replacements: " + "; ".join(REPLACEMENTS))
    for seed in args.seeds:
        run(args, seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
