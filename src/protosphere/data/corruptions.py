"""FMNIST-C style corruptions for robustness evaluation, after ImageNet-C / CIFAR-10-C (Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019).

Every corruption maps a uint8 batch (N, C, H, W) to a uint8 batch of the same shape on the same device, batched in
torch (float32 in [0, 1] inside, rounded back to uint8), at severities 1–5. Random corruptions draw from
``generator`` (a ``torch.Generator`` on the batch's device, or the device's global RNG when None) and are reproducible
given its seed. Severity parameters are CIFAR-10-C's (``make_cifar_c.py``: images of 32 px, like the 28 px of
Fashion-MNIST) unless noted; x is the image in [0, 1]:

* ``gaussian_noise`` — x + σ·ε, ε ~ N(0, 1); σ = 0.04, 0.06, 0.08, 0.09, 0.10.
* ``shot_noise`` — Poisson(λ·x) / λ; λ = 500, 250, 100, 75, 50.
* ``impulse_noise`` — salt-and-pepper on a fraction p of the pixels; p = 0.01, 0.02, 0.03, 0.05, 0.07.
* ``gaussian_blur`` — Gaussian filter truncated at 4σ, replicated edges; σ = 0.4, 0.6, 0.7, 0.8, 1.0 px.
* ``contrast`` — (x − m)·c + m with m the image mean; c = 0.75, 0.5, 0.4, 0.3, 0.15.
* ``brightness`` — HSV value + b, hue and saturation kept (grayscale: x + b); b = 0.05, 0.1, 0.15, 0.2, 0.3.
* ``pixelate`` — box filter to ⌊s·H⌋ × ⌊s·W⌋ cells shown as blocks; s = 0.9, 0.8, 0.7, 0.6, 0.5 (protosphere's).
* ``elastic`` — elastic warp (Simard et al., ICDAR 2003): displacement α·G_σ ∗ U(−1, 1) per pixel and axis, scaled to
  unit RMS, bilinear resampling with reflected borders; α = 0.5, 1, 1.5, 2, 2.5 px and σ = 3 px, both × H/28
  (protosphere's).

Results are clipped to [0, 1]. Why two rows are protosphere's own: CIFAR-10-C's elastic transform mixes an affine
jitter into the warp and is not monotone in its severity; here one seeded field is scaled by α (its RMS displacement
in pixels), so the distortion grows with severity. At 28 px, CIFAR-10-C's pixelate factors (0.95 … 0.65) give 26, 25,
23, 21, 18 cells, and the box-filter errors of 26 and 25 cells are not ordered (the resampling phase dominates);
0.9 … 0.5 give 25, 22, 19, 16, 14 cells, whose error grows with severity. Cells are averaged exactly over a ×k
nearest-upsampled copy (k = max(1, 128 // H)), so non-integer cell sizes do not shift the image.

Noise fields depend only on the generator and the batch shape, so every severity reuses the same draws: distortion
grows monotonically image by image for gaussian_noise, impulse_noise, contrast, brightness and elastic, and on average
for the others.

:func:`mean_corruption_error` is the mCE of the paper; :func:`evaluate_corruptions` gives the per-corruption,
per-severity errors it needs for one classifier.
"""

from __future__ import annotations

import math
import zlib
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..registry import CORRUPTIONS as REGISTERED_CORRUPTIONS
from .scenarios import model_input

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "evaluate_corruptions", "corruption_errors", "mean_corruption_error"]

SEVERITIES = (1, 2, 3, 4, 5)

PARAMETERS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "elastic": (0.5, 1.0, 1.5, 2.0, 2.5),
}
ELASTIC_SIGMA = 3.0  # px at 28×28, scaled with the image size


def _param(name: str, severity: int):
    if isinstance(severity, bool) or int(severity) != severity or not 1 <= severity <= 5:
        raise ValueError(f"{name}: severity must be an integer in 1..5, got {severity!r}.")
    return PARAMETERS[name][int(severity) - 1]


def _to_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"corruptions take a uint8 (N, C, H, W) batch, got {images.dtype} with shape {tuple(images.shape)}."
        )
    return images.float().div(255)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def _gaussian_filter(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter of a float (N, C, H, W) batch, truncated at 4σ, replicate padding."""
    radius = min(max(1, math.ceil(4 * sigma)), min(x.shape[-2:]) - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian_noise(images, severity, generator=None):
    x = _to_float(images)
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    return _to_uint8(x + _param("gaussian_noise", severity) * noise)


def shot_noise(images, severity, generator=None):
    x = _to_float(images)
    lam = _param("shot_noise", severity)
    return _to_uint8(torch.poisson(x * lam, generator=generator) / lam)


def impulse_noise(images, severity, generator=None):
    x = _to_float(images)
    hit = torch.rand(x.shape, generator=generator, device=x.device) < _param("impulse_noise", severity)
    salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    return _to_uint8(torch.where(hit, salt.to(x.dtype), x))


def gaussian_blur(images, severity, generator=None):
    return _to_uint8(_gaussian_filter(_to_float(images), _param("gaussian_blur", severity)))


def contrast(images, severity, generator=None):
    x = _to_float(images)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return _to_uint8((x - mean) * _param("contrast", severity) + mean)


def brightness(images, severity, generator=None):
    x = _to_float(images)
    value = x.amax(dim=1, keepdim=True)  # HSV value; hue and saturation are kept
    shifted = (value + _param("brightness", severity)).clamp(0, 1)
    scaled = x * (shifted / value.clamp_min(1e-12))
    return _to_uint8(torch.where(value > 0, scaled, shifted.expand_as(x)))


def pixelate(images, severity, generator=None):
    x = _to_float(images)
    h, w = x.shape[-2:]
    s = _param("pixelate", severity)
    k = max(1, 128 // h)
    big = F.interpolate(x, scale_factor=k, mode="nearest") if k > 1 else x
    cells = F.interpolate(big, size=(max(1, int(h * s)), max(1, int(w * s))), mode="area")
    blocks = F.interpolate(cells, size=(h * k, w * k), mode="nearest-exact")
    return _to_uint8(F.interpolate(blocks, size=(h, w), mode="area") if k > 1 else blocks)


def elastic(images, severity, generator=None):
    x = _to_float(images)
    n, _, h, w = x.shape
    scale = h / 28.0
    field = torch.rand((n, 2, h, w), generator=generator, device=x.device) * 2 - 1
    field = _gaussian_filter(field, ELASTIC_SIGMA * scale)
    field = field / field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    displacement = _param("elastic", severity) * scale * field  # pixels, (N, 2, H, W): (dx, dy)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij"
    )
    gx = (xs + displacement[:, 0] + 0.5) / w * 2 - 1  # align_corners=False pixel centres
    gy = (ys + displacement[:, 1] + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)
    return _to_uint8(F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False))


CORRUPTIONS: dict[str, Callable] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "pixelate": pixelate,
    "elastic": elastic,
}
for _name, _corruption in CORRUPTIONS.items():  # the config validates eval.corruptions against the registry
    REGISTERED_CORRUPTIONS.register(_name, _corruption)


def _generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int | None = 0) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1–5) to a uint8 (N, C, H, W) batch; ``seed=None`` uses the
    device's global RNG, an int a private generator (same seed, same output)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"Unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}.")
    generator = None if seed is None else _generator(seed, images.device)
    return CORRUPTIONS[name](images, severity, generator)


@torch.no_grad()
def evaluate_corruptions(
    classify: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    batch_size: int = 256,
    seed: int = 0,
    place: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, list[float]]:
    """Top-1 error (%) of ``classify`` on each corruption and severity of the test set: ``{name: [E_s, ...]}``.

    ``classify`` maps a float batch in [0, 1] (B, C, H, W) on the images' device to logits (B, K), like the
    classifiers of a method (``method.classifiers()[name]``); put the model in eval mode first. Batch b of corruption
    ``name`` at severity s uses the seed ``(seed, crc32(name), s, b)``, so two models evaluated with the same seed and
    batch size see identical corrupted images (as mCE against a baseline requires). ``place(batch)``, when given,
    moves each uint8 batch to the device it is corrupted and classified on (test images held on the host), so the
    corrupted images are those of the same images held on that device.
    """
    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    for name in names:
        if name not in CORRUPTIONS:
            raise ValueError(f"Unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}.")
    if len(labels) != len(images) or len(labels) == 0:
        raise ValueError(
            f"evaluate_corruptions needs as many labels as images (> 0), got {len(labels)} and {len(images)}."
        )
    errors: dict[str, list[float]] = {}
    for name in names:
        errors[name] = []
        for severity in severities:
            wrong = 0
            for b, start in enumerate(range(0, len(labels), batch_size)):
                batch_seed = ((seed * 1_000_003 + zlib.crc32(name.encode())) * 101 + int(severity)) * 1_000_033 + b
                batch = images[start : start + batch_size]
                batch = place(batch) if place is not None else batch
                x = corrupt(batch, name, severity, seed=batch_seed % (2**63))
                predictions = classify(model_input(x)).argmax(dim=1)
                wrong += int((predictions != labels[start : start + batch_size].to(predictions.device)).sum())
            errors[name].append(100.0 * wrong / len(labels))
    return errors


def corruption_errors(
    errors: Mapping[str, Sequence[float]], baseline_errors: Mapping[str, Sequence[float]]
) -> dict[str, float]:
    """Corruption error per corruption, ``CE_c = 100 · Σ_s E_{s,c} / Σ_s E^baseline_{s,c}`` (Hendrycks & Dietterich
    2019; the baseline is AlexNet on ImageNet-C, here any reference model)."""
    missing = sorted(set(errors) - set(baseline_errors))
    if missing:
        raise ValueError(f"The baseline has no errors for {', '.join(missing)}; evaluate it on the same corruptions.")
    out = {}
    for name, values in errors.items():
        base = baseline_errors[name]
        if len(values) != len(base):
            raise ValueError(f"{name}: {len(values)} severities against {len(base)} for the baseline.")
        total = float(sum(base))
        if total <= 0:
            raise ValueError(f"{name}: the baseline makes no error, so the relative corruption error is undefined.")
        out[name] = 100.0 * float(sum(values)) / total
    return out


def mean_corruption_error(
    errors: Mapping[str, Sequence[float]], baseline_errors: Mapping[str, Sequence[float]]
) -> float:
    """mCE = mean over corruptions of ``100 · Σ_s E_s / Σ_s E_s^baseline`` (errors in % per severity)."""
    if not errors:
        raise ValueError("mean_corruption_error needs errors for at least one corruption.")
    per_corruption = corruption_errors(errors, baseline_errors)
    return sum(per_corruption.values()) / len(per_corruption)
