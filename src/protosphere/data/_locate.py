"""Shared look-up rules for datasets that live in one folder (or one archive) per dataset.

``root`` when given is the only place searched (the folder itself, then ``root/<name>/``), so a mistyped path fails
instead of silently loading another copy; otherwise ``$PROTOSPHERE_DATA/<name>/`` and then the user download cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from protosphere.data._files import cache_dir, data_home

__all__ = ["search_dirs", "download_target"]


def search_dirs(name: str, root: str | os.PathLike | None, *, with_cache: bool = True) -> list[tuple[str, Path]]:
    """Folders to search for dataset ``name``, in order, each tagged ``root``, ``env`` or ``cache``."""
    if root is not None:
        root = Path(root).expanduser()
        return [("root", root), ("root", root / name)]
    dirs: list[tuple[str, Path]] = []
    home = data_home()
    if home is not None:
        dirs.append(("env", home / name))
    if with_cache:
        dirs.append(("cache", cache_dir(name)))
    return dirs


def download_target(name: str, root: str | os.PathLike | None) -> Path:
    """Where ``download=True`` stores dataset ``name``: ``root/<name>/`` when a root is given, else the user cache."""
    return Path(root).expanduser() / name if root is not None else cache_dir(name)
