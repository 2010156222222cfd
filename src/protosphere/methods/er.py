"""Experience Replay (Chaudhry et al. 2019; Mammoth's `er`): each stream batch is joined by a batch drawn from a
reservoir buffer of past (un-augmented) inputs, stored as uint8 (:class:`~protosphere.methods.parts.Replay`); both
are augmented and trained with one cross-entropy."""

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import MethodConfig
from ..registry import METHODS
from .base import StepOutput, SupervisedMethod
from .parts import Replay


class ERConfig(MethodConfig):
    name: str = "er"
    buffer_size: int = Field(200, ge=1)
    replay_batch_size: int | None = Field(None, ge=1, description="default: the training batch size")
    buffer_policy: str = Field("reservoir", pattern="^(reservoir|class_balanced)$")


@METHODS.register("er")
class ER(SupervisedMethod):
    config_class = ERConfig
    recipe = "seq-fmnist/er-200"

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.buffer = Replay(config.buffer_size, config.buffer_policy)
        self.track_state("buffer", self.buffer)

    def training_step(self, images, labels, step):
        inputs, targets = images, labels
        if not self.buffer.is_empty():
            replay = self.buffer.draw(self.config.replay_batch_size or len(images), images.dtype)
            inputs = torch.cat([images, replay["examples"]])
            targets = torch.cat([labels, replay["labels"]])
        loss = F.cross_entropy(self(self.transforms.train(inputs)), targets)
        self.buffer.store(images, labels)
        return StepOutput(loss, {"ce": loss.detach()})
