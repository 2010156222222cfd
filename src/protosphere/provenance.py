"""Where a run came from: the command that started it, the revision of the protosphere code that ran it, and the
software and machine it ran on."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from .version import __version__


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``protosphere run cfg.yaml seed=1`` (the console script's path shortened to its name)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("protosphere", "__main__.py", "cli.py"):
        argv[0] = "protosphere"
    return shlex.join(argv)


def source_revision() -> dict:
    """The git commit of the protosphere source that is running (None when it is not a git checkout, e.g. a wheel),
    whether that checkout had uncommitted changes, and the package version."""
    package = Path(__file__).resolve().parent
    info = {"version": __version__, "git_commit": None, "git_dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:
        info["git_commit"] = commit
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        info["git_dirty"] = bool(status) if status is not None else None
    return info


def environment() -> dict:
    """Versions of the software a run uses and the machine it runs on (CPU model and cores, torch's threads, GPU)."""
    import lightning_fabric
    import numpy as np
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "protosphere": __version__,
        "torch": torch.__version__,
        "lightning_fabric": lightning_fabric.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
    }
