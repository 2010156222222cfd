"""Fine-tuning: plain cross-entropy on each task in turn — the lower bound every continual method must beat."""

from ..config import MethodConfig
from ..registry import METHODS
from .base import StepOutput, SupervisedMethod


class FinetuneConfig(MethodConfig):
    name: str = "finetune"


@METHODS.register("finetune")
class Finetune(SupervisedMethod):
    config_class = FinetuneConfig
    recipe = "seq-fmnist/finetune"

    def training_step(self, images, labels, step):
        loss, _ = self.cross_entropy(images, labels)
        return StepOutput(loss, {"ce": loss.detach()})
