"""``protosphere bench``: the packaged benchmarks, so an installed protosphere measures itself like a checkout does.

* :mod:`.throughput` — train-step images/s of every method beside the bare backbone (``python -m
  protosphere.bench.throughput``); ``bench`` runs it at batch 256 and on the batch-10 Mammoth protocol.
* :mod:`.losses` — protosphere's supcon against pytorch-metric-learning's, and every loss's share of a training step
  (needs ``pytorch-metric-learning``).

:func:`run_benchmarks` prints each report and writes them, one after the other, to the file it is given and nowhere
else; the committed reference numbers (``benchmarks/results/*.txt``, tracked by git) are never overwritten.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

from ..errors import RunError

# (group for --only, module under protosphere.bench, its arguments)
BENCHMARKS = (
    ("throughput", "throughput", []),
    (
        "throughput",
        "throughput",
        [
            "--backbone",
            "mlp",
            "--batch-size",
            "10",
            "--augmentation",
            "none",
            "--methods",
            "finetune",
            "er",
            "der++",
            "lwf",
            "--steps",
            "200",
        ],
    ),
    ("losses", "losses", []),
)


def tracked_by_git(path: Path) -> bool:
    """Whether ``path`` is a file git tracks in the repository around it (False without git or a repository)."""
    folder = path.parent if path.parent.exists() else None
    if folder is None:
        return False
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "ls-files", "--error-unmatch", path.name],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def check_out_file(out: Path) -> None:
    """Refuse a folder, a file git tracks and an unwritable place, each with one sentence, before anything runs."""
    if out.is_dir():
        raise RunError(f"bench --out {out} is a folder; pass a file, e.g. --out runs/bench.txt.")
    if out.exists() and tracked_by_git(out.resolve()):
        raise RunError(
            f"bench would overwrite {out}, tracked by git (the committed reference numbers); pass --out "
            f"to another file, e.g. --out runs/bench.txt."
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(
            f"Cannot create the folder of bench --out {out} ({exc.strerror}); pass a writable file."
        ) from None


def run_benchmarks(only: Sequence[str] | None = None, out: str | Path | None = None) -> list[str]:
    """Run the benchmarks (all, or the groups in ``only``), print their reports and, with ``out``, write them there;
    returns the benchmarks that missed a target (their command lines), empty when all passed."""
    import importlib
    import importlib.util
    import tempfile

    from ..errors import ConfigError
    from ..runs.rundir import atomic_write

    out = Path(out) if out is not None else None
    if out is not None:
        check_out_file(out)
    if (not only or "losses" in only) and importlib.util.find_spec("pytorch_metric_learning") is None:
        raise ConfigError(
            "the loss benchmarks compare with pytorch-metric-learning, which is not installed; install it with "
            "`pip install 'protosphere[bench]'` (or `pip install pytorch-metric-learning`), or run `protosphere bench "
            "--only throughput`."
        )
    reports, failed = [], []
    with tempfile.TemporaryDirectory(prefix="protosphere-bench-") as scratch:
        for i, (_group, module, argv) in enumerate(job for job in BENCHMARKS if not only or job[0] in only):
            part = Path(scratch) / f"{i}.txt"
            command = " ".join(["python -m", f"protosphere.bench.{module}", *argv])
            code = importlib.import_module(f".{module}", __name__).main([*argv, "--out", str(part)])
            if code not in (0, None):
                failed.append(f"{command} (exit status {code})")
            reports.append(part.read_text() if part.is_file() else f"# {command}: no report (exit status {code})\n")
            if out is not None:  # after every benchmark, so a later crash keeps the earlier reports
                atomic_write(out, "\n".join(reports))
    return failed
