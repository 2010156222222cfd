import colorsys
import math

import pytest
import torch

from protosphere.data.augment import (
    ColorJitter,
    GaussianBlur,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomSolarize,
    TwoViews,
    ViewTransforms,
    _shift_hue,
    augment_view,
    build_augmentation,
    build_eval_transform,
    default_blur_kernel,
    views,
)
from protosphere.errors import ConfigError

MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
MEAN1, STD1 = (0.286,), (0.353,)
SETTINGS = [(1, 28, MEAN1, STD1), (3, 32, MEAN3, STD3)]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _images(b, c, s, seed=0):
    return torch.rand(b, c, s, s, generator=_gen(seed))


@pytest.mark.parametrize("preset", ["none", "supervised", "contrastive"])
@pytest.mark.parametrize("channels,size,mean,std", SETTINGS)
@pytest.mark.parametrize("batch", [1, 6])
def test_shapes_dtypes(preset, channels, size, mean, std, batch):
    aug = build_augmentation(preset, size, channels, mean, std)
    x = _images(batch, channels, size)
    y = aug(x, generator=_gen(1))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    y2 = aug(x)  # global RNG
    assert y2.shape == x.shape


def test_none_is_exact_normalisation():
    x = _images(5, 3, 32)
    expected = (x - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1)
    assert torch.equal(build_augmentation("none", 32, 3, MEAN3, STD3)(x), expected)
    assert torch.equal(build_eval_transform(MEAN3, STD3)(x), expected)
    assert torch.equal(build_augmentation("none", 32, 3, MEAN3, STD3)(x, generator=_gen(3)), expected)


def test_without_normalisation_pixels_stay_in_unit_range():
    """normalize=False: Mammoth's ToTensor()-only input — uint8 / 255 and nothing else ("none"), or the augmentation
    without the final (x - mean) / std."""
    x8 = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    plain = build_augmentation("none", 28, 1, MEAN1, STD1, normalize=False)
    assert torch.equal(plain(x8), x8.float() / 255)
    x = _images(5, 3, 32)
    for preset in ("supervised", "contrastive"):
        raw = build_augmentation(preset, 32, 3, MEAN3, STD3, normalize=False)(x, generator=_gen(3))
        normed = build_augmentation(preset, 32, 3, MEAN3, STD3)(x, generator=_gen(3))
        expected = (raw - torch.tensor(MEAN3).view(1, 3, 1, 1)) / torch.tensor(STD3).view(1, 3, 1, 1)
        torch.testing.assert_close(normed, expected)
        assert raw.min() >= 0 and raw.max() <= 1


def test_uint8_input():
    x8 = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    aug = build_augmentation("none", 28, 1, MEAN1, STD1)
    torch.testing.assert_close(aug(x8), aug(x8.float() / 255))


def test_resized_crop_full_scale_is_identity():
    x = _images(8, 3, 32)
    rrc = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    torch.testing.assert_close(rrc(x, _gen(0)), x, atol=1e-5, rtol=0)
    x1 = _images(3, 1, 28)
    aug = build_augmentation(
        "contrastive", 28, 1, MEAN1, STD1, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter_p=0.0
    )
    torch.testing.assert_close(aug(x1, _gen(0)), build_eval_transform(MEAN1, STD1)(x1), atol=1e-4, rtol=0)


def test_resized_crop_flip_probability():
    x = _images(4000, 1, 6)
    y = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.5)(x, _gen(0))
    same = (y - x).abs().flatten(1).amax(1) < 1e-5
    flipped = (y - x.flip(-1)).abs().flatten(1).amax(1) < 1e-5
    assert bool((same ^ flipped).all())  # every sample is exactly one of the two
    assert abs(flipped.float().mean().item() - 0.5) < 0.04


def test_horizontal_flip_probability():
    x = _images(4000, 1, 5)
    y = RandomHorizontalFlip(0.5)(x, _gen(1))
    flipped = torch.isclose(y, x.flip(-1)).flatten(1).all(1)
    assert bool((flipped | torch.isclose(y, x).flatten(1).all(1)).all())
    assert abs(flipped.float().mean().item() - 0.5) < 0.04


def test_crop_boxes_within_scale_and_ratio():
    x = torch.zeros(20000, 1, 32, 32)
    top, left, h, w = RandomResizedCrop().sample_boxes(x, _gen(0))
    for t in (top, left, h, w):  # whole pixels
        assert torch.equal(t, t.round())
    area = h * w / (32 * 32)  # within scale and ratio up to the rounding of each side to a whole pixel
    assert ((h + 0.5) * (w + 0.5) / 1024).min() >= 0.2 and ((h - 0.5) * (w - 0.5) / 1024).max() <= 1
    assert ((w + 0.5) / (h - 0.5)).min() >= 0.75 and ((w - 0.5) / (h + 0.5)).max() <= 4 / 3
    assert top.min() >= 0 and left.min() >= 0
    assert (top + h).max() <= 32 + 1e-4 and (left + w).max() <= 32 + 1e-4
    # the area distribution spans the whole range (uniform draws, truncated by fitting)
    assert area.min() < 0.25 and area.max() > 0.95


def test_crop_boxes_fallback_when_nothing_fits():
    # ratio range excludes the (square) image and every box is too wide: fallback = centred, clipped to the ratio
    x = torch.zeros(50, 1, 16, 16)
    top, left, h, w = RandomResizedCrop(scale=(1.0, 1.0), ratio=(2.0, 2.0)).sample_boxes(x, _gen(0))
    torch.testing.assert_close(w, torch.full((50,), 16.0))
    torch.testing.assert_close(h, torch.full((50,), 8.0))
    torch.testing.assert_close(top, torch.full((50,), 4.0))


def test_resized_crop_content_is_the_box():
    # a linear ramp image: bilinear resampling of a box reproduces the ramp restricted to the box exactly, clamped to
    # the box's first and last pixel centres (a resize of the cropped image reads nothing outside it)
    S = 16
    ramp = ((torch.arange(S, dtype=torch.float32) + 0.5) / S).view(1, 1, 1, S).expand(3, 1, S, S).contiguous()
    rrc = RandomResizedCrop(flip_p=0.0)
    top, left, h, w = rrc.sample_boxes(ramp, _gen(5))
    y = rrc(ramp, _gen(5))
    centres = (torch.arange(S, dtype=torch.float32) + 0.5) / S
    for b in range(3):
        xs = (left[b] + centres * w[b]).clamp(left[b] + 0.5, left[b] + w[b] - 0.5) / S
        torch.testing.assert_close(y[b, 0, 0], xs, atol=1e-5, rtol=0)


def test_resized_crop_equals_crop_then_resize():
    # reference: cut the whole-pixel box out, resize it with F.interpolate (bilinear, align_corners=False: what
    # torchvision's resize of the cropped image computes on tensors), flip
    x = _images(64, 3, 20, seed=4)
    rrc = RandomResizedCrop(flip_p=0.5)
    y = rrc(x, _gen(9))
    top, left, h, w = (t.long() for t in rrc.sample_boxes(x, _gen(9)))
    for b in range(64):
        crop = x[b : b + 1, :, top[b] : top[b] + h[b], left[b] : left[b] + w[b]]
        ref = torch.nn.functional.interpolate(crop, size=(20, 20), mode="bilinear", align_corners=False)[0]
        same = torch.allclose(y[b], ref, atol=1e-5)
        assert same or torch.allclose(y[b], ref.flip(-1), atol=1e-5), b


def _torchvision_get_params(u_area, u_aspect, u_top, u_left, H, W, scale, ratio):
    """torchvision.transforms.RandomResizedCrop.get_params, step by step in Python, fed the same uniform draws."""
    for a in range(len(u_area)):
        target_area = H * W * (scale[0] + (scale[1] - scale[0]) * u_area[a])
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u_aspect[a])
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= W and 0 < h <= H:
            return int(u_top[a] * (H - h + 1)), int(u_left[a] * (W - w + 1)), h, w
    in_ratio = W / H
    if in_ratio < min(ratio):
        w, h = W, int(round(W / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = H, int(round(H * max(ratio)))
    else:
        w, h = W, H
    return (H - h) // 2, (W - w) // 2, h, w


@pytest.mark.parametrize(
    "size,scale,ratio",
    [
        ((28, 28), (0.2, 1.0), (3 / 4, 4 / 3)),
        ((12, 20), (0.08, 1.0), (3 / 4, 4 / 3)),
        ((16, 16), (0.9, 1.0), (2.0, 3.0)),
    ],
)
def test_crop_boxes_are_torchvisions(size, scale, ratio):
    H, W = size
    rrc = RandomResizedCrop(scale, ratio)
    x = torch.zeros(3000, 1, H, W)
    top, left, h, w = rrc.sample_boxes(x, _gen(3))
    u = torch.rand((4, 3000, 10), generator=_gen(3))  # the draws sample_boxes made, in its layout
    for b in range(3000):
        ref = _torchvision_get_params(*(u[k, b].double().tolist() for k in range(4)), H, W, scale, ratio)
        assert (int(top[b]), int(left[b]), int(h[b]), int(w[b])) == ref, b


def test_crop_offsets_reach_both_borders_uniformly():
    # whole-pixel offsets {0, ..., H - h}: for full-height boxes the only offset is 0; for h = H - 1 both 0 and 1
    x = torch.zeros(20000, 1, 10, 10)
    top, _, h, _ = RandomResizedCrop(scale=(0.81, 0.81), ratio=(1.0, 1.0)).sample_boxes(x, _gen(1))
    assert bool((h == 9).all())
    assert abs(float((top == 0).float().mean()) - 0.5) < 0.02 and set(top.unique().tolist()) == {0.0, 1.0}


def test_supervised_crop_is_padded_shift():
    p, S = 4, 32
    x = _images(64, 3, S, seed=2) + 0.1  # no zeros inside the image
    y = RandomCrop(p)(x, _gen(0))
    xp = torch.nn.functional.pad(x, (p, p, p, p))
    offsets = set()
    for b in range(64):
        found = [
            (i, j)
            for i in range(2 * p + 1)
            for j in range(2 * p + 1)
            if torch.equal(y[b], xp[b, :, i : i + S, j : j + S])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 20  # offsets vary over the 81 possibilities
    assert torch.equal(RandomCrop(0)(x, _gen(0)), x)


def test_supervised_no_flip_no_padding_is_identity():
    x = _images(4, 1, 28)
    aug = build_augmentation("supervised", 28, 1, MEAN1, STD1, flip=False, padding=0)
    assert torch.equal(aug(x, _gen(0)), build_eval_transform(MEAN1, STD1)(x))
    assert build_augmentation("supervised", 32, 3, MEAN3, STD3).transforms[0].padding == 4
    assert build_augmentation("supervised", 28, 1, MEAN1, STD1).transforms[0].padding == 3


@pytest.mark.parametrize("preset", ["supervised", "contrastive"])
@pytest.mark.parametrize("channels,size,mean,std", SETTINGS)
def test_seeded_reproducibility(preset, channels, size, mean, std):
    aug = build_augmentation(preset, size, channels, mean, std)
    x = _images(16, channels, size)
    a = aug(x, generator=_gen(7))
    b = aug(x, generator=_gen(7))
    c = aug(x, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(3)
    d = aug(x)
    torch.manual_seed(3)
    assert torch.equal(d, aug(x))


def test_grayscale_equal_channels():
    x = _images(32, 3, 8)
    y = RandomGrayscale(p=1.0)(x, _gen(0))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    torch.testing.assert_close(y[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    # in the contrastive pipeline with p = 0.2: about a fifth of the samples are grey, the rest are not
    aug = build_augmentation("contrastive", 8, 3, 0.5, 0.25, jitter_p=0.0)
    x = _images(3000, 3, 8)
    y = aug(x, _gen(1))
    grey = ((y[:, 0] - y[:, 1]).abs().amax((1, 2)) < 1e-6) & ((y[:, 1] - y[:, 2]).abs().amax((1, 2)) < 1e-6)
    assert abs(grey.float().mean().item() - 0.2) < 0.04


def test_shift_hue_matches_colorsys():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 4, 4)
    x[0, :, 0, 0] = 0.5  # a grey pixel
    x[1, :, 0, 0] = torch.tensor([0.2, 0.9, 0.9])  # ties between channels
    shifts = torch.tensor([0.1, -0.07, 0.0]).view(3, 1, 1)
    y = _shift_hue(x, shifts)
    for b in range(3):
        for i in range(4):
            for j in range(4):
                h, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
                ref = colorsys.hsv_to_rgb((h + shifts[b].item()) % 1.0, s, v)
                torch.testing.assert_close(y[b, :, i, j], torch.tensor(ref), atol=1e-5, rtol=0)
    torch.testing.assert_close(_shift_hue(x, torch.ones(3, 1, 1)), x, atol=1e-5, rtol=0)


def test_color_jitter_per_sample_factors():
    x = 0.5 * _images(500, 3, 4) + 0.05  # values in [0.05, 0.55]: brightness ≤ 1.4 never clips
    y = ColorJitter(0.4, 0.0, 0.0, 0.0, p=1.0)(x, _gen(0))
    ratio = (y / x).flatten(1)
    torch.testing.assert_close(ratio.amin(1), ratio.amax(1), atol=1e-5, rtol=1e-5)  # one factor per sample
    factors = ratio[:, 0]
    assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5
    assert factors.std() > 0.15  # ≈ 0.8/sqrt(12) = 0.23
    # p: about 80 % of the samples change
    changed = (ColorJitter(p=0.8)(x, _gen(1)) - x).abs().flatten(1).amax(1) > 0
    assert abs(changed.float().mean().item() - 0.8) < 0.06
    # grayscale input: brightness/contrast only
    g = _images(10, 1, 6)
    assert ColorJitter(0.4, 0.4, 0.0, 0.0, p=1.0)(g, _gen(0)).shape == g.shape
    with pytest.raises(ValueError, match="3-channel"):
        ColorJitter()(g)


def test_contrastive_grayscale_has_no_colour_ops():
    aug = build_augmentation("contrastive", 28, 1, MEAN1, STD1)
    kinds = [type(t).__name__ for t in aug.transforms]
    assert kinds == ["RandomResizedCrop", "ColorJitter"]
    assert aug.transforms[1].saturation == 0 and aug.transforms[1].hue == 0
    colour = build_augmentation("contrastive", 32, 3, MEAN3, STD3)
    assert [type(t).__name__ for t in colour.transforms] == ["RandomResizedCrop", "ColorJitter", "RandomGrayscale"]


def test_views_order_and_shape():
    aug = build_augmentation("contrastive", 32, 3, MEAN3, STD3)
    x = _images(5, 3, 32)
    v = views(aug, x, 2, generator=_gen(4))
    g = _gen(4)
    expected = torch.cat([aug(x, g), aug(x, g)])
    assert v.shape == (10, 3, 32, 32) and torch.equal(v, expected)
    assert not torch.equal(v[:5], v[5:])
    assert torch.equal(aug.views(x, 3, generator=_gen(4))[:10], v)
    assert torch.equal(TwoViews(aug)(x, _gen(4)), v)


def test_batch_of_one_all_transforms():
    x = _images(1, 3, 9)
    for t in (RandomCrop(2), RandomHorizontalFlip(), RandomResizedCrop(), ColorJitter(p=1.0), RandomGrayscale(1.0)):
        assert t(x, _gen(0)).shape == (1, 3, 9, 9)


def test_errors():
    with pytest.raises(ConfigError, match="contrastive"):
        build_augmentation("contrastiv", 32, 3, MEAN3, STD3)
    with pytest.raises(ConfigError, match="flip"):
        build_augmentation("supervised", 32, 3, MEAN3, STD3, flipp=True)
    with pytest.raises(ConfigError, match="3 values"):
        build_augmentation("none", 28, 1, MEAN3, STD3)
    aug = build_augmentation("none", 28, 1, MEAN1, STD1)
    with pytest.raises(ValueError, match="channel"):
        aug(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="B, C, H, W"):
        aug(torch.rand(28, 28))
    with pytest.raises(ConfigError):
        RandomResizedCrop(scale=(0.0, 1.0))
    assert math.isclose(build_augmentation("contrastive", 32, 3, MEAN3, STD3).transforms[0].ratio[0], 0.75)


# ------------------------------------------------------------------------------------ Gaussian blur, solarization
def _blur_reference(x: torch.Tensor, sigmas: list[float], kernel_size: int) -> torch.Tensor:
    """torchvision's ``gaussian_blur``, one sample at a time: 1-D kernel from ``linspace(-(k-1)/2, (k-1)/2, k)``,
    2-D kernel as its outer product, reflect padding of k // 2, ``conv2d`` per channel."""
    out = []
    for image, sigma in zip(x, sigmas):
        t = torch.linspace(-(kernel_size - 1) / 2, (kernel_size - 1) / 2, kernel_size, dtype=torch.float64)
        pdf = torch.exp(-0.5 * (t / sigma) ** 2)
        k1 = pdf / pdf.sum()
        k2 = torch.outer(k1, k1).expand(image.shape[0], 1, kernel_size, kernel_size)
        pad = kernel_size // 2
        padded = torch.nn.functional.pad(image[None].double(), (pad, pad, pad, pad), mode="reflect")
        out.append(torch.nn.functional.conv2d(padded, k2, groups=image.shape[0])[0].float())
    return torch.stack(out)


def _blur_draws(batch: int, seed: int, p: float, sigma=(0.1, 2.0)) -> tuple[list[bool], list[float]]:
    """GaussianBlur's documented draws: two uniforms per sample, (apply if < p, σ = lo + (hi − lo)·u)."""
    u = torch.rand((2, batch), generator=_gen(seed))
    return (u[0] < p).tolist(), (sigma[0] + (sigma[1] - sigma[0]) * u[1]).tolist()


@pytest.mark.parametrize("kernel,height,width", [(7, 16, 16), (23, 30, 24), (3, 5, 9)])
def test_gaussian_blur_matches_per_sample_reference(kernel, height, width):
    x = torch.rand(6, 3, height, width, generator=_gen(0))
    y = GaussianBlur(kernel, (0.1, 2.0), p=1.0)(x, _gen(5))
    _, sigmas = _blur_draws(6, 5, 1.0)
    torch.testing.assert_close(y, _blur_reference(x, sigmas, kernel), atol=2e-6, rtol=0)
    # the same numbers from scipy: Gaussian weights exp(-t²/2σ²) over radius k // 2, mirrored border
    from scipy.ndimage import gaussian_filter

    for b in range(6):
        ref = gaussian_filter(x[b].double().numpy(), sigmas[b], mode="mirror", radius=kernel // 2, axes=(1, 2))
        torch.testing.assert_close(y[b].double(), torch.from_numpy(ref), atol=2e-6, rtol=0)


def test_gaussian_blur_probability_and_untouched_samples():
    x = torch.rand(8, 1, 12, 12, generator=_gen(1))
    y = GaussianBlur(5, (0.5, 1.5), p=0.5)(x, _gen(2))
    applied, sigmas = _blur_draws(8, 2, 0.5, (0.5, 1.5))
    assert 0 < sum(applied) < 8
    reference = _blur_reference(x, sigmas, 5)
    for b in range(8):
        if applied[b]:
            torch.testing.assert_close(y[b], reference[b], atol=2e-6, rtol=0)
        else:
            assert torch.equal(y[b], x[b])
    # statistically: a fraction p of 4000 samples is blurred (σ ≥ 1, so a blurred sample always changes)
    x = torch.rand(4000, 1, 6, 6, generator=_gen(3))
    changed = (GaussianBlur(3, (1.0, 2.0), p=0.3)(x, _gen(4)) - x).abs().flatten(1).amax(1) > 1e-4
    assert abs(changed.float().mean().item() - 0.3) < 0.03  # 4 standard errors
    # a constant image is unchanged: the kernel sums to 1
    flat = torch.full((3, 3, 10, 10), 0.3)
    torch.testing.assert_close(GaussianBlur(7, p=1.0)(flat, _gen(0)), flat, atol=1e-6, rtol=0)


def test_solarize_matches_elementwise_reference():
    x = torch.rand(500, 3, 4, 4, generator=_gen(6))
    x[0, 0, 0, :2] = torch.tensor([0.5001, 0.4999])  # just above the threshold: inverted; just below: kept
    y = RandomSolarize(p=0.2)(x, _gen(7))
    apply = (torch.rand((500,), generator=_gen(7)) < 0.2).tolist()
    expected = x.clone()
    for b in range(500):
        if apply[b]:
            for value in expected[b].view(-1):
                if value >= 0.5:
                    value.copy_(1.0 - value)
    assert torch.equal(y, expected)
    assert abs(sum(apply) / 500 - 0.2) < 0.08
    solarized = RandomSolarize(p=1.0)(x, _gen(0))
    assert solarized[0, 0, 0, 0] == 1.0 - x[0, 0, 0, 0] and solarized[0, 0, 0, 1] == x[0, 0, 0, 1]
    assert solarized.max() <= 0.5  # every value ≥ 0.5 became 1 − x ≤ 0.5
    # statistically: p of 4000 samples solarized
    x = torch.rand(4000, 1, 3, 3, generator=_gen(8)) * 0.5 + 0.5
    changed = (RandomSolarize(p=0.2)(x, _gen(9)) != x).flatten(1).any(1)
    assert abs(changed.float().mean().item() - 0.2) < 0.03


def test_blur_and_solarization_in_the_contrastive_recipe():
    plain = build_augmentation("contrastive", 64, 3, MEAN3, STD3)
    assert [type(t).__name__ for t in plain.transforms] == ["RandomResizedCrop", "ColorJitter", "RandomGrayscale"]
    zero = build_augmentation("contrastive", 64, 3, MEAN3, STD3, blur_p=0.0, solarize_p=0.0)
    x = _images(8, 3, 64)
    assert torch.equal(zero(x, _gen(1)), plain(x, _gen(1)))  # p = 0: left out, the same draws as without
    aug = build_augmentation("contrastive", 64, 3, MEAN3, STD3, scale=(0.1, 1.0), blur_p=0.5, solarize_p=0.2)
    kinds = [type(t).__name__ for t in aug.transforms]
    assert kinds == ["RandomResizedCrop", "ColorJitter", "RandomGrayscale", "GaussianBlur", "RandomSolarize"]
    blur = aug.transforms[3]
    assert blur.kernel_size == 7 == default_blur_kernel(64) and blur.p == 0.5 and blur.sigma == (0.1, 2.0)
    assert aug.transforms[0].scale == (0.1, 1.0) and aug.transforms[4].p == 0.2
    assert default_blur_kernel(224) == 23 and default_blur_kernel(32) == 3  # solo-learn's DALI window at 224 px
    grey = build_augmentation("contrastive", 28, 1, MEAN1, STD1, blur_p=1.0, blur_kernel=5, jitter=(0.2, 0.3, 0, 0))
    assert grey.transforms[2].kernel_size == 5 and grey.transforms[1].brightness == 0.2
    assert grey(_images(4, 1, 28), _gen(0)).shape == (4, 1, 28, 28)
    with pytest.raises(ConfigError, match="1 pixel wide"):
        build_augmentation("contrastive", 16, 3, MEAN3, STD3, blur_p=0.5)
    with pytest.raises(ConfigError, match="too large"):
        build_augmentation("contrastive", 8, 3, MEAN3, STD3, blur_p=0.5, blur_kernel=17)
    with pytest.raises(ConfigError, match="odd"):
        GaussianBlur(4)
    with pytest.raises(ValueError, match="larger than 3 pixels"):
        GaussianBlur(7, p=1.0)(torch.rand(1, 3, 3, 8))
    with pytest.raises(ConfigError, match="blur_p"):
        build_augmentation("contrastive", 32, 3, MEAN3, STD3, views=[{"blurp": 1.0}, {}])


def _identity_geometry(**extra):
    """Contrastive options whose crop, flip, jitter and grayscale leave the image as it is (to see blur/solarize)."""
    return dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter_p=0.0, grayscale_p=0.0, **extra)


def test_per_view_settings_reach_their_view():
    """solo-learn's asymmetric recipe: view 1 always blurred and never solarized, view 2 solarized, not blurred."""
    aug = build_augmentation(
        "contrastive",
        16,
        3,
        MEAN3,
        STD3,
        normalize=False,
        views=[{"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.0, "solarize_p": 1.0}],
        **_identity_geometry(blur_sigma=(1.0, 2.0), blur_kernel=5),
    )
    assert isinstance(aug, ViewTransforms) and len(aug.pipelines) == 2
    assert [type(t).__name__ for t in aug.pipelines[0].transforms][-1] == "GaussianBlur"
    assert [type(t).__name__ for t in aug.pipelines[1].transforms][-1] == "RandomSolarize"
    x = _images(5, 3, 16)
    first, second = aug.views(x, 2, generator=_gen(3)).chunk(2)
    torch.testing.assert_close(second, torch.where(x >= 0.5, 1.0 - x, x), atol=1e-5, rtol=0)  # solarized only
    assert first.max() > 0.5 and not torch.allclose(first, x, atol=1e-3)  # blurred, not solarized
    # the same draws as calling the two pipelines in turn on one generator; the same seed, the same views
    g = _gen(3)
    assert torch.equal(torch.cat([aug.pipelines[0](x, g), aug.pipelines[1](x, g)]), torch.cat([first, second]))
    assert torch.equal(views(aug, x, 2, generator=_gen(3)), torch.cat([first, second]))
    assert torch.equal(TwoViews(aug)(x, _gen(3)), torch.cat([first, second]))
    assert not torch.equal(aug.views(x, 2, generator=_gen(4)), torch.cat([first, second]))
    # view 0 when no view is named (single-view users); augment_view for any transform
    assert torch.equal(aug(x, _gen(5)), aug.pipelines[0](x, _gen(5)))
    assert torch.equal(augment_view(aug, x, 1, _gen(5)), aug.pipelines[1](x, _gen(5)))
    assert torch.equal(augment_view(lambda t: t + 1, x, 1), x + 1)
    with pytest.raises(ValueError, match="view 2"):
        aug(x, view=2)


def test_shared_options_and_view_overrides_merge():
    aug = build_augmentation(
        "contrastive",
        224,
        3,
        MEAN3,
        STD3,
        scale=(0.08, 1.0),
        jitter=(0.4, 0.4, 0.2, 0.1),
        views=[{"blur_p": 1.0}, {"blur_p": 0.1, "solarize_p": 0.2, "scale": (0.5, 1.0)}],
    )
    first, second = aug.pipelines
    assert first.transforms[0].scale == (0.08, 1.0) and second.transforms[0].scale == (0.5, 1.0)
    assert first.transforms[1].saturation == second.transforms[1].saturation == 0.2
    assert [t.p for t in first.transforms[3:]] == [1.0] and first.transforms[3].kernel_size == 23
    assert [t.p for t in second.transforms[3:]] == [0.1, 0.2]


@pytest.mark.parametrize("method", ["simclr", "cassle", "supcon", "fnc2"])
def test_per_view_settings_reach_the_methods_views(method):
    """Through the config and the runner: a two-view method's first view gets view 1's settings (here solarization
    with p = 1), its second view those of view 2 (nothing), for the self-supervised (``views``) and the
    representation methods (``two_views``); single-view users (the augmented probe) get view 1's."""
    import types

    from protosphere.config import validate_config
    from protosphere.runs.runner import build_method

    geometry = {"scale": [1.0, 1.0], "ratio": [1.0, 1.0], "jitter_p": 0.0, "grayscale_p": 0.0}
    config = validate_config(
        {
            "model": {"backbone": "small_cnn"},
            "method": {"name": method, "projection_dim": 16},
            "train": {
                "augmentation": "contrastive",
                "normalize": False,
                "flip": False,
                "augment": {**geometry, "views": [{"solarize_p": 1.0}, {}]},
            },
        }
    )
    scenario = types.SimpleNamespace(image_shape=(3, 16, 16), mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=4)
    built = build_method(config, scenario)
    x = _images(4, 3, 16)
    solarized = torch.where(x >= 0.5, 1.0 - x, x)
    first, second = built.views(x) if hasattr(built, "views") else built.two_views(x).chunk(2)
    torch.testing.assert_close(first, solarized, atol=1e-5, rtol=0)
    torch.testing.assert_close(second, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(built.transforms.train(x), solarized, atol=1e-5, rtol=0)
