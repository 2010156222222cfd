"""Register your own backbone and train a shipped method on it.

A backbone is a factory ``(in_channels, image_size, **options) -> nn.Module`` registered by name in
``protosphere.registry.BACKBONES``; the module maps float images (B, C, H, W) to features (B, out_dim) and has an
``out_dim`` attribute, which the method's heads (classifier, projector) are built from. After registration
``model.backbone: <name>`` works in every config, with every method.

Run it (about 10 s on one CPU core: experience replay, the shipped ``seq-fmnist/er-200``, on scikit-learn's
bundled 8×8 digits)::

    python my_backbone.py [OUTPUT_DIR]

or from the command line, importing this file first (by module name from its folder, or by path)::

    protosphere --import my_backbone run seq-fmnist/er-200 model.backbone=tiny_convnet data.dataset=digits
    protosphere --import ./my_backbone.py run seq-fmnist/fnc2 model.backbone=tiny_convnet   # any method

Scale it up: drop ``data.dataset=digits`` (the config's Seq-FashionMNIST), or take a paper config
(``protosphere configs`` lists them) with ``model.backbone=tiny_convnet``. Options of the factory (``width`` here) are
given in Python: ``protosphere.models.build_backbone("tiny_convnet", 3, 32, width=64)``.
"""

import sys
import tempfile

from torch import nn

import protosphere
from protosphere.models import build_backbone, count_parameters
from protosphere.registry import BACKBONES


class TinyConvNet(nn.Module):
    """Two 3×3 conv–BN–ReLU stages (the second of stride 2), global average pooling: (B, C, H, W) → (B, 2·width)."""

    def __init__(self, in_channels: int, width: int = 32):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_dim = 2 * width

    def forward(self, x):
        return self.layers(x)


@BACKBONES.register("tiny_convnet")
def tiny_convnet(in_channels: int, image_size: int, width: int = 32) -> nn.Module:
    return TinyConvNet(in_channels, width)  # global pooling: any image size works


if __name__ == "__main__":
    backbone = build_backbone("tiny_convnet", in_channels=1, image_size=8)
    print(f"tiny_convnet: out_dim {backbone.out_dim}, {count_parameters(backbone):,} parameters")
    run = protosphere.run(
        "seq-fmnist/er-200",  # experience replay with a 200-image buffer, as shipped
        model={"backbone": "tiny_convnet"},
        data={"dataset": "digits"},
        # digits: ~290 training images a task, 5 steps an epoch; a flipped digit is another digit
        train={"epochs": 20, "flip": False},
        output_dir=sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="protosphere-"),
        overwrite=True,
    )
    print(f"run folder: {run.run_dir}")
    print(
        f"trained backbone: {type(run.model.backbone).__name__} ({count_parameters(run.model.backbone):,} parameters)"
    )
    for name in run.classifiers:
        accuracy = run.results["metrics"][name]["class_il"]["final_average_accuracy"]
        print(f"final average class-IL accuracy, {name}: {accuracy:.2f} %")
