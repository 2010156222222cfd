"""CIFAR-10 and CIFAR-100 from the official "python version" archives.

Accepted layouts, in each searched folder (see :mod:`protosphere.data._locate`): the archive itself
(``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``, read in place without extracting), the extracted folder
(``cifar-10-batches-py/`` / ``cifar-100-python/``), or that folder's contents directly; ``root`` may also name the
archive file. CIFAR-10 is ``data_batch_1..5`` + ``test_batch`` with ``batches.meta``; CIFAR-100 is ``train`` + ``test``
with ``meta``, and its 100 fine labels are used. Every row is 3072 bytes (1024 red, 1024 green, 1024 blue, row-major
32×32), returned as (N, 32, 32, 3).

The batches are Python pickles. Unpickling can run arbitrary code, so only files the user points to (or the official
archive fetched with ``download=True`` and checked by MD5) are read, and with an unpickler that accepts nothing but
plain containers and numpy arrays: a file asking for anything else is rejected as not a CIFAR batch.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protosphere.data._files import download_file, fetch_hint, md5_file
from protosphere.data._locate import download_target, search_dirs
from protosphere.data.base import ImageDataset
from protosphere.errors import DatasetError

__all__ = ["CifarSpec", "CIFAR10", "CIFAR100", "load_cifar", "load_cifar10", "load_cifar100", "find_cifar"]


@dataclass(frozen=True)
class CifarSpec:
    name: str
    title: str
    archive: str  # official archive file name
    folder: str  # folder inside the archive
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    meta_member: str
    label_key: str
    names_key: str
    url: str
    md5: str


CIFAR10 = CifarSpec(
    name="cifar10",
    title="CIFAR-10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train_members=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_members=("test_batch",),
    meta_member="batches.meta",
    label_key="labels",
    names_key="label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)

CIFAR100 = CifarSpec(
    name="cifar100",
    title="CIFAR-100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train_members=("train",),
    test_members=("test",),
    meta_member="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)

_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild ``bytes``; only the latin-1 form is accepted."""
    if encoding.replace("_", "-").lower() not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed in a CIFAR batch")
    return text.encode("latin-1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler limited to builtin containers and numpy arrays: enough for CIFAR, useless to an attacker."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch") from None


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any failure to decode means the file is not a CIFAR batch
        raise DatasetError(
            f"{where} is not a readable CIFAR batch ({type(exc).__name__}: {exc}); delete it and fetch the official "
            "archive again."
        ) from exc
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{where} holds a {type(obj).__name__}, not a CIFAR batch dictionary; replace it with the official file."
        )
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _batch_arrays(batch: dict, spec: CifarSpec, where: str) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", spec.label_key):
        if key not in batch:
            raise DatasetError(
                f"{where} has no {key!r} entry (keys: {sorted(batch)}); it is not a {spec.title} batch, replace it "
                "with the official file."
            )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[spec.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(
            f"{where} holds data of dtype {data.dtype} and shape {data.shape}, but a {spec.title} batch is uint8 with "
            "3072 bytes per row; replace it with the official file."
        )
    if labels.ndim != 1 or len(labels) != len(data) or (labels.size and labels.dtype.kind not in "iu"):
        raise DatasetError(
            f"{where} has {labels.size} labels for {len(data)} images; the file is truncated or corrupt, replace it "
            "with the official file."
        )
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)


class _Source:
    """Reads members of a CIFAR release from an archive or a folder with the same names."""

    def __init__(self, spec: CifarSpec, path: Path):
        self.spec, self.path = spec, path
        self.is_archive = path.is_file()

    def _read_file(self, member: str) -> tuple[bytes, str]:
        file = self.path / member
        try:
            return file.read_bytes(), str(file)
        except OSError as exc:
            raise DatasetError(
                f"{file} cannot be read ({exc}); restore the {self.spec.title} folder from the official archive."
            ) from exc

    def read_all(self, members: list[str]) -> dict[str, tuple[bytes, str]]:
        """All ``members`` in one pass over the archive (a .tar.gz cannot seek, so one pass per member is slow)."""
        if not self.is_archive:
            return {m: self._read_file(m) for m in members}
        wanted = {f"{self.spec.folder}/{m}": m for m in members}
        out: dict[str, tuple[bytes, str]] = {}
        try:
            with tarfile.open(self.path, "r:*") as tar:
                for info in tar:
                    member = wanted.get(info.name)
                    if member is None or not info.isfile():
                        continue
                    f = tar.extractfile(info)
                    out[member] = (f.read(), f"{self.path}:{info.name}")
                    if len(out) == len(wanted):
                        break
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise DatasetError(
                f"{self.path} is a truncated or corrupt archive ({type(exc).__name__}: {exc}); delete it and fetch "
                f"the official {self.spec.archive} again."
            ) from exc
        missing = [f"{self.spec.folder}/{m}" for m in members if m not in out]
        if missing:
            raise DatasetError(
                f"{self.path} lacks {', '.join(missing)}; it is not the complete official {self.spec.archive}, delete "
                "it and fetch it again."
            )
        return out


def _source_in(spec: CifarSpec, location: Path) -> Path | None:
    """The archive or folder of ``spec`` at ``location`` (a folder, or the archive file itself), or None."""
    if location.is_file():
        return location
    for candidate in (location / spec.archive, location / spec.folder, location):
        if candidate.is_file() or (candidate / spec.meta_member).is_file():
            return candidate
    return None


def find_cifar(spec: CifarSpec, root: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """The first archive or folder holding ``spec``, as (kind, path), or None."""
    for kind, directory in search_dirs(spec.name, root):
        found = _source_in(spec, directory)
        if found is not None:
            return kind, found
    return None


def how_to_get(spec: CifarSpec) -> str:
    return (
        f"{fetch_hint(spec.name, spec.archive)}, or download it from {spec.url} and set PROTOSPHERE_DATA to a folder "
        f"holding {spec.name}/{spec.archive} (or pass its folder as data.root=...)"
    )


def load_cifar(spec: CifarSpec, root: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """Load CIFAR-10 or CIFAR-100 (fine labels) as uint8 (N, 32, 32, 3) arrays; see the module docstring."""
    found = find_cifar(spec, root)
    if found is None:
        if not download:
            looked = "; ".join(str(d) for _, d in search_dirs(spec.name, root))
            raise DatasetError(
                f"{spec.title} was not found (looked in {looked}); to get it, {how_to_get(spec)} "
                "(`protosphere datasets` shows where each dataset is looked for)."
            )
        path = download_file(spec.url, download_target(spec.name, root) / spec.archive, spec.md5)
        kind = "download"
    else:
        kind, path = found
    if kind == "cache" and path.is_file():
        got = md5_file(path)
        if got != spec.md5:
            raise DatasetError(
                f"{path} has MD5 {got} but the official {spec.archive} has {spec.md5}; delete {path} and "
                f"{fetch_hint(spec.name, again=True)}."
            )
    source = _Source(spec, path)
    members = [spec.meta_member, *spec.train_members, *spec.test_members]
    raw = source.read_all(members)
    meta = _unpickle(*raw[spec.meta_member])
    names = meta.get(spec.names_key)
    if not isinstance(names, (list, tuple)) or not names:
        raise DatasetError(
            f"{raw[spec.meta_member][1]} has no {spec.names_key!r} list; it is not the {spec.title} meta file, replace "
            "it with the official one."
        )
    class_names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)

    def split(members_: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_batch_arrays(_unpickle(*raw[m]), spec, raw[m][1]) for m in members_]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    train_images, train_labels = split(spec.train_members)
    test_images, test_labels = split(spec.test_members)
    return ImageDataset(
        name=spec.name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
        source=str(path),
    )


def load_cifar10(root: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """CIFAR-10: 50,000 train / 10,000 test colour images, 32×32, 10 classes."""
    return load_cifar(CIFAR10, root, download)


def load_cifar100(root: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """CIFAR-100: 50,000 train / 10,000 test colour images, 32×32, 100 fine classes."""
    return load_cifar(CIFAR100, root, download)
