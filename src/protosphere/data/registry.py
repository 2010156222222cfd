"""One entry point for every dataset by name, and the report behind ``protosphere datasets``."""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Callable, Iterable

from protosphere.data import cifar, image_folder, mnist, tiny_imagenet
from protosphere.data._decode_cache import check_workers
from protosphere.data.base import DatasetStatus, ImageDataset
from protosphere.data.digits import load_digits
from protosphere.errors import DatasetError
from protosphere.registry import DATASETS

__all__ = ["DATASET_NAMES", "load_dataset", "dataset_status", "format_dataset_status"]

Loader = Callable[..., ImageDataset]  # loader(root, download, *, image_size=None)


def _native_size(name: str, size: int, load: Callable[[str | os.PathLike | None, bool], ImageDataset]) -> Loader:
    """A loader for a dataset stored as ``size``×``size`` arrays, which are not resized on loading."""

    def loader(root, download, *, image_size=None):
        if image_size is not None and image_size != size:
            raise DatasetError(
                f"{name} images are {size}×{size} and are not resized on loading, but image_size={image_size!r} was "
                f"requested; drop the setting (resize in the augmentation instead)."
            )
        return load(root, download)

    return loader


def _imagenet100(root, download, *, image_size=None, workers=None):
    if download:
        raise DatasetError(f"ImageNet-100 cannot be downloaded automatically; {image_folder.IMAGENET100_HOW}.")
    return image_folder.load_imagenet100(root, image_size=64 if image_size is None else image_size, workers=workers)


def _tiny_imagenet(root, download, *, image_size=None, workers=None):
    size = 64 if image_size is None else image_size
    return tiny_imagenet.load_tiny_imagenet(root, download, image_size=size, workers=workers)


def _domainnet(root, download, *, image_size=None):
    raise DatasetError(
        "DomainNet is loaded per domain, not as one dataset: in a config, data.dataset=domainnet with "
        "scenario.kind=domain_il; in Python, protosphere.data.load_domainnet."
    )


_BUILT_IN: dict[str, Loader] = {
    "fashion_mnist": _native_size("fashion_mnist", 28, mnist.load_fashion_mnist),
    "mnist": _native_size("mnist", 28, mnist.load_mnist),
    "digits": _native_size("digits", 8, lambda root, download: load_digits()),
    "cifar10": _native_size("cifar10", 32, cifar.load_cifar10),
    "cifar100": _native_size("cifar100", 32, cifar.load_cifar100),
    "tiny_imagenet": _tiny_imagenet,
    "imagenet100": _imagenet100,
}
for _name, _loader in _BUILT_IN.items():
    DATASETS.register(_name, _loader)
DATASETS.register("domainnet", _domainnet)  # a valid data.dataset; the runner builds its per-domain scenario

DECODED: frozenset[str] = frozenset({"tiny_imagenet", "imagenet100"})
"""The built-in datasets stored as image files: decoded once (by ``workers`` processes) into the decoded cache."""

DATASET_NAMES: tuple[str, ...] = tuple(_BUILT_IN)
"""The built-in datasets :func:`load_dataset` loads whole (user datasets join them in
``protosphere.registry.DATASETS``)."""


def _normalise(name: str) -> str:
    known = [n for n in DATASETS.names() if n != "domainnet"]
    if not isinstance(name, str):
        raise DatasetError(f"a dataset name must be a string, got {name!r}; use one of {', '.join(known)}.")
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DatasetError(f"unknown dataset {name!r}; {hint}known datasets: {', '.join(known)}.")
    return key


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    download: bool = False,
    *,
    image_size: int | None = None,
    workers: int | None = None,
) -> ImageDataset:
    """Load dataset ``name`` (one of :data:`DATASET_NAMES`, or any loader registered in
    ``protosphere.registry.DATASETS``) into memory.

    ``root`` restricts the search to that folder (or ``root/<name>/``); without it the dataset is looked for in
    ``$PROTOSPHERE_DATA/<name>/``, system packages and the user cache. ``download=True`` fetches missing
    downloadable datasets (Fashion-MNIST, MNIST, CIFAR-10/100, Tiny-ImageNet) from their official sources and
    verifies them. ``image_size`` resizes datasets stored as image files (Tiny-ImageNet, ImageNet-100; default 64);
    datasets stored as arrays keep their native size. Datasets stored as image files are decoded by ``workers``
    processes (default: the usable cores) on their first load only; later loads memory-map the decoded cache
    (:mod:`protosphere.data._decode_cache`). ``workers`` goes to the built-in loaders of :data:`DECODED` only.
    """
    key = _normalise(name)
    if key in DECODED and DATASETS.get(key) is _BUILT_IN[key]:
        return DATASETS.get(key)(root, download, image_size=image_size, workers=workers)
    if workers is not None:
        check_workers(workers)  # a bad value is refused whichever dataset it would have gone to
    return DATASETS.get(key)(root, download, image_size=image_size)


def _status(name: str, locate: Callable[[], object], how: str) -> DatasetStatus:
    try:
        found = locate()
    except DatasetError as exc:  # e.g. an incomplete folder: report it instead of failing the whole listing
        return DatasetStatus(name, False, None, str(exc))
    if isinstance(found, tuple):
        found = found[1]
    return DatasetStatus(name, found is not None, None if found is None else str(found), how)


def dataset_status() -> list[DatasetStatus]:
    """Where each dataset (and DomainNet) would be loaded from without ``root``, and how to get missing ones."""
    sklearn_found = importlib.util.find_spec("sklearn") is not None
    return [
        _status(
            "fashion_mnist", lambda: mnist.find_idx_dataset(mnist.FASHION_MNIST), mnist.how_to_get(mnist.FASHION_MNIST)
        ),
        _status("mnist", lambda: mnist.find_idx_dataset(mnist.MNIST), mnist.how_to_get(mnist.MNIST)),
        DatasetStatus(
            "digits",
            sklearn_found,
            "bundled with scikit-learn" if sklearn_found else None,
            "install scikit-learn with `pip install scikit-learn`",
        ),
        _status("cifar10", lambda: cifar.find_cifar(cifar.CIFAR10), cifar.how_to_get(cifar.CIFAR10)),
        _status("cifar100", lambda: cifar.find_cifar(cifar.CIFAR100), cifar.how_to_get(cifar.CIFAR100)),
        _status("tiny_imagenet", tiny_imagenet.find_tiny_imagenet, tiny_imagenet.how_to_get()),
        _status("imagenet100", image_folder.find_imagenet100, image_folder.IMAGENET100_HOW),
        _status("domainnet", image_folder.find_domainnet, image_folder.DOMAINNET_HOW),
    ]


def format_dataset_status(statuses: Iterable[DatasetStatus]) -> str:
    """A plain-text table (dataset, status, location) followed by how to get each missing dataset."""
    statuses = list(statuses)
    rows = [("dataset", "status", "location")] + [
        (s.name, "found" if s.found else "missing", s.location or "-") for s in statuses
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip() for r in rows]
    missing = [s for s in statuses if not s.found]
    if missing:
        lines += ["", "To get the missing datasets:"]
        lines += [f"  {s.name}: {s.how_to_get}" for s in missing]
    return "\n".join(lines)
