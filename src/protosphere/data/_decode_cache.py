"""Decode once, then memory-map: the on-disk array cache of datasets stored as image files.

The first load of an image-folder or zip dataset (ImageNet-100, DomainNet, Tiny-ImageNet) decodes every image with
:func:`~protosphere.data._images.decode_image` (RGB, bilinear resize to S×S) in ``workers`` processes, each writing
its rows straight into a uint8 ``.npy`` file of layout (N, 3, S, S), the layout scenarios hand to a network. Later
loads memory-map those files (``numpy.load(path, mmap_mode="c")``): pages are read from disk when first touched,
stay evictable page cache, and a write (none is expected) would go to a private copy, never to the file. Loaders
return the images as (N, S, S, 3) views (``transpose(0, 2, 3, 1)``, no copy), the layout of :class:`ImageDataset`,
so a scenario's ``transpose(0, 3, 1, 2)`` gives the file's own contiguous rows back and a task whose rows are one
contiguous range is a view of the file too.

**Where.** ``$PROTOSPHERE_DECODE_CACHE`` or ``<user cache>/protosphere/decoded`` (:func:`decode_cache_home`), one
folder per entry: ``<name>-<S>px-<id>/`` with ``<split>_images.npy`` (uint8 (N, 3, S, S)), ``<split>_labels.npy``
(int64 (N,)) and ``manifest.json``. ``id`` hashes what the arrays are: the source folder or archive, every image's
path (and archive member) in order with its label, and S. Another ``seed`` of DomainNet's seeded 80/20 split lists
the files in another order and so gets its own entry.

**Key.** The manifest holds a digest of that identity plus every source file's size and modification time (an
archive's own for its members), the cache format and the decoder (Pillow and its JPEG library, whose output could
change between versions). A load whose digest differs, because a file was replaced, touched, grew or shrank, decodes
again into the same folder.

**Never half-written.** Arrays are decoded into temporary names (``.<file>.<pid>.tmp``), flushed to disk and renamed
into place; ``manifest.json`` is written last (temporary name, fsync, rename) and removed first when an entry is
rebuilt. An entry is used only when its manifest exists, its digest matches and every file has the size and header
the manifest records, so a build killed at any point (temporary files, no manifest) is detected and rebuilt. One
process at a time checks or builds an entry (a lock file beside it), so the ranks of a DDP run decode once: the first
builds, the others wait and map it.

Decoded arrays are byte for byte what an in-memory decode of the same files in the same order gives, whatever the
number of workers (each writes only its own rows).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from protosphere.data._files import decode_cache_home
from protosphere.data._images import decode_image
from protosphere.errors import ConfigError, DatasetError
from protosphere.threads import usable_cores

__all__ = ["Encoded", "load_decoded", "check_workers", "usable_cores", "CACHE_FORMAT"]

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)


@dataclass(frozen=True)
class Encoded:
    """One encoded image: a file (``member`` None) or a member of the zip archive ``path``; ``where`` names it in
    messages."""

    where: str
    path: str
    member: str | None = None


def check_workers(workers: object) -> int:
    """``data.workers`` as an int: the usable cores when None; otherwise a whole number from 1 to 4 × the usable
    cores (more processes than that only wait for a core)."""
    cores = usable_cores()
    if workers is None:
        return cores
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or not 1 <= workers <= 4 * cores:
        raise ConfigError(
            f"data.workers={workers!r} is not a number of decode processes; use a whole number from 1 to {4 * cores} "
            f"(4 × the {cores} usable CPU core(s)), or leave it unset for {cores}."
        )
    return int(workers)


# ----------------------------------------------------------------------------------------------- worker processes

_ARCHIVES: dict[str, zipfile.ZipFile] = {}  # per process: each worker opens an archive once


def _read(item: Encoded) -> bytes:
    if item.member is None:
        try:
            return Path(item.path).read_bytes()
        except OSError as exc:
            raise DatasetError(
                f"{item.where} cannot be read ({exc}); check that the file exists and is readable."
            ) from exc
    try:
        archive = _ARCHIVES.get(item.path)
        if archive is None:
            archive = _ARCHIVES[item.path] = zipfile.ZipFile(item.path)
        return archive.read(item.member)
    except KeyError:
        raise DatasetError(
            f"{item.where} is missing; the archive {item.path} is incomplete, fetch the official one again."
        ) from None
    except _ZIP_ERRORS as exc:
        raise DatasetError(
            f"{item.path} is a truncated or corrupt zip archive ({type(exc).__name__}: {exc}, reading {item.where}); "
            "delete it and fetch the official archive again."
        ) from exc


def _close_archives() -> None:
    while _ARCHIVES:
        _ARCHIVES.popitem()[1].close()


def _decode_rows(target: str, start: int, items: Sequence[Encoded], size: int) -> int:
    """Decode ``items`` into rows ``start …`` of the (N, 3, size, size) ``.npy`` file ``target``; runs in a worker."""
    out = np.load(target, mmap_mode="r+")
    try:
        for offset, item in enumerate(items):
            out[start + offset] = decode_image(_read(item), size, item.where).transpose(2, 0, 1)
        out.flush()
    finally:
        del out
    return len(items)


# ---------------------------------------------------------------------------------------------------- the entry


def _digests(
    name: str, origin: str, splits: Mapping[str, tuple[Sequence[Encoded], np.ndarray]], size: int
) -> tuple[str, str]:
    """(identity, key): what the arrays are, and that plus every source file's size and mtime and the decoder."""
    import PIL
    from PIL import features

    identity = hashlib.sha256()
    identity.update(json.dumps([CACHE_FORMAT, name, origin, size]).encode())
    stats: dict[str, tuple[int, int]] = {}
    key = hashlib.sha256()
    for split, (items, labels) in splits.items():
        identity.update(json.dumps(["split", split, len(items)]).encode())
        for item, label in zip(items, labels.tolist()):
            identity.update(json.dumps([item.path, item.member, label]).encode())
            stat = stats.get(item.path)
            if stat is None:
                try:
                    st = os.stat(item.path)
                except OSError as exc:
                    raise DatasetError(
                        f"{item.where} cannot be read ({exc}); check that the file exists and is readable."
                    ) from exc
                stat = stats[item.path] = (st.st_size, st.st_mtime_ns)
            key.update(b"%d %d\n" % stat)
    identity_hex = identity.hexdigest()
    decoder = [PIL.__version__, features.version_codec("jpg"), features.version_codec("zlib")]
    key.update(json.dumps([identity_hex, decoder]).encode())
    return identity_hex, key.hexdigest()


def _files(split: str) -> tuple[str, str]:
    return f"{split}_images.npy", f"{split}_labels.npy"


def _open_entry(folder: Path, key: str, splits, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The entry's arrays, memory-mapped, or None when it is missing, partial, stale or damaged."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT or manifest.get("key") != key:
        return None
    arrays = manifest.get("arrays")
    if not isinstance(arrays, dict):
        return None
    out = {}
    for split, (items, labels) in splits.items():
        n = len(items)
        images_file, labels_file = _files(split)
        for file in (images_file, labels_file) if n else (labels_file,):  # an empty split has no image file
            recorded, path = arrays.get(file), folder / file
            if not isinstance(recorded, dict) or not path.is_file() or path.stat().st_size != recorded.get("bytes"):
                return None
        try:
            stored = np.load(folder / labels_file)
            images = np.load(folder / images_file, mmap_mode="c") if n else np.empty((0, 3, size, size), np.uint8)
        except (OSError, ValueError):
            return None
        if images.shape != (n, 3, size, size) or images.dtype != np.uint8 or not np.array_equal(stored, labels):
            return None
        out[split] = (images.transpose(0, 2, 3, 1), stored)
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def _allocate(path: Path, shape: tuple[int, ...]) -> None:
    """Create the (N, 3, S, S) uint8 ``.npy`` file with every block allocated, so a full disk fails here as an
    OSError instead of later as a SIGBUS inside a worker's memory map."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    del array
    if hasattr(os, "posix_fallocate"):
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)


def _context() -> multiprocessing.context.BaseContext:
    """fork on Linux, as torch's DataLoader starts its workers: a worker runs only file reads, Pillow and numpy
    (never the parent's threads, OpenMP or CUDA), and the script that loads the dataset is not run again in each
    worker, which spawn (elsewhere) does unless its top-level code sits under ``if __name__ == "__main__":``."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _decode_all(jobs: list[tuple[str, int, list[Encoded], int]], workers: int) -> None:
    if workers == 1:
        try:
            for job in jobs:
                _decode_rows(*job)
        finally:
            _close_archives()
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_context())
    try:
        futures = [pool.submit(_decode_rows, *job) for job in jobs]
        for future in futures:  # in order, so a bad file is reported as the sequential decode would report it
            future.result()
    except BrokenProcessPool as exc:
        pool.shutdown(wait=True, cancel_futures=True)
        raise DatasetError(
            f"a decode process stopped abruptly ({exc}); its own message, if any, is printed above, otherwise it "
            f"most likely ran out of memory: set data.workers lower than {workers}."
        ) from exc
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _amount(n: int) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n:,} bytes"


def _build(folder: Path, key: str, name: str, origin: str, splits, size: int, workers: int) -> None:
    manifest = folder / MANIFEST
    manifest.unlink(missing_ok=True)  # first: from here on the entry is invalid until it is complete again
    # temporary files of a killed build (we hold the lock: nobody writes them) and the stale arrays, whose space the
    # new ones need (a process that still maps them keeps reading them until it unmaps them)
    for stale in [*folder.glob(".*.tmp"), *folder.glob("*.npy")]:
        stale.unlink()
    total = sum(len(items) for items, _ in splits.values())
    need = total * 3 * size * size
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DatasetError(
            f"decoding {name} at {size} px needs {_amount(need)} in {folder} but only {_amount(free)} is free; free "
            "space there, or set PROTOSPHERE_DECODE_CACHE to a folder on a disk with room."
        )
    tag = f".{os.getpid()}.tmp"
    temporary: dict[Path, Path] = {}
    jobs: list[tuple[str, int, list[Encoded], int]] = []
    chunk = max(1, min(256, math.ceil(total / (4 * workers))))
    try:
        for split, (items, labels) in splits.items():
            images_file, labels_file = _files(split)
            if items:
                tmp = folder / f".{images_file}{tag}"
                temporary[tmp] = folder / images_file
                _allocate(tmp, (len(items), 3, size, size))
                jobs += [(str(tmp), s, list(items[s : s + chunk]), size) for s in range(0, len(items), chunk)]
            tmp = folder / f".{labels_file}{tag}"
            temporary[tmp] = folder / labels_file
            _write_npy(tmp, np.asarray(labels, dtype=np.int64))
        print(
            f"decoding {total:,} images of {origin} at {size} px into {folder} with {min(workers, len(jobs) or 1)} "
            "process(es), once: later loads memory-map it",
            file=sys.stderr,
            flush=True,
        )
        _decode_all(jobs, workers)
        arrays = {}
        for tmp, final in temporary.items():
            _fsync(tmp)
            arrays[final.name] = {"bytes": tmp.stat().st_size}
        for tmp, final in temporary.items():
            os.replace(tmp, final)
        tmp = folder / f".{MANIFEST}{tag}"
        temporary[tmp] = manifest
        record = {"format": CACHE_FORMAT, "key": key, "name": name, "source": origin, "image_size": size}
        tmp.write_text(json.dumps({**record, "arrays": arrays}, indent=1), encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, manifest)
        if os.name == "posix":  # the renames themselves reach the disk (a folder cannot be opened on Windows)
            _fsync(folder)
    except OSError as exc:
        raise DatasetError(
            f"cannot write the decoded cache of {name} in {folder} ({exc.strerror or exc}), so nothing usable was "
            "kept; free space there or set PROTOSPHERE_DECODE_CACHE to a writable folder with room."
        ) from exc
    finally:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)


def load_decoded(
    name: str,
    origin: str | os.PathLike,
    splits: Mapping[str, tuple[Sequence[Encoded], np.ndarray]],
    size: int,
    *,
    workers: int | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The decoded images and labels of each split, from the cache when its entry is current, else decoded now.

    Args:
        name: the dataset's name (the entry folder starts with it).
        origin: the folder or archive the images come from.
        splits: split name → (the encoded images in order, their int64 labels (N,)).
        size: side S of the square images.
        workers: decode processes (None: the usable cores; 1 decodes in this process).

    Returns:
        split name → (uint8 (N, S, S, 3) memory-mapped view, int64 (N,) labels).
    """
    from filelock import FileLock, Timeout

    if getattr(multiprocessing.current_process(), "_inheriting", False):  # as multiprocessing's own start check
        raise DatasetError(
            f"{name} is being loaded again inside a starting decode process, because the script that loads it runs "
            'its top-level code in every new process; put that code under `if __name__ == "__main__":` (or set '
            "data.workers=1)."
        )
    workers = check_workers(workers)
    origin = str(Path(origin).expanduser().resolve())
    splits = {  # absolute paths: the same files reached from another working directory are the same entry
        split: ([Encoded(i.where, os.path.abspath(i.path), i.member) for i in items], np.asarray(labels, np.int64))
        for split, (items, labels) in splits.items()
    }
    identity, key = _digests(name, origin, splits, size)
    home = decode_cache_home()
    folder = home / f"{name}-{size}px-{identity[:16]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"waiting for another process decoding into {folder}", file=sys.stderr, flush=True)
            lock.acquire()
    except OSError as exc:
        raise DatasetError(
            f"cannot create the decoded cache of {name} in {folder} ({exc.strerror or exc}); set "
            "PROTOSPHERE_DECODE_CACHE to a writable folder."
        ) from exc
    try:
        arrays = _open_entry(folder, key, splits, size)
        if arrays is None:
            _build(folder, key, name, origin, splits, size, workers)
            arrays = _open_entry(folder, key, splits, size)
            if arrays is None:  # pragma: no cover - only if the files changed under us
                raise DatasetError(
                    f"the decoded cache {folder} was changed by something else while it was written; delete it and "
                    "load the dataset again."
                )
        return arrays
    finally:
        lock.release()
