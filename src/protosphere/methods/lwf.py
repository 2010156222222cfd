"""Learning without Forgetting (Li & Hoiem, TPAMI 2017), class-incremental form as in Mammoth.

loss = CE over the classes seen so far (others masked) + α · T² · KL(softmax(ŷ_old/T) ‖ softmax(ŷ/T)) on the previous
classes' logits,
where ŷ_old comes from a frozen copy of the model taken at the start of the task, on the same augmented batch.
"""

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import MethodConfig
from ..registry import METHODS
from .base import StepOutput, SupervisedMethod


class LwFConfig(MethodConfig):
    name: str = "lwf"
    alpha: float = Field(1.0, ge=0)
    temperature: float = Field(2.0, gt=0)


@METHODS.register("lwf")
class LwF(SupervisedMethod):
    config_class = LwFConfig
    recipe = "seq-fmnist/lwf"

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.register_snapshot("past", lambda: torch.nn.Sequential(self.backbone, self.classifier))

    def begin_task(self, task):
        super().begin_task(task)
        if task.index > 0:
            self.take_snapshot("past")

    def training_step(self, images, labels, step):
        augmented = self.transforms.train(images)
        logits = self(augmented)
        unseen = ~self.task.seen_mask(logits.shape[1], logits.device)
        ce = F.cross_entropy(logits.masked_fill(unseen, float("-inf")), labels)
        past = self.snapshot("past")
        if past is None:
            return StepOutput(ce, {"ce": ce.detach()})
        old = torch.tensor(self.task.previous_classes, device=logits.device)
        with torch.no_grad():
            target = F.softmax(past(augmented)[:, old] / self.config.temperature, dim=1)
        log_probs = F.log_softmax(logits[:, old] / self.config.temperature, dim=1)
        distill = F.kl_div(log_probs, target, reduction="batchmean") * self.config.temperature**2
        return StepOutput(ce + self.config.alpha * distill, {"ce": ce.detach(), "distill": distill.detach()})
