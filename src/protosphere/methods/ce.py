"""Cross-entropy baseline of the neural-collapse experiments: backbone + linear classifier trained with CE.

The reference point of "Neural Collapse by Design": CE leaves the feature norms free and is the geometry
NTCE, NONL and SupCon are compared with. The classifier weights W (K, d) are reported as the NC3/NC4 classifier
(``classifier_weights``); ``bias: false`` gives the bias-free classifier those metrics assume. Non-continual with
``scenario.num_tasks: 1``; with more tasks it is plain fine-tuning under another name.
"""

from pydantic import Field
from torch import nn

from ..config import MethodConfig
from ..registry import METHODS
from .base import StepOutput, SupervisedMethod


class CEConfig(MethodConfig):
    name: str = "ce"
    bias: bool = Field(True, description="give the linear classifier a bias (false: the bias-free classifier of NC)")


@METHODS.register("ce")
class CE(SupervisedMethod):
    config_class = CEConfig
    recipe = "nc/ce"

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        if not config.bias:
            self.classifier = nn.Linear(backbone.out_dim, num_classes, bias=False)

    def training_step(self, images, labels, step):
        loss, _ = self.cross_entropy(images, labels)
        return StepOutput(loss, {"ce": loss.detach()})
