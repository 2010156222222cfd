"""Decoding one image file into a uint8 (S, S, 3) array.

Every image is converted to RGB (some ImageNet and Tiny-ImageNet files are grayscale or CMYK) and resized to S×S with
bilinear filtering; the aspect ratio is not kept, so no part of the object is cropped away. Datasets stored as image
files are decoded once, in parallel processes, into an on-disk array cache that later loads memory-map
(:mod:`protosphere.data._decode_cache`).
"""

from __future__ import annotations

import io

import numpy as np

from protosphere.errors import DatasetError

__all__ = ["decode_image", "IMAGE_EXTENSIONS", "check_image_size"]

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
