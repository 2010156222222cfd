"""Fashion-MNIST and MNIST: IDX files found on this machine, or downloaded and verified.

Look-up order (the first folder that holds the four files wins):

1. ``root`` when given: the folder itself or ``root/<name>/`` (nothing else is searched, so a mistyped path fails
   loudly instead of quietly loading another copy; ``download=True`` then downloads into ``root/<name>/``);
2. ``$PROTOSPHERE_DATA/<name>/``;
3. the files of a Debian package (``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``; Debian has
   no MNIST package);
4. the user cache ``$XDG_CACHE_HOME/protosphere/<name>/`` (``~/.cache`` by default), which ``download=True`` fills from
   the official source.

Each of the four files may be gzip-compressed or raw, under its usual name with or without ``.gz`` (the
``train-images.idx3-ubyte`` spelling is accepted too). Files in the download cache must be the official ``.gz`` files,
so their MD5 is checked on every load. Whatever the location, the decoded content is checked: image and label counts,
28×28 images, labels 0–9, and for Fashion-MNIST a SHA-256 of each decoded payload. The content hash, not the MD5 of
the ``.gz``, is what identifies the data: repackaged archives (Debian's among them) differ byte-wise from the official
ones while holding the same arrays. For MNIST no copy was at hand to compute the content hashes from, so MNIST content
is verified by counts, shapes and label range only, plus the MD5 of downloaded files.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protosphere.data._files import cache_dir, data_home, download_file, fetch_hint, md5_file
from protosphere.data.base import ImageDataset
from protosphere.data.idx import read_idx
from protosphere.errors import DatasetError

__all__ = [
    "IdxDatasetSpec",
    "FASHION_MNIST",
    "MNIST",
    "IDX_FILES",
    "load_idx_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "idx_search_dirs",
    "find_idx_dataset",
    "download_dir",
    "how_to_get",
]

# key -> official file name without .gz
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_COUNTS = {"train": 60000, "test": 10000}


@dataclass(frozen=True)
class IdxDatasetSpec:
    """Everything that distinguishes one IDX dataset: names, official source, checksums and system locations."""

    name: str
    title: str
    class_names: tuple[str, ...]
    base_url: str
    gz_md5: dict[str, str]  # key of IDX_FILES -> MD5 of the official .gz
    content_sha256: dict[str, str] | None  # key of IDX_FILES -> SHA-256 of the decoded payload; None = not pinned
    system_dirs: tuple[str, ...]
    apt_package: str | None


FASHION_MNIST = IdxDatasetSpec(
    name="fashion_mnist",
    title="Fashion-MNIST",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    gz_md5={
        "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
        "test_images": "bef4ecab320f06d8554ea6380940ec79",
        "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    content_sha256={
        "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    apt_package="dataset-fashion-mnist",
)

MNIST = IdxDatasetSpec(
    name="mnist",
    title="MNIST",
    class_names=tuple(str(i) for i in range(10)),
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    gz_md5={
        "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
        "test_images": "9fb629c4189551a2d022fa330f9573f3",
        "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    content_sha256=None,
    system_dirs=(),
    apt_package=None,
)


def _candidates(stem: str) -> tuple[str, ...]:
    dotted = stem.replace("-idx", ".idx", 1)
    return (stem + ".gz", stem, dotted + ".gz", dotted)


def _files_in(directory: Path) -> dict[str, Path]:
    """The IDX files present in ``directory`` (key -> path); keys of absent files are missing from the result."""
    found: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        for candidate in _candidates(stem):
            path = directory / candidate
            if path.is_file():
                found[key] = path
                break
    return found


def idx_search_dirs(spec: IdxDatasetSpec, root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders searched for ``spec``, in order, each tagged ``root``, ``env``, ``system`` or ``cache``."""
    if root is not None:
        root = Path(root).expanduser()
        return [("root", root), ("root", root / spec.name)]
    dirs: list[tuple[str, Path]] = []
    home = data_home()
    if home is not None:
        dirs.append(("env", home / spec.name))
    dirs.extend(("system", Path(d)) for d in spec.system_dirs)
    dirs.append(("cache", cache_dir(spec.name)))
    return dirs


def download_dir(spec: IdxDatasetSpec, root: str | os.PathLike | None = None) -> Path:
    """Where ``download=True`` puts the files: ``root/<name>/`` when a root is given, else the user cache."""
    return Path(root).expanduser() / spec.name if root is not None else cache_dir(spec.name)


def find_idx_dataset(
    spec: IdxDatasetSpec, root: str | os.PathLike | None = None, download: bool = False
) -> tuple[str, Path, dict[str, Path]] | None:
    """The first searched folder that holds all four files, as (kind, folder, files); None when none does.

    A folder holding some but not all of the files is an error rather than a reason to look further: it is almost
    always an interrupted copy the user means to use. The exception is the download folder when ``download`` is
    set: the missing files are then simply fetched.
    """
    for kind, directory in idx_search_dirs(spec, root):
        files = _files_in(directory)
        if len(files) == len(IDX_FILES):
            return kind, directory, files
        if files and download and directory == download_dir(spec, root):
            return None
        if files:
            missing = ", ".join(IDX_FILES[k] + "[.gz]" for k in IDX_FILES if k not in files)
            raise DatasetError(
                f"{spec.title} in {directory} is incomplete (missing {missing}); copy the missing files there or "
                f"delete the folder"
                f"{f' and run `protosphere datasets --ensure {spec.name}`' if kind == 'cache' else ''}."
            )
    return None


def how_to_get(spec: IdxDatasetSpec) -> str:
    """The commands that make ``spec`` available, for error messages and ``protosphere datasets``."""
    ways = []
    if spec.apt_package:
        ways.append(f"`sudo apt-get install {spec.apt_package}`")
    ways.append(f"set PROTOSPHERE_DATA to a folder holding {spec.name}/ with the four IDX files")
    ways.append(fetch_hint(spec.name))
    return ", or ".join(ways)


def _missing_error(spec: IdxDatasetSpec, root: str | os.PathLike | None) -> DatasetError:
    looked = "; ".join(str(d) for _, d in idx_search_dirs(spec, root))
    return DatasetError(
        f"{spec.title} was not found (looked in {looked}); to get it, {how_to_get(spec)} "
        "(`protosphere datasets` shows where each dataset is looked for)."
    )


def _download(spec: IdxDatasetSpec, directory: Path) -> dict[str, Path]:
    present = _files_in(directory)
    for key, stem in IDX_FILES.items():
        if key not in present:
            present[key] = download_file(spec.base_url + stem + ".gz", directory / (stem + ".gz"), spec.gz_md5[key])
    return present


def _check_md5(spec: IdxDatasetSpec, key: str, path: Path) -> None:
    if path.suffix != ".gz":
        return
    got = md5_file(path)
    expected = spec.gz_md5[key]
    if got != expected:
        raise DatasetError(
            f"{path} has MD5 {got} but the official {IDX_FILES[key]}.gz has {expected}; delete {path} and "
            f"{fetch_hint(spec.name, again=True)}."
        )


def _decode(spec: IdxDatasetSpec, files: dict[str, Path], fix: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key, path in files.items():
        split, kind = key.split("_")
        expected_count = _COUNTS[split]
        arr = read_idx(path, expected_ndim=3 if kind == "images" else 1)
        if arr.dtype != np.uint8:
            raise DatasetError(f"{path} holds {arr.dtype} values but uint8 was expected; {fix}.")
        expected_shape = (expected_count, 28, 28) if kind == "images" else (expected_count,)
        if arr.shape != expected_shape:
            raise DatasetError(
                f"{path} holds an array of shape {arr.shape} but {spec.title} {IDX_FILES[key]} has shape "
                f"{expected_shape}; {fix}."
            )
        if spec.content_sha256 is not None:
            got = hashlib.sha256(arr.data).hexdigest()
            expected = spec.content_sha256[key]
            if got != expected:
                raise DatasetError(
                    f"{path} decodes to content with SHA-256 {got} but {spec.title} {IDX_FILES[key]} has {expected}; "
                    f"{fix}."
                )
        if kind == "labels" and arr.size and arr.max() >= len(spec.class_names):
            raise DatasetError(f"{path} has label {int(arr.max())} outside 0..{len(spec.class_names) - 1}; {fix}.")
        arrays[key] = arr
    return arrays


def load_idx_dataset(
    spec: IdxDatasetSpec, root: str | os.PathLike | None = None, download: bool = False
) -> ImageDataset:
    """Find (or, with ``download=True``, fetch), verify and decode an IDX dataset; see the module docstring."""
    found = find_idx_dataset(spec, root, download)
    if found is None:
        if not download:
            raise _missing_error(spec, root)
        target = download_dir(spec, root)
        kind, directory, files = ("download", target, _download(spec, target))
    else:
        kind, directory, files = found
    if kind in ("cache", "download"):
        for key, path in files.items():
            _check_md5(spec, key, path)
    if kind == "system" and spec.apt_package:
        fix = f"reinstall the package with `sudo apt-get install --reinstall {spec.apt_package}`"
    elif kind in ("cache", "download"):
        fix = f"delete {directory} and {fetch_hint(spec.name, again=True)}"
    else:
        fix = f"replace the files in {directory} with the official ones"
    arrays = _decode(spec, files, fix)
    return ImageDataset(
        name=spec.name,
        train_images=arrays["train_images"][..., None],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"][..., None],
        test_labels=arrays["test_labels"].astype(np.int64),
        class_names=spec.class_names,
        source=str(directory),
    )


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """Fashion-MNIST (60,000 train / 10,000 test, 28×28 grayscale, 10 classes), content verified by SHA-256."""
    return load_idx_dataset(FASHION_MNIST, root, download)


def load_mnist(root: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """MNIST (60,000 train / 10,000 test, 28×28 grayscale digits), verified by counts and, when cached, MD5."""
    return load_idx_dataset(MNIST, root, download)
