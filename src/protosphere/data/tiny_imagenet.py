"""Tiny-ImageNet-200 from the official zip (read in place) or its extracted folder.

Layout of ``tiny-imagenet-200.zip`` (and of the folder ``tiny-imagenet-200/``): ``wnids.txt`` (the 200 WordNet ids),
``words.txt`` (id → names), ``train/<wnid>/images/*.JPEG`` (500 per class) and ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (tab-separated: file, wnid, box). The labelled validation set serves as the test split
(the official test images carry no labels). Labels index the **sorted** wnids, as a folder-per-class loader would
number them; ``class_names`` holds the first name of each wnid in ``words.txt`` (the wnid when absent or ambiguous).
Images are 64×64 and are converted to RGB (a few are grayscale); ``image_size`` other than 64 resizes them. The first
load decodes them (in ``workers`` processes, each reading the archive itself) into an on-disk array cache keyed by the
archive's size and modification time; later loads memory-map it (:mod:`protosphere.data._decode_cache`).
"""

from __future__ import annotations

import os
import posixpath
import zipfile
import zlib
from pathlib import Path

from protosphere.data._decode_cache import Encoded, check_workers, load_decoded
from protosphere.data._files import download_file, fetch_hint, md5_file
from protosphere.data._images import check_image_size
from protosphere.data._locate import download_target, search_dirs
from protosphere.data.base import ImageDataset
from protosphere.errors import DatasetError

__all__ = ["load_tiny_imagenet", "find_tiny_imagenet", "TINY_URL", "TINY_MD5", "TINY_ARCHIVE"]

NAME = "tiny_imagenet"
TINY_ARCHIVE = "tiny-imagenet-200.zip"
TINY_FOLDER = "tiny-imagenet-200"
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)


def _corrupt(path: Path, exc: BaseException) -> DatasetError:
    return DatasetError(
        f"{path} is a truncated or corrupt zip archive ({type(exc).__name__}: {exc}); delete it and fetch the official "
        f"{TINY_ARCHIVE} again."
    )


class _Tree:
    """Uniform read access to the release, inside the zip or in a folder."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        self._listing: dict[str, list[str]] | None = None
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except _ZIP_ERRORS as exc:
                raise _corrupt(path, exc) from exc
            names = self.zip.namelist()
            self.names = set(names)
            self.prefix = TINY_FOLDER + "/" if f"{TINY_FOLDER}/wnids.txt" in self.names else ""

    def where(self, rel: str) -> str:
        return f"{self.path}:{self.prefix}{rel}" if self.zip else str(self.path / rel)

    def exists(self, rel: str) -> bool:
        return (self.prefix + rel) in self.names if self.zip else (self.path / rel).is_file()

    def encoded(self, rel: str) -> Encoded:
        """``rel`` as a decode job: the member of the archive, or the file of the folder."""
        if self.zip is None:
            return Encoded(self.where(rel), str(self.path / rel))
        return Encoded(self.where(rel), str(self.path), self.prefix + rel)

    def read(self, rel: str) -> bytes:
        if self.zip is None:
            return (self.path / rel).read_bytes()
        try:
            return self.zip.read(self.prefix + rel)
        except KeyError:
            raise DatasetError(
                f"{self.where(rel)} is missing; the archive is incomplete, fetch the official {TINY_ARCHIVE} again."
            ) from None
        except _ZIP_ERRORS as exc:
            raise _corrupt(self.path, exc) from exc

    def text(self, rel: str) -> str:
        if not self.exists(rel):
            raise DatasetError(
                f"{self.where(rel)} is missing; {self.path} is not a complete Tiny-ImageNet-200 release, replace it "
                f"with the official {TINY_ARCHIVE}."
            )
        try:
            return self.read(rel).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{self.where(rel)} is not UTF-8 text ({exc}); replace it with the official file."
            ) from exc

    def list_dir(self, rel: str) -> list[str]:
        """File names directly inside folder ``rel``."""
        if self.zip is None:
            folder = self.path / rel
            return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        if self._listing is None:  # one pass over the 120k member names instead of one per class
            self._listing = {}
            for n in self.names:
                folder, _, file = n.rpartition("/")
                if file:
                    self._listing.setdefault(folder, []).append(file)
        return sorted(self._listing.get(self.prefix + rel.rstrip("/"), []))

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _source_in(location: Path) -> Path | None:
    if location.is_file():
        return location
    for candidate in (location / TINY_ARCHIVE, location / TINY_FOLDER, location):
        if candidate.is_file() or (candidate / "wnids.txt").is_file():
            return candidate
    return None


def find_tiny_imagenet(root: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """The first zip or folder holding Tiny-ImageNet-200, as (kind, path), or None."""
    for kind, directory in search_dirs(NAME, root):
        found = _source_in(directory)
        if found is not None:
            return kind, found
    return None


def how_to_get() -> str:
    return (
        f"{fetch_hint(NAME, TINY_ARCHIVE)}, or download it from {TINY_URL} and set PROTOSPHERE_DATA to a folder "
        f"holding {NAME}/{TINY_ARCHIVE} (or pass its folder as data.root=...)"
    )


def _class_names(tree: _Tree, wnids: list[str]) -> tuple[str, ...]:
    words: dict[str, str] = {}
    if tree.exists("words.txt"):
        for line in tree.text("words.txt").splitlines():
            wnid, _, names = line.partition("\t")
            if wnid.strip() in wnids and names.strip():
                words[wnid.strip()] = names.split(",")[0].strip()
    names = [words.get(w, w) for w in wnids]
    counts = {n: names.count(n) for n in names}
    return tuple(n if counts[n] == 1 else f"{n} ({w})" for n, w in zip(names, wnids))


def load_tiny_imagenet(
    root: str | os.PathLike | None = None, download: bool = False, image_size: int = 64, workers: int | None = None
) -> ImageDataset:
    """Load Tiny-ImageNet-200 (100,000 train / 10,000 labelled val images, 200 classes); see the module docstring."""
    size = check_image_size(image_size)
    workers = check_workers(workers)
    found = find_tiny_imagenet(root)
    if found is None:
        if not download:
            looked = "; ".join(str(d) for _, d in search_dirs(NAME, root))
            raise DatasetError(
                f"Tiny-ImageNet-200 was not found (looked in {looked}); to get it, {how_to_get()} "
                "(`protosphere datasets` shows where each dataset is looked for)."
            )
        path, kind = download_file(TINY_URL, download_target(NAME, root) / TINY_ARCHIVE, TINY_MD5), "download"
    else:
        kind, path = found
    if kind == "cache" and path.is_file():
        got = md5_file(path)
        if got != TINY_MD5:
            raise DatasetError(
                f"{path} has MD5 {got} but the official {TINY_ARCHIVE} has {TINY_MD5}; delete {path} and "
                f"{fetch_hint(NAME, again=True)}."
            )
    tree = _Tree(path)
    try:
        wnids = sorted({w.strip() for w in tree.text("wnids.txt").split() if w.strip()})
        if not wnids:
            raise DatasetError(f"{tree.where('wnids.txt')} lists no classes; replace it with the official file.")
        index = {w: i for i, w in enumerate(wnids)}

        train_items, train_labels = [], []
        for wnid in wnids:
            files = [f for f in tree.list_dir(f"train/{wnid}/images") if f.lower().endswith((".jpeg", ".jpg", ".png"))]
            if not files:
                raise DatasetError(
                    f"{tree.where(f'train/{wnid}/images/')} holds no images for class {wnid} listed in wnids.txt; the "
                    f"release is incomplete, replace it with the official {TINY_ARCHIVE}."
                )
            for f in files:
                rel = f"train/{wnid}/images/{f}"
                train_items.append(tree.encoded(rel))
                train_labels.append(index[wnid])

        val_items, val_labels = [], []
        for lineno, line in enumerate(tree.text("val/val_annotations.txt").splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1].strip() not in index:
                raise DatasetError(
                    f"{tree.where('val/val_annotations.txt')} line {lineno} is not 'file<TAB>wnid<TAB>box' with a wnid "
                    "from wnids.txt; replace it with the official file."
                )
            rel = posixpath.join("val/images", fields[0].strip())
            if not tree.exists(rel):
                raise DatasetError(
                    f"{tree.where(rel)}, listed in val_annotations.txt, is missing; the release is incomplete, replace "
                    f"it with the official {TINY_ARCHIVE}."
                )
            val_items.append(tree.encoded(rel))
            val_labels.append(index[fields[1].strip()])

        class_names = _class_names(tree, wnids)
    finally:
        tree.close()
    splits = {"train": (train_items, train_labels), "test": (val_items, val_labels)}
    arrays = load_decoded(NAME, str(path), splits, size, workers=workers)
    (train_images, train_labels), (test_images, test_labels) = arrays["train"], arrays["test"]
    return ImageDataset(
        name=NAME,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
        source=str(path),
    )
