"""Feature extractors: MLP, a fast small CNN, and CIFAR-style ResNet-18 (full and reduced width).

Every backbone maps a float batch ``(B, C, H, W)`` to features ``(B, out_dim)`` and exposes ``out_dim: int``. Heads
(projection, classifier, prototypes) live in :mod:`protosphere.models.heads`.

Build one by name with :func:`build_backbone`; the names are those of ``protosphere.registry.BACKBONES``, where user
code registers its own backbones too:

====================  =========  ==========================================================================
name                  out_dim    what it is
====================  =========  ==========================================================================
``mlp``               100        flatten → Linear(C·H·W, 100) → ReLU → Linear(100, 100) → ReLU (Mammoth's
                                 MNIST MLP; with a 100→10 linear head it is Mammoth's ``MNISTMLP``)
``small_cnn``         256        four 3×3 stride-2 conv–BN–ReLU stages (32, 64, 128, 256 channels)
                                 → global average pool; ≈0.39 M parameters; the CPU default
``resnet18``          512        ResNet-18 (He et al. 2016), BasicBlocks [2, 2, 2, 2], width 64; CIFAR stem
                                 by default (3×3 stride 1, no max-pool, as in Co2L / Mammoth), or
                                 torchvision's ImageNet stem (``stem="imagenet"``); ≈11.2 M parameters
``resnet18_reduced``  160        the same with width ``nf = 20`` (Mammoth's reduced ResNet-18, introduced
                                 with GEM, Lopez-Paz & Ranzato 2017); ≈1.1 M parameters
====================  =========  ==========================================================================

ResNet stem (``stem``, the config's ``model.stem``):

- ``"cifar"`` (default): 3×3 stride-1 convolution (padding 1), BN, ReLU, no max-pool — SupCon/Co2L's
  ``resnet_big.py``, Mammoth, and the FNC2 authors' code (``dangtrunganh/samix``), which keep it at every image size,
  64×64 Tiny-ImageNet included (4× the compute of a 32×32 input). ``stem_stride=2`` halves the resolution in this
  stem if that cost matters (not a paper setting).
- ``"cifar_pad2"``: the same 3×3 stride-1 convolution with padding 2, as solo-learn and the CaSSLe/PNR code put on
  torchvision's ResNet-18 for CIFAR (``nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)``,
  ``maxpool = nn.Identity()``): the first feature map is 34×34 on 32×32 images.
- ``"imagenet"``: torchvision's ``resnet18`` stem, 7×7 stride-2 convolution (padding 3, no bias), BN, ReLU, 3×3
  stride-2 max-pool (padding 1), for 224-px data (solo-learn's, CaSSLe's and PNR's ImageNet-100 networks): a 224×224
  input reaches the first stage at 56×56 and the last at 7×7. With this stem the network is torchvision's
  ``resnet18`` without its ``fc`` layer (11,176,512 parameters at 3 input channels).

Memory format: conv backbones run fastest on CPU in ``channels_last``; :func:`to_channels_last` converts a module and
makes conv backbones convert their input as well. The result is numerically the same as the contiguous format.
"""

from __future__ import annotations

import difflib
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from protosphere.errors import ConfigError
from protosphere.registry import BACKBONES as REGISTRY, UnknownNameError

__all__ = [
    "BACKBONES",
    "MLP",
    "SmallCNN",
    "BasicBlock",
    "CifarResNet18",
    "STEMS",
    "INIT_SCHEMES",
    "build_backbone",
    "count_parameters",
    "init_weights",
    "to_channels_last",
]


class _ConvBackbone(nn.Module):
    """Base for conv backbones: optionally converts the input to ``channels_last`` (set by :func:`to_channels_last`)."""

    out_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.channels_last = False

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class MLP(nn.Module):
    """Fully connected feature extractor: flatten, then ``Linear → ReLU`` per hidden size.

    With the default ``hidden=(100, 100)`` on 28×28×1 input this is 784 → 100 → 100, the feature part of Mammoth's
    ``MNISTMLP`` (Buzzega et al. 2020, "Dark Experience for General Continual Learning"); a
    ``LinearClassifier(100, 10)`` on top gives the full Mammoth network.

    Shapes: ``(B, C, H, W)`` (or any ``(B, ...)`` with ``C·H·W`` elements per row) → ``(B, hidden[-1])``.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (100, 100)) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden]
        if not hidden or any(h <= 0 for h in hidden):
            raise ConfigError(f"MLP hidden sizes must be a non-empty list of positive integers, got {hidden}")
        layers: list[nn.Module] = []
        prev = int(in_features)
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        self.in_features = int(in_features)
        self.net = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(_ConvBackbone):
    """Small, CPU-fast CNN: 3×3 conv–BN–ReLU stages with strided down-sampling, then global average pooling.

    Default: channels (32, 64, 128, 256), every conv stride 2, so a 28×28 image gives feature maps of 14, 7, 4 and 2
    pixels and a 32×32 one 16, 8, 4, 2; out_dim 256; 388,320 parameters for 1 input channel (388,896 for 3).
    Strided convolutions instead of stride-1 convolutions followed by max-pooling keep the feature maps small. Measured
    train steps (batch 256, 28×28, ``channels_last``, one CPU thread): this layout ≈ 2,200 img/s; a last stage of
    stride 1 (4×4 maps) ≈ 1,300 img/s, with similar Fashion-MNIST accuracy; stride-1 convolutions each followed by
    2×2 max-pooling were about half as fast again, at the same parameter count. Works for any image size ≥ 8.

    Shapes: ``(B, in_channels, H, W)`` → ``(B, channels[-1])``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        strides = [int(s) for s in strides]
        if len(channels) != len(strides) or not channels:
            raise ConfigError(
                f"small_cnn needs as many strides as channels, got channels={channels} and strides={strides}"
            )
        layers: list[nn.Module] = []
        prev = int(in_channels)
        for c, s in zip(channels, strides):
            layers += _conv_bn_relu(prev, c, s)
            prev = c
        self.features = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self._prepare(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3×3 conv–BN with an identity or 1×1 conv–BN shortcut.

    Shapes: ``(B, in_planes, H, W)`` → ``(B, planes, ⌈H/stride⌉, ⌈W/stride⌉)``.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


STEMS: tuple[str, ...] = ("cifar", "cifar_pad2", "imagenet")
"""The ResNet stems (see the module docstring)."""


class CifarResNet18(_ConvBackbone):
    """ResNet-18 (He et al. 2016, "Deep Residual Learning for Image Recognition") with a CIFAR or an ImageNet stem.

    Default (``stem="cifar"``): the variant used by SupCon/Co2L (``resnet_big.py``) and Mammoth — 3×3 stride-1 stem
    conv–BN–ReLU, no max-pool. ``stem="cifar_pad2"``: the same conv with padding 2 (solo-learn, CaSSLe, PNR).
    ``stem="imagenet"``: torchvision's stem, 7×7 stride-2 conv (padding 3, no bias)–BN–ReLU, then 3×3 stride-2
    max-pool (padding 1). Then four stages of two :class:`BasicBlock` with widths ``nf, 2nf, 4nf, 8nf`` and strides 1,
    2, 2, 2, global average pool. ``nf = 64`` gives the full network (out_dim 512; 11.17 M parameters at 3 input
    channels with the CIFAR stem, 11.18 M with the ImageNet stem); ``nf = 20`` gives Mammoth's reduced ResNet-18 from
    GEM (Lopez-Paz & Ranzato 2017; out_dim 160, 1.09 M parameters).

    ``stem_stride`` (CIFAR stems only) sets the stride of the 3×3 stem conv; 1 keeps the papers' setting.

    Shapes: ``(B, in_channels, H, W)`` → ``(B, 8·nf)``; with the ImageNet stem the first stage sees
    ``(B, nf, ⌈H/4⌉, ⌈W/4⌉)`` (56×56 at H = W = 224).
    """

    def __init__(self, in_channels: int = 3, nf: int = 64, stem_stride: int = 1, stem: str = "cifar") -> None:
        super().__init__()
        if stem not in STEMS:
            close = difflib.get_close_matches(str(stem), STEMS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(STEMS)}."
            raise ConfigError(f"Unknown ResNet stem '{stem}'; {hint}")
        if stem == "imagenet" and int(stem_stride) != 1:
            raise ConfigError(
                f"stem_stride={stem_stride} applies to the 3×3 CIFAR stems; the ImageNet stem is always a 7×7 "
                "stride-2 conv and a stride-2 max-pool, so leave stem_stride at 1."
            )
        self.stem = stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, nf, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, nf, 3, int(stem_stride), 2 if stem == "cifar_pad2" else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        # no parameters, so state_dict keys are those of the CIFAR network with either stem
        self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        in_planes = nf
        stages = []
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = nf * 2**i
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(self._prepare(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def extra_repr(self) -> str:
        return f"stem={self.stem!r}"


def _checked(name: str, allowed: set[str], min_size: int, make):
    """The factory of built-in backbone ``name``: ``make(in_channels, image_size, **options)`` after checking sizes
    and options."""

    def factory(in_channels: int, image_size: int, **kwargs) -> nn.Module:
        in_channels, image_size = int(in_channels), int(image_size)
        if in_channels < 1:
            raise ConfigError(f"Backbone '{name}' needs in_channels ≥ 1, got {in_channels}")
        if image_size < min_size:
            raise ConfigError(f"Backbone '{name}' needs image_size ≥ {min_size}, got {image_size}")
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ConfigError(
                f"Backbone '{name}' got unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
        return make(in_channels, image_size, **kwargs)

    return factory


_BUILT_IN = {  # name: (options, smallest image side, constructor)
    "mlp": ({"hidden"}, 1, lambda c, size, **kw: MLP(c * size * size, **kw)),
    "small_cnn": ({"channels", "strides"}, 8, lambda c, size, **kw: SmallCNN(c, **kw)),
    "resnet18": ({"nf", "stem_stride", "stem"}, 8, lambda c, size, nf=64, **kw: CifarResNet18(c, nf=int(nf), **kw)),
    "resnet18_reduced": (
        {"nf", "stem_stride", "stem"},
        8,
        lambda c, size, nf=20, **kw: CifarResNet18(c, nf=int(nf), **kw),
    ),
}
for _name, (_allowed, _min_size, _make) in _BUILT_IN.items():
    REGISTRY.register(_name, _checked(_name, _allowed, _min_size, _make))

BACKBONES: tuple[str, ...] = tuple(_BUILT_IN)
"""The built-in backbones (``protosphere.registry.BACKBONES`` holds these and any registered by user code)."""


INIT_SCHEMES = ("default", "xavier")


def init_weights(module: nn.Module, scheme: str = "default") -> nn.Module:
    """Re-initialise ``module``'s layers in place by ``scheme`` and return it.

    - ``"default"``: leave torch's own initialisation (nothing is changed).
    - ``"xavier"``: Mammoth's ``backbone.xavier`` (applied by ``MNISTMLP.reset_parameters`` to the whole network,
      classifier included): every ``nn.Linear`` weight ~ U(−a, a) with a = √3·√(2 / (fan_in + fan_out)) (Xavier/Glorot
      uniform, gain 1), biases zero. Other layers (convolutions, BatchNorm) keep their initialisation, as in Mammoth.

    Draws from the global torch RNG, so a seeded run gives the same weights every time.
    """
    if scheme not in INIT_SCHEMES:
        close = difflib.get_close_matches(str(scheme), INIT_SCHEMES, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(INIT_SCHEMES)}."
        raise ConfigError(f"Unknown weight initialisation '{scheme}'; {hint}")
    if scheme == "xavier":
        with torch.no_grad():
            for m in module.modules():
                if type(m) is nn.Linear:
                    fan_out, fan_in = m.weight.shape
                    bound = 3.0**0.5 * (2.0 / (fan_in + fan_out)) ** 0.5
                    m.weight.uniform_(-bound, bound)
                    if m.bias is not None:
                        m.bias.zero_()
    return module


def build_backbone(name: str, in_channels: int, image_size: int, **kwargs) -> nn.Module:
    """Build a backbone by name; the result has ``out_dim`` and maps ``(B, in_channels, image_size, image_size)`` to
    ``(B, out_dim)``.

    Args:
        name: one of ``"mlp"``, ``"small_cnn"``, ``"resnet18"``, ``"resnet18_reduced"``, or a name registered in
            ``protosphere.registry.BACKBONES`` (whose factory gets ``in_channels``, ``image_size`` and ``**kwargs``).
        in_channels: image channels (1 for (F)MNIST, 3 for colour).
        image_size: height = width of the input (≥ 8 for conv backbones); fixes the MLP's input size.
        **kwargs: ``mlp``: ``hidden`` (sequence of ints, default ``(100, 100)``); ``small_cnn``: ``channels``,
            ``strides``; ``resnet18`` / ``resnet18_reduced``: ``nf`` (width, default 64 / 20), ``stem``
            (``"cifar"`` (default), ``"cifar_pad2"`` or ``"imagenet"``, see the module docstring), ``stem_stride``
            (default 1; CIFAR stems only).

    Raises:
        ConfigError: unknown name (the closest known name is suggested), bad sizes or unknown keyword arguments.
    """
    try:
        factory = REGISTRY.get(str(name).lower())
    except UnknownNameError as exc:
        raise ConfigError(f"Unknown backbone '{name}': {exc}") from None
    return factory(in_channels, image_size, **kwargs)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements in ``module`` (buffers excluded); only those with ``requires_grad`` if
    ``trainable_only``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def to_channels_last(module: nn.Module) -> nn.Module:
    """Put a conv network in ``channels_last`` memory format (faster convolutions on CPU with oneDNN, and on GPU tensor
    cores); modules without ``Conv2d`` (the MLP, heads) are returned unchanged.

    Conv backbones of this module also convert their input to ``channels_last`` from then on. Returns ``module``
    (converted in place).
    """
    if not any(isinstance(m, nn.Conv2d) for m in module.modules()):
        return module
    module.to(memory_format=torch.channels_last)
    for m in module.modules():
        if isinstance(m, _ConvBackbone):
            m.channels_last = True
    return module
