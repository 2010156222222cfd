"""Where a run came from: the command that started it and the revision of the protosphere code that ran it."""

from __future__ import annotations

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
