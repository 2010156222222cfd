"""Where datasets live on disk, checksums, and downloads that never leave a half-written file behind.

A download goes to a temporary file in the destination folder and is renamed into place (``os.replace``, atomic on
one file system) only after its MD5 matches the published one, so a file with the final name is always complete and
verified. :func:`fetch_url` is the only function that touches the network; tests replace it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from protosphere.errors import DatasetError

__all__ = ["data_home", "cache_dir", "decode_cache_home", "md5_file", "fetch_url", "download_file", "fetch_hint"]

_CHUNK = 1 << 20


def data_home() -> Path | None:
    """The folder named by ``$PROTOSPHERE_DATA`` (datasets live in ``<it>/<name>/``), or None when it is not set."""
    value = os.environ.get("PROTOSPHERE_DATA", "").strip()
    return Path(value).expanduser() if value else None


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "protosphere"


def cache_dir(name: str) -> Path:
    """The per-user download cache of one dataset: ``$XDG_CACHE_HOME/protosphere/<name>`` (default ``~/.cache``)."""
    return _user_cache() / name


def decode_cache_home() -> Path:
    """Where datasets stored as image files keep their decoded arrays: ``$PROTOSPHERE_DECODE_CACHE``, else
    ``$XDG_CACHE_HOME/protosphere/decoded`` (default ``~/.cache``); see :mod:`protosphere.data._decode_cache`."""
    value = os.environ.get("PROTOSPHERE_DECODE_CACHE", "").strip()
    return Path(value).expanduser() if value else _user_cache() / "decoded"


def fetch_hint(name: str, what: str = "it", again: bool = False) -> str:
    """How to download dataset ``name`` into the user cache: the command first, then the config key and Python."""
    where = "again" if again else f"into {cache_dir(name)}"
    return (
        f"run `protosphere datasets --ensure {name}` (data.download=true in a run's config, download=True in "
        f"Python) to fetch {what} {where}"
    )


def md5_file(path: str | os.PathLike) -> str:
    """MD5 hex digest of a file, read in chunks (published dataset checksums are MD5)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch_url(url: str, destination: str | os.PathLike) -> None:
    """Copy the bytes at ``url`` into the (already created) file ``destination``; network errors propagate."""
    request = urllib.request.Request(url, headers={"User-Agent": "protosphere"})
    with urllib.request.urlopen(request, timeout=60) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, _CHUNK)


def download_file(url: str, destination: str | os.PathLike, md5: str) -> Path:
    """Download ``url`` to ``destination`` and return its path; the file appears only once its MD5 is ``md5``.

    Any failure (network error, wrong checksum, interruption) removes the temporary file and raises
    :class:`DatasetError`, so a later run never mistakes a partial download for a good one.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            fetch_url(url, tmp)
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
            raise DatasetError(
                f"could not download {url} to {destination} ({exc}); check the internet connection, or fetch the file "
                f"by hand and place it at {destination}."
            ) from exc
        got = md5_file(tmp)
        if got != md5:
            raise DatasetError(
                f"the download of {url} has MD5 {got} but {md5} was expected, so it was discarded and nothing was "
                f"written to {destination}; retry later, or fetch the file by hand and check it."
            )
        os.replace(tmp, destination)
    finally:
        if tmp.exists():
            tmp.unlink()
    return destination
