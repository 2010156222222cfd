"""Reader for the IDX format of MNIST and Fashion-MNIST, gzip-compressed or raw.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
payload in row-major order. The reader checks all of it (magic, sizes, and that the payload has exactly the announced
length, no more and no less), because a truncated or foreign file otherwise turns into silently wrong images. Whether
a file is compressed is decided by its first two bytes (gzip's ``1f 8b``), not by its name, since both
``train-images-idx3-ubyte`` and ``train-images-idx3-ubyte.gz`` circulate with either content.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from protosphere.errors import DatasetError

__all__ = ["read_idx", "IDX_TYPES"]

# type byte -> big-endian dtype, as listed in the format's definition.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _refetch_hint(path: Path) -> str:
    return (
        f"delete {path} and fetch it again (`protosphere datasets --ensure NAME` with the dataset's name, or "
        f"reinstall the package that provides it)"
    )


def _read_exact(stream, n: int, path: Path, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise DatasetError(
            f"{path} is truncated: it ends inside the {what} ({len(data)} of {n} bytes); {_refetch_hint(path)}."
        )
    return data


def read_idx(path: str | os.PathLike, *, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a writable, native-endian array of the announced shape.

    Raises :class:`DatasetError` naming the file when the magic number, the number of dimensions (if
    ``expected_ndim`` is given) or the payload length is wrong, or when the gzip stream is truncated or corrupt.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            try:
                return _parse(stream, path, expected_ndim)
            finally:
                if compressed:
                    stream.close()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path} does not exist; check the path or fetch the dataset again.") from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path} is a truncated or corrupt gzip file ({exc}); {_refetch_hint(path)}.") from exc
    except IsADirectoryError as exc:
        raise DatasetError(f"{path} is a directory, not an IDX file; point to the file itself.") from exc
    except PermissionError as exc:
        raise DatasetError(f"{path} cannot be read ({exc}); fix its permissions.") from exc


def _parse(stream, path: Path, expected_ndim: int | None) -> np.ndarray:
    magic = _read_exact(stream, 4, path, "4-byte magic number")
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES or magic[3] == 0:
        raise DatasetError(
            f"{path} is not an IDX file (magic number {magic.hex()}, expected 0000 followed by a type byte such as 08 "
            f"and the number of dimensions); {_refetch_hint(path)}."
        )
    dtype = IDX_TYPES[magic[2]]
    ndim = magic[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DatasetError(
            f"{path} holds a {ndim}-dimensional IDX array but a {expected_ndim}-dimensional one was expected (magic "
            f"{magic.hex()}); the file is in the wrong place or mislabelled, {_refetch_hint(path)}."
        )
    dims = np.frombuffer(_read_exact(stream, 4 * ndim, path, "dimension header"), dtype=">u4").astype(np.int64)
    shape = tuple(int(d) for d in dims)
    count = int(np.prod(dims)) if ndim else 0
    out = np.empty(count, dtype=dtype)
    view = memoryview(out).cast("B")
    got = 0
    while got < view.nbytes:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    if got != view.nbytes:
        raise DatasetError(
            f"{path} is truncated: its header announces shape {shape} ({view.nbytes} payload bytes) but only {got} "
            f"bytes follow; {_refetch_hint(path)}."
        )
    extra = len(stream.read(1 << 16))
    if extra:
        raise DatasetError(
            f"{path} has data after the {view.nbytes} payload bytes its header announces for shape {shape}; the file "
            f"is corrupt or not the one expected, {_refetch_hint(path)}."
        )
    if dtype.byteorder == ">":
        out = out.astype(dtype.newbyteorder("="))
    return out.reshape(shape)
