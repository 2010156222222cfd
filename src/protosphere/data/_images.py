"""Decoding image files into one uint8 (N, S, S, 3) array.

Image-folder datasets are decoded once into memory so that training never touches the disk. Every image is converted
to RGB (some ImageNet and Tiny-ImageNet files are grayscale or CMYK) and resized to S×S with bilinear filtering; the
aspect ratio is not kept, so no part of the object is cropped away. Decoding runs on a thread pool: Pillow releases
the GIL while decoding and resizing.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from protosphere.errors import DatasetError

__all__ = ["decode_image", "decode_images", "IMAGE_EXTENSIONS", "check_image_size"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def check_image_size(image_size: int) -> int:
    """Validate the requested square side length (a user setting) and return it as int."""
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or not 1 <= int(image_size) <= 4096
    ):
        raise DatasetError(f"image_size must be an integer between 1 and 4096, got {image_size!r}; fix the setting.")
    return int(image_size)


def decode_image(data: bytes, size: int, where: str) -> np.ndarray:
    """Decode one encoded image (JPEG, PNG, ...) into an RGB uint8 (size, size, 3) array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # let libjpeg downscale by 1/2, 1/4, 1/8 while decoding
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{where} is not a readable image ({exc}); delete or replace that file.") from exc


def _read(where: str, read: Callable[[], bytes]) -> bytes:
    try:
        return read()
    except OSError as exc:
        raise DatasetError(f"{where} cannot be read ({exc}); check that the file exists and is readable.") from exc


def decode_images(
    items: Sequence[tuple[str, Callable[[], bytes]]], size: int, *, workers: int | None = None, chunk: int = 2048
) -> np.ndarray:
    """Decode ``items`` — (description, function returning the encoded bytes) pairs — into (N, size, size, 3).

    Reading the bytes happens on the calling thread (archive handles are not thread-safe); decoding is spread over
    ``workers`` threads, ``chunk`` images at a time so that encoded bytes never pile up in memory.
    """
    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    if workers is None:
        workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), chunk):
            batch = items[start : start + chunk]
            payloads = [(where, _read(where, read)) for where, read in batch]
            for i, arr in enumerate(pool.map(lambda p: decode_image(p[1], size, p[0]), payloads)):
                out[start + i] = arr
    return out
