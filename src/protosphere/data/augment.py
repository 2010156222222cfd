"""Batched image augmentation in plain torch, on whatever device the batch is on.

Every transform takes a float batch ``(B, C, H, W)`` with values in [0, 1] (a ``uint8`` batch is converted with
``/ 255`` first) and draws its random parameters **once per sample** from ``generator`` (a ``torch.Generator``) or,
when ``generator is None``, from the global RNG of the batch's device. No Python loop runs over samples. Passing a
generator that lives on the batch's device keeps every draw on the device; a generator on another device draws there and
the (tiny) parameter tensors are copied over. The same generator state always gives the same output.

Presets (:func:`build_augmentation`), each ending with per-channel normalisation ``(x − mean) / std`` unless built with
``normalize=False`` (inputs then stay in [0, 1], as Mammoth's ``ToTensor()``-only pipelines give them):

- ``"none"``: normalisation only; also the evaluation transform (:func:`build_eval_transform`).
- ``"supervised"``: random crop with zero padding (``padding = image_size // 8`` by default: 4 px at 32×32, 3 px at
  28×28, 8 px at 64×64), then horizontal flip with p = 0.5 (``flip=False`` turns it off, e.g. for MNIST digits, whose
  mirror images are other shapes; Fashion-MNIST flips are fine). The standard CIFAR recipe
  (RandomCrop(32, padding=4) + RandomHorizontalFlip).
- ``"contrastive"``: the SimCLR/SupCon/Co2L recipe. RandomResizedCrop(scale 0.2–1.0, ratio 3/4–4/3) and horizontal
  flip (p = 0.5), then, for colour data (C = 3), ColorJitter(brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1)
  applied with p = 0.8 and RandomGrayscale with p = 0.2; for grayscale data (C = 1), brightness and contrast jitter
  (0.4, 0.4) with p = 0.8 and nothing else. Options (``build_augmentation``, the config's ``train.augment``) set the
  crop scale and ratio, the jitter strengths and probability, the grayscale probability, and add GaussianBlur
  (``blur_p``, σ ∈ ``blur_sigma`` = [0.1, 2.0], kernel ``blur_kernel``) and solarization (``solarize_p``) after the
  grayscale step, the order of solo-learn's and Co2L's pipelines. A transform whose probability is 0 is left out of
  the pipeline (it draws nothing), so the recipe without blur or solarization draws exactly as it always did.

Asymmetric views (BYOL's recipe, used by solo-learn's ImageNet-100 runs and so by CaSSLe and PNR: blur 1.0 / 0.1,
solarization 0.0 / 0.2): ``build_augmentation(..., views=[{...}, {...}])`` builds one pipeline per view, each from the
shared options overridden by its entry, wrapped in :class:`ViewTransforms`; ``t(x, generator, view=k)`` is view
``k``'s augmentation and ``t(x)`` view 0's (what single-view users, e.g. the augmented linear probe, get).

Two recipes from the papers' code, written as options:

- solo-learn's ImageNet-100 recipe, run by CaSSLe and PNR (``csm9493/PNR``
  ``bash_files/continual/imagenet-100/class/mocov2plus_pnr.sh`` with ``cassle/utils/dali_dataloader.py``): 224-px
  crops, ``scale=(0.08, 1)``, ``jitter=(0.4, 0.4, 0.2, 0.1)``, ``jitter_p=0.8``, ``grayscale_p=0.2``,
  ``views=[{"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.1, "solarize_p": 0.2}]``, blur window 23.
- Co2L's and FNC2's Tiny-ImageNet recipe (``main.py`` of Co2L, ``src/utils/transforms_utils.py`` of
  ``dangtrunganh/samix``): ``scale=(0.1, 1)``, ``blur_p=0.5`` with kernel ``64 // 20 * 2 + 1 = 7`` (their blur is off
  at 32 px).

Implementation notes (differences from torchvision are deliberate and listed here):

- RandomResizedCrop draws its crop boxes exactly as torchvision's ``RandomResizedCrop.get_params`` does: 10 attempts of
  area ∈ scale·H·W and log-uniform aspect ratio, width and height **rounded to whole pixels** (half to even, as
  Python's ``round``), the first box that fits wins, its top-left corner uniform over the whole-pixel positions
  ``{0, …, H − h}`` × ``{0, …, W − w}``; else the whole image clipped to the ratio range, centred. (Continuous boxes
  look alike but are not: a continuous offset puts fewer crops against the image border than the ``H − h + 1`` whole
  positions do — on 28 × 28 Fashion-MNIST a 7 % narrower spread of crop centres, fewer background pixels per view —
  and rejecting unrounded sizes drops the near-whole-image boxes; a linear probe trained on such views scored a point
  lower than on torchvision's, see ``benchmarks/authors/views_two_sample.py``.) The box is resampled to the input
  size with one per-sample sampling grid and ``F.grid_sample`` (bilinear, ``align_corners=False``), sample points
  clamped to the box's edge pixel centres as a resize of the cropped image clamps (PIL, torchvision); the flip is
  folded into the same grid (a negated x scale). A full-image box maps every output pixel centre onto the same input
  pixel centre, so scale (1, 1) without flip reproduces the input up to float rounding (< 1e-5). No antialiasing is
  needed: the crop is never larger than the output, so it is only upsampled.
- ColorJitter applies its four operations in a **fixed order** (brightness, contrast, saturation, hue) rather than in
  a random order per call; each factor is drawn per sample (brightness, contrast, saturation ∈ [max(0, 1−s), 1+s],
  hue shift ∈ [−h, h]), and every operation clamps to [0, 1], as in torchvision. Contrast blends with the mean of the
  image's luma; saturation with the per-pixel luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B). Hue is shifted exactly
  in HSV space (the colour model of torchvision's ``adjust_hue``) with a vectorised closed form that leaves
  saturation and value unchanged (see ``_shift_hue``).
- Grayscale uses the same luma, copied into the three channels.
- GaussianBlur is torchvision's ``gaussian_blur`` (the blur of Co2L's and FNC2's code): a ``k × k`` kernel, the outer
  product of the 1-D weights ``g_i ∝ exp(−t_i² / (2σ²))``, ``t_i = i − (k − 1)/2``, ``Σ g = 1``, over the image padded
  by ``k // 2`` in ``"reflect"`` mode (the edge pixel is not repeated; DALI's default border, used by solo-learn's
  ImageNet pipeline, is the same). It runs as two 1-D passes of a depthwise convolution with one kernel per sample.
  Kernel side: ``blur_kernel``, by default ``image_size // 20 * 2 + 1`` — the formula of Co2L's and FNC2's code
  (7 at 64 px), which gives solo-learn's DALI window of 23 at 224 px. (solo-learn's non-DALI pipeline uses PIL's
  ``GaussianBlur(radius=σ)``, a box-filter approximation without a fixed window; its CIFAR recipes have the blur off.)
- Solarization inverts the pixels at or above 0.5: ``x ← 1 − x`` where ``x ≥ 0.5``, per channel — PIL's
  ``ImageOps.solarize`` and DALI's ``255 − x`` for ``x ≥ 128`` on 8-bit images, as those see a float pixel after
  rounding (``round(255·x) ≥ 128`` ⇔ ``x ≥ 0.5``).
"""

from __future__ import annotations

import contextlib
import difflib
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from protosphere.errors import ConfigError
from protosphere.registry import AUGMENTATIONS, UnknownNameError

__all__ = [
    "PRESETS",
    "BatchTransform",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "ColorJitter",
    "RandomGrayscale",
    "GaussianBlur",
    "RandomSolarize",
    "TwoViews",
    "ViewTransforms",
    "views",
    "augment_view",
    "default_blur_kernel",
    "build_augmentation",
    "build_eval_transform",
]

_LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------------------------------------- helpers
_SHARD = (0, 1)  # (rank, world size) of the batches being augmented; see shard_draws


@contextlib.contextmanager
def shard_draws(rank: int, world_size: int):
    """Within this context a batch is taken to be this rank's contiguous slice ``rank`` of a global batch ``world_size``
    times larger (as :func:`protosphere.distributed.shard_rows` cuts it): each transform draws the random parameters of
    the **whole** global batch and keeps its slice's. Every rank then augments its rows exactly as one process
    augments the same rows of the global batch, and all ranks advance their RNG alike (the engine sets it under DDP)."""
    global _SHARD
    previous, _SHARD = _SHARD, (int(rank), int(world_size))
    try:
        yield
    finally:
        _SHARD = previous


def _rand(shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None, batch_dim: int) -> torch.Tensor:
    """Uniform [0, 1) float32 draws of ``shape`` (``shape[batch_dim]`` = the batch's size) on ``x``'s device, from
    ``generator`` or the device's global RNG; float32 in a float64 run too, so both augment alike. Under
    :func:`shard_draws` the draws are those of the global batch's rows of this slice."""
    rank, world = _SHARD
    shape = list(shape)
    rows = shape[batch_dim]
    shape[batch_dim] = rows * world
    if generator is None:
        out = torch.rand(tuple(shape), device=x.device, dtype=torch.float32)
    else:
        out = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
        out = out.to(x.device, non_blocking=True)
    return out.narrow(batch_dim, rank * rows, rows) if world > 1 else out


def _bernoulli(p: float, n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Bool (n,) mask, True with probability p."""
    return _rand((n,), x, generator, batch_dim=0) < p


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB → (B, 1, H, W) ITU-R 601 luma."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB ``x`` (B, 3, H, W) in [0, 1] by ``shift`` (B, 1, 1) turns, keeping S and V.

    Exact HSV arithmetic without materialising S: with V = max, Δ = max − min and hue sector h₆ = 6·H ∈ [0, 6),
    channel n ∈ {5, 3, 1} (R, G, B) of the result is ``V − Δ·clamp(min(k, 4 − k), 0, 1)``, ``k = (n + h₆) mod 6``
    (the closed-form HSV → RGB map, since V·S = Δ). Grey pixels (Δ = 0) are unchanged.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    delta = maxc - torch.minimum(torch.minimum(r, g), b)
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    h6 = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h6 = h6 + 6.0 * shift
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h6 + n, 6.0)
        out.append(maxc - delta * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(out, 1)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(x) or x.dim() != 4:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"augmentation expects a (B, C, H, W) image tensor, got {shape}")
    if x.dtype == torch.uint8:
        return x.to(torch.get_default_dtype()).div_(255.0)
    if not x.is_floating_point():
        raise ValueError(f"augmentation expects a float (values in [0, 1]) or uint8 batch, got dtype {x.dtype}")
    return x


# -------------------------------------------------------------------------------------------------------- transforms
class BatchTransform(nn.Module):
    """Base class: ``forward(x, generator=None)`` maps ``(B, C, H, W)`` to ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def views(self, x: torch.Tensor, n: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` independently augmented views stacked as ``(n·B, C, H, W)``: rows ``k·B … (k+1)·B − 1`` are view
        ``k`` (the order of ``torch.cat([t(x), t(x)])``)."""
        return views(self, x, n, generator)


class Normalize(BatchTransform):
    """``(x − mean) / std`` per channel; ``mean``, ``std``: one value per channel (or one value for all)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or std_t.numel() == 0:
            raise ConfigError("Normalisation mean and std must not be empty")
        if bool((std_t <= 0).any()):
            raise ConfigError(f"Normalisation std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        for name, t in (("mean", self.mean), ("std", self.std)):
            if t.shape[1] not in (1, x.shape[1]):
                raise ValueError(
                    f"normalisation {name} has {t.shape[1]} values but the batch has {x.shape[1]} channels"
                )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class RandomCrop(BatchTransform):
    """Random ``H × W`` crop of the zero-padded image (``padding`` pixels on each side), integer offsets drawn
    uniformly per sample in ``[0, 2·padding]``. ``padding = 0`` is the identity."""

    def __init__(self, padding: int) -> None:
        super().__init__()
        if padding < 0:
            raise ConfigError(f"Crop padding must be ≥ 0, got {padding}")
        self.padding = int(padding)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        p = self.padding
        if p == 0:
            return x
        B, C, H, W = x.shape
        offsets = (_rand((2, B), x, generator, batch_dim=1) * (2 * p + 1)).long().clamp_(max=2 * p)
        Wp = W + 2 * p
        xp = F.pad(x, (p, p, p, p)).flatten(2)  # (B, C, Hp·Wp)
        rows = offsets[0].view(B, 1, 1) + torch.arange(H, device=x.device).view(1, H, 1)
        cols = offsets[1].view(B, 1, 1) + torch.arange(W, device=x.device).view(1, 1, W)
        index = (rows * Wp + cols).view(B, 1, H * W).expand(B, C, H * W)
        return xp.gather(2, index).view(B, C, H, W)


class RandomHorizontalFlip(BatchTransform):
    """Mirror each sample left–right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        mask = _bernoulli(self.p, x.shape[0], x, generator).view(-1, 1, 1, 1)
        return torch.where(mask, x.flip(-1), x)


class RandomResizedCrop(BatchTransform):
    """RandomResizedCrop to the input size with an optional horizontal flip folded into the same sampling grid.

    Box: area fraction ∈ ``scale``, aspect ratio w/h log-uniform in ``ratio``, sizes rounded to whole pixels; up to 10
    attempts per sample, first one that fits, at a uniform whole-pixel position; fallback: the whole image clipped to
    the ratio range, centred (torchvision's ``get_params``, see the module docstring). Resampling: bilinear
    ``grid_sample`` clamped to the box.

    :meth:`sample_boxes` returns the boxes that ``forward`` would use for the same generator state.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_p: float = 0.5,
        attempts: int = 10,
    ) -> None:
        super().__init__()
        scale = (float(scale[0]), float(scale[1]))
        ratio = (float(ratio[0]), float(ratio[1]))
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ConfigError(f"RandomResizedCrop scale must satisfy 0 < min ≤ max ≤ 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ConfigError(f"RandomResizedCrop ratio must satisfy 0 < min ≤ max, got {ratio}")
        self.scale, self.ratio, self.flip_p, self.attempts = scale, ratio, float(flip_p), int(attempts)

    def sample_boxes(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample crop boxes in whole pixels for batch ``x``: ``(top, left, height, width)``, each float32 (B,)."""
        B, _, H, W = x.shape
        u = _rand((4, B, self.attempts), x, generator, batch_dim=1)
        area = H * W * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])
        w = torch.round(torch.sqrt(area * aspect))  # half to even, as torchvision's int(round(...))
        h = torch.round(torch.sqrt(area / aspect))
        fits = (w >= 1) & (w <= W) & (h >= 1) & (h <= H)
        first = fits.to(torch.uint8).argmax(1, keepdim=True)  # first attempt that fits (0 if none)
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        # uniform over the H - h + 1 whole-pixel offsets (torch.randint(0, H - h + 1) in torchvision)
        top = torch.floor(u[2].gather(1, first).squeeze(1) * (H - h + 1)).clamp_(max=H - h)
        left = torch.floor(u[3].gather(1, first).squeeze(1) * (W - w + 1)).clamp_(max=W - w)
        in_ratio = W / H  # fallback (torchvision): whole image, aspect clipped to the ratio range, centred
        if in_ratio < self.ratio[0]:
            fw, fh = W, round(W / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fw, fh = round(H * self.ratio[1]), H
        else:
            fw, fh = W, H
        ok = fits.any(1)
        h = torch.where(ok, h, torch.full_like(h, float(fh)))
        w = torch.where(ok, w, torch.full_like(w, float(fw)))
        top = torch.where(ok, top, torch.full_like(top, float((H - fh) // 2)))
        left = torch.where(ok, left, torch.full_like(left, float((W - fw) // 2)))
        return top, left, h, w

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        B, _, H, W = x.shape
        top, left, h, w = self.sample_boxes(x, generator)
        flip = _bernoulli(self.flip_p, B, x, generator)
        # normalised coordinates (align_corners=False): pixel edge 0 ↦ −1, edge W ↦ +1; output pixel centres
        xs = (2.0 * torch.arange(W, device=x.device, dtype=torch.float32) + 1.0) / W - 1.0
        ys = (2.0 * torch.arange(H, device=x.device, dtype=torch.float32) + 1.0) / H - 1.0
        sx = torch.where(flip, -w / W, w / W)
        cx = (2.0 * left + w) / W - 1.0
        cy = (2.0 * top + h) / H - 1.0
        gx = sx[:, None] * xs[None, :] + cx[:, None]  # (B, W)
        gy = (h / H)[:, None] * ys[None, :] + cy[:, None]  # (B, H)
        # a resize of the cropped image never reads past the crop: clamp to its first and last pixel centres
        gx = torch.maximum(
            torch.minimum(gx, ((2.0 * (left + w) - 1.0) / W - 1.0)[:, None]), ((2.0 * left + 1.0) / W - 1.0)[:, None]
        )
        gy = torch.maximum(
            torch.minimum(gy, ((2.0 * (top + h) - 1.0) / H - 1.0)[:, None]), ((2.0 * top + 1.0) / H - 1.0)[:, None]
        )
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, H, W, 2)
        return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


class ColorJitter(BatchTransform):
    """Colour jitter applied to each sample with probability ``p``: brightness, contrast, saturation, hue in that fixed
    order, factors drawn per sample (see the module docstring). On 1-channel batches saturation and hue must be 0."""

    def __init__(
        self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1, p: float = 0.8
    ) -> None:
        super().__init__()
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if v < 0:
                raise ConfigError(f"ColorJitter {name} must be ≥ 0, got {v}")
        if not 0 <= hue <= 0.5:
            raise ConfigError(f"ColorJitter hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = (
            float(brightness),
            float(contrast),
            float(saturation),
            float(hue),
        )
        self.p = float(p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        B, C = x.shape[:2]
        colour = C == 3
        if not colour and (self.saturation > 0 or self.hue > 0):
            raise ValueError(f"saturation and hue jitter need 3-channel RGB input, got {C} channel(s)")
        u = _rand((5, B), x, generator, batch_dim=1)
        apply = (u[0] < self.p).view(B, 1, 1, 1)

        def factor(row: torch.Tensor, s: float) -> torch.Tensor:
            lo, hi = max(0.0, 1.0 - s), 1.0 + s
            return (lo + (hi - lo) * row).to(x.dtype).view(B, 1, 1, 1)

        y = x
        if self.brightness > 0:
            y = (y * factor(u[1], self.brightness)).clamp(0.0, 1.0)
        if self.contrast > 0:
            c = factor(u[2], self.contrast)
            mean = (_luma(y) if colour else y).mean(dim=(1, 2, 3), keepdim=True)
            y = (c * y + (1.0 - c) * mean).clamp(0.0, 1.0)
        if colour and self.saturation > 0:
            s = factor(u[3], self.saturation)
            y = (s * y + (1.0 - s) * _luma(y)).clamp(0.0, 1.0)
        if colour and self.hue > 0:
            shift = (-self.hue + 2.0 * self.hue * u[4]).to(x.dtype).view(B, 1, 1)
            y = _shift_hue(y, shift)
        return torch.where(apply, y, x)


class RandomGrayscale(BatchTransform):
    """Replace each RGB sample by its luma in all three channels with probability ``p``."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        if x.shape[1] != 3:
            raise ValueError(f"RandomGrayscale needs 3-channel RGB input, got {x.shape[1]} channel(s)")
        mask = _bernoulli(self.p, x.shape[0], x, generator).view(-1, 1, 1, 1)
        return torch.where(mask, _luma(x).expand_as(x), x)


class GaussianBlur(BatchTransform):
    """Gaussian blur applied to each sample with probability ``p``, its σ drawn uniformly per sample in ``sigma``.

    torchvision's ``gaussian_blur`` with a per-sample σ: the ``k × k`` kernel ``g gᵀ``, ``g_i ∝ exp(−t_i² / (2σ²))``
    with ``t_i = i − (k − 1)/2`` and ``Σ_i g_i = 1``, on the image reflect-padded by ``k // 2``; computed as a vertical
    then a horizontal 1-D pass of a depthwise convolution (one kernel per sample and channel), which equals the 2-D
    convolution up to float rounding. Draws: two uniforms per sample (apply?, σ), whether or not it is applied.

    Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``; ``k // 2 < min(H, W)`` (reflect padding needs it).
    """

    def __init__(self, kernel_size: int, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> None:
        super().__init__()
        kernel_size = int(kernel_size)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"GaussianBlur kernel_size must be a positive odd integer, got {kernel_size}")
        sigma = (float(sigma[0]), float(sigma[1]))
        if not 0.0 < sigma[0] <= sigma[1]:
            raise ConfigError(f"GaussianBlur sigma must satisfy 0 < min ≤ max, got {sigma}")
        self.kernel_size, self.sigma, self.p = kernel_size, sigma, float(p)

    def kernels(self, sigma: torch.Tensor) -> torch.Tensor:
        """The normalised 1-D kernels ``(B, k)`` of per-sample ``sigma`` ``(B,)``."""
        k = self.kernel_size
        t = torch.arange(k, device=sigma.device, dtype=sigma.dtype) - (k - 1) / 2.0
        g = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
        return g / g.sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        B, C, H, W = x.shape
        k, pad = self.kernel_size, self.kernel_size // 2
        if pad >= min(H, W):
            raise ValueError(
                f"GaussianBlur with a {k}×{k} kernel needs images larger than {pad} pixels a side, got {H}×{W}"
            )
        u = _rand((2, B), x, generator, batch_dim=1)
        apply = (u[0] < self.p).view(B, 1, 1, 1)
        sigma = (self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[1]).to(x.dtype)
        if pad == 0:
            return x
        g = self.kernels(sigma).repeat_interleave(C, dim=0)  # (B·C, k): one kernel per sample and channel
        y = F.pad(x.reshape(1, B * C, H, W), (pad, pad, pad, pad), mode="reflect")
        y = F.conv2d(y, g.view(B * C, 1, k, 1), groups=B * C)
        y = F.conv2d(y, g.view(B * C, 1, 1, k), groups=B * C)
        return torch.where(apply, y.view(B, C, H, W), x)


class RandomSolarize(BatchTransform):
    """Solarize each sample with probability ``p``: every value ``x ≥ threshold`` becomes ``1 − x`` (inputs in
    [0, 1]); the default threshold 0.5 is PIL's and DALI's 128 on rounded 8-bit pixels (see the module docstring)."""

    def __init__(self, p: float = 0.2, threshold: float = 0.5) -> None:
        super().__init__()
        self.p, self.threshold = float(p), float(threshold)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        mask = _bernoulli(self.p, x.shape[0], x, generator).view(-1, 1, 1, 1)
        return torch.where(mask & (x >= self.threshold), 1.0 - x, x)


class Compose(BatchTransform):
    """Apply ``transforms`` in order, passing the generator to each, then ``normalize`` (``None``: pixels stay in
    [0, 1]).

    ``channels`` (if given) is checked against the batch. Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``, float.
    """

    def __init__(
        self,
        transforms: Sequence[BatchTransform],
        normalize: Normalize | None,
        channels: int | None = None,
        preset: str = "",
    ) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.normalize = normalize
        self.channels = channels
        self.preset = preset

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _as_float(x)
        if self.channels is not None and x.shape[1] != self.channels:
            raise ValueError(
                f"augmentation '{self.preset or 'custom'}' was built for {self.channels} channel(s) but got a batch "
                f"of shape {tuple(x.shape)}"
            )
        for t in self.transforms:
            x = t(x, generator)
        return x if self.normalize is None else self.normalize(x)

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, channels={self.channels}"


class ViewTransforms(nn.Module):
    """One augmentation pipeline per view, for asymmetric recipes (BYOL's, run by solo-learn, CaSSLe and PNR).

    ``forward(x, generator=None, view=0)`` applies view ``view``'s pipeline, so a caller that knows nothing of views
    gets view 0's; :meth:`views` stacks views ``0 … n−1``, each from its own pipeline. The pipelines draw from the same
    generator one after the other, as a symmetric pipeline called ``n`` times does.
    """

    def __init__(self, pipelines: Sequence[nn.Module]) -> None:
        super().__init__()
        if not pipelines:
            raise ConfigError("ViewTransforms needs at least one pipeline")
        self.pipelines = nn.ModuleList(pipelines)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, view: int = 0) -> torch.Tensor:
        if not 0 <= view < len(self.pipelines):
            raise ValueError(f"view {view} asked of an augmentation with {len(self.pipelines)} per-view pipelines")
        return self.pipelines[view](x, generator)

    def views(self, x: torch.Tensor, n: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` views stacked as ``(n·B, C, H, W)``, view ``k`` from pipeline ``k``."""
        return views(self, x, n, generator)


def augment_view(transform, x: torch.Tensor, view: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """View ``view`` (0-based) of ``x``: the view's own pipeline of a :class:`ViewTransforms`; any other transform
    (the same pipeline for every view, or a plain callable ``transform(x)``) as it is."""
    if isinstance(transform, ViewTransforms):
        return transform(x, generator, view=view)
    return transform(x) if generator is None else transform(x, generator)


def views(transform: nn.Module, x: torch.Tensor, n: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` independently augmented views of ``x`` stacked as ``(n·B, C, H, W)``, view 1's rows first:
    ``torch.cat([transform(x, generator) for _ in range(n)])`` (for a :class:`ViewTransforms`, view ``k`` by its own
    pipeline)."""
    if n < 1:
        raise ValueError(f"views needs n ≥ 1, got {n}")
    if isinstance(transform, ViewTransforms):
        return torch.cat([transform(x, generator, view=k) for k in range(n)], dim=0)
    return torch.cat([transform(x, generator) for _ in range(n)], dim=0)


class TwoViews(nn.Module):
    """Wrap a transform so that ``forward(x, generator)`` returns ``n`` (default 2) stacked views ``(n·B, C, H, W)``."""

    def __init__(self, transform: nn.Module, n: int = 2) -> None:
        super().__init__()
        self.transform = transform
        self.n = int(n)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return views(self.transform, x, self.n, generator)


# ---------------------------------------------------------------------------------------------------------- builders
_OPTIONS = {
    "flip",
    "padding",
    "scale",
    "ratio",
    "jitter",
    "jitter_p",
    "grayscale_p",
    "blur_p",
    "blur_sigma",
    "blur_kernel",
    "solarize_p",
}


def default_blur_kernel(image_size: int) -> int:
    """``image_size // 20 * 2 + 1``: Co2L's and FNC2's blur kernel (about a tenth of the side, odd): 7 at 64 px, 23 at
    224 px (solo-learn's DALI window)."""
    return int(image_size) // 20 * 2 + 1


def build_eval_transform(mean: Sequence[float] | float, std: Sequence[float] | float) -> Compose:
    """Evaluation transform: ``(x − mean) / std`` only (the ``"none"`` preset)."""
    return Compose([], Normalize(mean, std), channels=None, preset="none")


def _unknown_options(names) -> None:
    unknown = sorted(set(names) - _OPTIONS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(_OPTIONS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"Unknown augmentation option(s) {', '.join(unknown)}{hint}; allowed: {', '.join(sorted(_OPTIONS))}"
        )


def build_augmentation(
    preset: str,
    image_size: int,
    channels: int,
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    normalize: bool = True,
    views: Sequence[dict] | None = None,
    **options,
) -> Compose | ViewTransforms:
    """Build a batched augmentation pipeline; call it as ``aug(x, generator=None)`` on ``(B, channels, H, W)``.

    Args:
        preset: ``"none"``, ``"supervised"`` or ``"contrastive"`` (see the module docstring), or a recipe registered
            in ``protosphere.registry.AUGMENTATIONS``: ``recipe(image_size, channels, **options)`` returns the
            transforms applied before normalisation.
        image_size: side of the (square) training images; sets the default crop padding and blur kernel.
        channels: 1 (grayscale) or 3 (RGB); selects the colour operations of ``"contrastive"``.
        mean, std: per-channel normalisation statistics.
        normalize: ``False`` leaves out the final ``(x − mean) / std``: the output stays in [0, 1] (Mammoth's
            ``ToTensor()``-only inputs; with ``"none"`` the transform is then only the uint8 → float conversion).
        views: per-view option overrides, one mapping per view (e.g. ``[{"blur_p": 1.0}, {"blur_p": 0.1,
            "solarize_p": 0.2}]``): view ``k`` is built from ``options`` updated by ``views[k]`` and the result is a
            :class:`ViewTransforms`. ``None`` or empty: one :class:`Compose` for every view.
        **options: ``flip`` (bool, default True; supervised and contrastive), ``padding`` (int, default
            ``image_size // 8``; supervised), ``scale`` (default (0.2, 1.0)), ``ratio`` (default (3/4, 4/3)),
            ``jitter`` ((brightness, contrast, saturation, hue), default (0.4, 0.4, 0.4, 0.1); saturation and hue
            are ignored for 1 channel), ``jitter_p`` (default 0.8), ``grayscale_p`` (default 0.2; RGB only),
            ``blur_p`` (default 0: no blur), ``blur_sigma`` (default (0.1, 2.0)), ``blur_kernel`` (odd, default
            :func:`default_blur_kernel`), ``solarize_p`` (default 0) — all but the first two for contrastive.
            Options a preset does not use are ignored.

    Raises:
        ConfigError: unknown preset or option (closest name suggested), mean/std of the wrong length, bad values.
    """
    key = str(preset).lower()
    try:
        recipe = AUGMENTATIONS.get(key)
    except UnknownNameError as exc:
        raise ConfigError(f"Unknown augmentation preset '{preset}': {exc}") from None
    _unknown_options(options)
    for view in views or ():
        _unknown_options(view)
    channels, image_size = int(channels), int(image_size)
    if channels not in (1, 3):
        raise ConfigError(f"Augmentation supports 1 or 3 channels, got {channels}")
    if image_size < 1:
        raise ConfigError(f"Augmentation image_size must be positive, got {image_size}")
    norm = Normalize(mean, std)
    for name, t in (("mean", norm.mean), ("std", norm.std)):
        if t.shape[1] not in (1, channels):
            raise ConfigError(f"Normalisation {name} has {t.shape[1]} values but the data has {channels} channel(s)")

    def pipeline(opts: dict) -> Compose:
        return Compose(recipe(image_size, channels, **opts), norm if normalize else None, channels=channels, preset=key)

    if not views:
        return pipeline(options)
    return ViewTransforms([pipeline({**options, **view}) for view in views])


@AUGMENTATIONS.register("none")
def _no_augmentation(image_size: int, channels: int, **options) -> list[BatchTransform]:
    """Nothing but the uint8 → float conversion and normalisation (also the evaluation transform)."""
    return []


@AUGMENTATIONS.register("supervised")
def _supervised(image_size: int, channels: int, **options) -> list[BatchTransform]:
    """Padded random crop and horizontal flip (the CIFAR recipe of supervised continual learning)."""
    padding = options.get("padding")
    transforms: list[BatchTransform] = [RandomCrop(image_size // 8 if padding is None else int(padding))]
    if options.get("flip", True):
        transforms.append(RandomHorizontalFlip(0.5))
    return transforms


@AUGMENTATIONS.register("contrastive")
def _contrastive(image_size: int, channels: int, **options) -> list[BatchTransform]:
    """SimCLR's recipe: random resized crop with flip, colour jitter, random grayscale (RGB only); Gaussian blur and
    solarization when their probabilities are set."""
    transforms: list[BatchTransform] = [
        RandomResizedCrop(
            tuple(options.get("scale", (0.2, 1.0))),
            tuple(options.get("ratio", (3.0 / 4.0, 4.0 / 3.0))),
            flip_p=0.5 if options.get("flip", True) else 0.0,
        )
    ]
    jitter = tuple(float(v) for v in options.get("jitter", (0.4, 0.4, 0.4, 0.1)))
    if len(jitter) != 4:
        raise ConfigError(f"jitter must be (brightness, contrast, saturation, hue), got {jitter}")
    jitter_p = float(options.get("jitter_p", 0.8))
    if channels == 3:
        transforms.append(ColorJitter(*jitter, p=jitter_p))
        transforms.append(RandomGrayscale(float(options.get("grayscale_p", 0.2))))
    else:
        transforms.append(ColorJitter(jitter[0], jitter[1], 0.0, 0.0, p=jitter_p))
    blur_p = float(options.get("blur_p", 0.0))
    if blur_p > 0:  # left out at p = 0, so that a recipe without blur draws as before
        kernel = options.get("blur_kernel")
        kernel = default_blur_kernel(image_size) if kernel is None else int(kernel)
        if kernel == 1:
            raise ConfigError(
                f"blur_p={blur_p} asks for a Gaussian blur, but its kernel is 1 pixel wide (the default "
                f"image_size // 20 * 2 + 1 for {image_size}-px images), which leaves images unchanged; set blur_kernel "
                "to an odd size ≥ 3 or blur_p to 0"
            )
        if kernel // 2 >= image_size:
            raise ConfigError(
                f"blur_kernel={kernel} is too large for {image_size}×{image_size} images (reflect padding needs "
                f"kernel // 2 < image side); use at most {2 * image_size - 1}"
            )
        transforms.append(GaussianBlur(kernel, tuple(options.get("blur_sigma", (0.1, 2.0))), p=blur_p))
    solarize_p = float(options.get("solarize_p", 0.0))
    if solarize_p > 0:
        transforms.append(RandomSolarize(solarize_p))
    return transforms


PRESETS: tuple[str, ...] = ("none", "supervised", "contrastive")
"""The built-in presets (``protosphere.registry.AUGMENTATIONS`` holds these and any registered by user code)."""
