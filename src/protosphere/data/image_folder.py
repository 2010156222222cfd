"""Datasets stored as folders of images: ImageNet-100 and DomainNet.

ImageNet-100 is expected as ``<root>/train/<class>/<image>`` and ``<root>/val/<class>/<image>`` (the usual layout
of ImageNet subsets; the class folders are normally WordNet ids). Labels index the sorted class folders of ``train``;
a ``val`` folder naming a class absent from ``train`` is an error.

DomainNet is expected as ``<root>/<domain>/<class>/<image>`` with, when present, the official split files
``<root>/<domain>_train.txt`` and ``<root>/<domain>_test.txt`` (one ``<domain>/<class>/<file> <label>`` per line, paths
relative to ``<root>``). Without them, each class of each domain is shuffled with a generator seeded by ``seed`` and
the domain's name, and ``floor(n/5)`` of its n images become test images (an 80/20 split that is identical on every
run and every machine). Labels index the sorted union of the class folders of the requested domains, so one class has
the same label in every returned domain, as domain-incremental learning needs.

All images are converted to RGB and resized to ``image_size``² (see :mod:`protosphere.data._images`). The first load
decodes them in ``workers`` processes into an on-disk array cache and later loads memory-map it
(:mod:`protosphere.data._decode_cache`): the returned images are read-on-demand views of that cache, identical to a
fresh decode.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from protosphere.data._decode_cache import Encoded, check_workers, load_decoded
from protosphere.data._files import data_home
from protosphere.data._images import IMAGE_EXTENSIONS, check_image_size
from protosphere.data.base import ImageDataset
from protosphere.errors import DatasetError

__all__ = [
    "load_image_folder_split",
    "load_imagenet100",
    "find_imagenet100",
    "load_domainnet",
    "find_domainnet",
    "DOMAINNET_DOMAINS",
]

DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _items(paths: list[Path]) -> list[Encoded]:
    return [Encoded(str(p), str(p)) for p in paths]


def load_image_folder_split(
    train_dir: Path, test_dir: Path, name: str, image_size: int, source: str, workers: int | None = None
) -> ImageDataset:
    """Load ``train_dir/<class>/*`` and ``test_dir/<class>/*`` into one dataset labelled by sorted train classes
    (decoded by ``workers`` processes on the first load, memory-mapped from the decoded cache later)."""
    size = check_image_size(image_size)
    workers = check_workers(workers)
    for folder in (train_dir, test_dir):
        if not folder.is_dir():
            raise DatasetError(
                f"{folder} does not exist; {name} must be laid out as train/<class>/<image> and val/<class>/<image> "
                f"under {source}."
            )
    classes = [d.name for d in _class_dirs(train_dir)]
    if not classes:
        raise DatasetError(f"{train_dir} has no class folders; put each class's images in {train_dir}/<class>/.")
    index = {c: i for i, c in enumerate(classes)}
    splits = []
    for folder in (train_dir, test_dir):
        paths, labels = [], []
        for d in _class_dirs(folder):
            if d.name not in index:
                raise DatasetError(
                    f"{d} is a class that {train_dir} does not have; the train and val folders must hold the same "
                    "classes, remove it or add its training images."
                )
            files = _images_in(d)
            paths.extend(files)
            labels.extend([index[d.name]] * len(files))
        if folder is train_dir and not paths:
            raise DatasetError(f"{train_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); check the path.")
        splits.append((_items(paths), np.asarray(labels, dtype=np.int64)))
    arrays = load_decoded(name, source, dict(zip(("train", "test"), splits)), size, workers=workers)
    (train_images, train_labels), (test_images, test_labels) = arrays["train"], arrays["test"]
    return ImageDataset(
        name=name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=tuple(classes),
        source=source,
    )


def _search(name: str, root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        root = Path(root).expanduser()
        return [root, root / name]
    home = data_home()
    return [home / name] if home is not None else []


def find_imagenet100(root: str | os.PathLike | None = None) -> Path | None:
    """The first searched folder holding ``train/`` and ``val/`` (root, or ``$PROTOSPHERE_DATA/imagenet100``)."""
    for folder in _search("imagenet100", root):
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            return folder
    return None


IMAGENET100_HOW = (
    "build the 100-class ImageNet subset as train/<wnid>/ and val/<wnid>/ image folders (it cannot be downloaded "
    "automatically) and set PROTOSPHERE_DATA to the folder holding imagenet100/, or pass its path as root"
)


def load_imagenet100(
    root: str | os.PathLike | None = None, image_size: int = 64, workers: int | None = None
) -> ImageDataset:
    """ImageNet-100 from image folders, resized to ``image_size``² (131,689 images: 1.6 GB at 64 px, 19.8 GB at 224
    px), decoded once by ``workers`` processes and memory-mapped from the decoded cache."""
    size = check_image_size(image_size)
    workers = check_workers(workers)
    folder = find_imagenet100(root)
    if folder is None:
        looked = "; ".join(str(p) for p in _search("imagenet100", root)) or "nowhere: PROTOSPHERE_DATA is not set"
        raise DatasetError(f"ImageNet-100 was not found (looked in {looked}); to get it, {IMAGENET100_HOW}.")
    return load_image_folder_split(folder / "train", folder / "val", "imagenet100", size, str(folder), workers)


def find_domainnet(root: str | os.PathLike | None = None) -> Path | None:
    """The DomainNet root (root itself, ``root/domainnet`` or ``$PROTOSPHERE_DATA/domainnet``) holding a domain
    folder."""
    for folder in _search("domainnet", root):
        if folder.is_dir() and any((folder / d).is_dir() for d in DOMAINNET_DOMAINS):
            return folder
    return None


DOMAINNET_HOW = (
    "download the domains from https://ai.bu.edu/M3SDA/ , extract them as <root>/<domain>/<class>/ next to the "
    "<domain>_train.txt/<domain>_test.txt split files, and set data.root=FOLDER (or PROTOSPHERE_DATA to the folder "
    "holding domainnet/); run it with data.dataset=domainnet scenario.kind=domain_il (one task per domain)"
)


def _read_split_file(path: Path, root: Path, domain: str) -> list[tuple[Path, str]]:
    entries = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read as text ({exc}); replace it with the official split file.") from exc
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        rel = Path(parts[0])
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or len(rel.parts) < 3 or rel.parts[0] != domain:
            raise DatasetError(
                f"{path} line {lineno} is not '{domain}/<class>/<file> <label>'; replace it with the official split "
                "file or delete it to use the seeded 80/20 split."
            )
        entries.append((root / rel, rel.parts[-2]))
    return entries


def load_domainnet(
    root: str | os.PathLike | None,
    domains: list[str],
    image_size: int = 64,
    seed: int = 0,
    workers: int | None = None,
) -> list[ImageDataset]:
    """One :class:`ImageDataset` per requested domain, sharing one label space; see the module docstring."""
    size = check_image_size(image_size)
    workers = check_workers(workers)
    if isinstance(domains, str) or not domains:
        raise DatasetError(
            f"domains must be a non-empty list of DomainNet domain names (e.g. {list(DOMAINNET_DOMAINS)}), got "
            f"{domains!r}; fix the setting."
        )
    base = find_domainnet(root) if root is None else Path(root).expanduser()
    if root is not None and not any((base / d).is_dir() for d in domains) and (base / "domainnet").is_dir():
        base = base / "domainnet"
    if base is None or not base.is_dir():
        looked = "; ".join(str(p) for p in _search("domainnet", root)) or "nowhere: PROTOSPHERE_DATA is not set"
        raise DatasetError(f"DomainNet was not found (looked in {looked}); to get it, {DOMAINNET_HOW}.")
    for domain in domains:
        if not (base / domain).is_dir():
            present = [d.name for d in _class_dirs(base)]
            raise DatasetError(
                f"DomainNet domain {domain!r} is not a folder in {base} (found: {', '.join(present) or 'nothing'}); "
                "fix the domain name or extract that domain there."
            )
    classes = sorted({d.name for domain in domains for d in _class_dirs(base / domain)})
    if not classes:
        raise DatasetError(
            f"{base} has no <domain>/<class>/ folders for {domains}; extract the DomainNet images there."
        )
    index = {c: i for i, c in enumerate(classes)}

    datasets = []
    for domain in domains:
        folder = base / domain
        train_file, test_file = base / f"{domain}_train.txt", base / f"{domain}_test.txt"
        if train_file.is_file() and test_file.is_file():
            split = [_read_split_file(train_file, base, domain), _read_split_file(test_file, base, domain)]
            for entries, listing in zip(split, (train_file, test_file)):
                for path, cls in entries:
                    if cls not in index or not path.is_file():
                        raise DatasetError(
                            f"{path}, listed in {listing}, is missing; extract the complete {domain} domain into "
                            f"{base} or delete the split files to use the seeded 80/20 split."
                        )
            how = f"official split files {train_file.name}/{test_file.name}"
        else:
            rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])
            train_entries, test_entries = [], []
            for d in _class_dirs(folder):
                files = _images_in(d)
                order = rng.permutation(len(files))
                n_test = len(files) // 5
                test_entries += [(files[i], d.name) for i in sorted(order[:n_test])]
                train_entries += [(files[i], d.name) for i in sorted(order[n_test:])]
            split = [train_entries, test_entries]
            how = f"seeded 80/20 split, seed {seed}"
        if not split[0]:
            raise DatasetError(
                f"DomainNet domain {domain!r} in {folder} has no training images; extract its images there."
            )
        listed = {
            name: (_items([p for p, _ in entries]), np.asarray([index[c] for _, c in entries], dtype=np.int64))
            for name, entries in zip(("train", "test"), split)
        }
        decoded = load_decoded(f"domainnet_{domain}", str(folder), listed, size, workers=workers)
        arrays = [decoded["train"], decoded["test"]]
        datasets.append(
            ImageDataset(
                name=f"domainnet_{domain}",
                train_images=arrays[0][0],
                train_labels=arrays[0][1],
                test_images=arrays[1][0],
                test_labels=arrays[1][1],
                class_names=tuple(classes),
                source=f"{folder} ({how})",
            )
        )
    return datasets
