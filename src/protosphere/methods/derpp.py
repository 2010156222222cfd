"""DER++ (Buzzega et al., NeurIPS 2020): replay with logit matching.

loss = CE(stream) + α · MSE(f(x'), z') + β · CE(f(x''), y''), with (x', z') and (x'', y'') two independent draws from
a reservoir buffer that stores un-augmented inputs (as uint8, :class:`~protosphere.methods.parts.Replay`), labels and
the logits the model gave their augmented view.
"""

import torch.nn.functional as F
from pydantic import Field

from ..config import MethodConfig
from ..registry import METHODS
from .base import StepOutput, SupervisedMethod
from .parts import Replay


class DERppConfig(MethodConfig):
    name: str = "der++"
    buffer_size: int = Field(200, ge=1)
    alpha: float = Field(0.1, ge=0)
    beta: float = Field(0.5, ge=0)
    replay_batch_size: int | None = Field(None, ge=1, description="default: the training batch size")


@METHODS.register("der++")
class DERpp(SupervisedMethod):
    config_class = DERppConfig
    recipe = "seq-fmnist/derpp-200"

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.buffer = Replay(config.buffer_size, "reservoir")
        self.track_state("buffer", self.buffer)

    def training_step(self, images, labels, step):
        ce, logits = self.cross_entropy(images, labels)
        loss, terms = ce, {"ce": ce.detach()}
        if not self.buffer.is_empty():
            size = self.config.replay_batch_size or len(images)
            first = self.buffer.draw(size, images.dtype)
            matching = F.mse_loss(self(self.transforms.train(first["examples"])), first["logits"])
            second = self.buffer.draw(size, images.dtype)
            replay_ce = F.cross_entropy(self(self.transforms.train(second["examples"])), second["labels"])
            loss = loss + self.config.alpha * matching + self.config.beta * replay_ce
            terms.update(logit_mse=matching.detach(), replay_ce=replay_ce.detach())
        self.buffer.store(images, labels, logits=logits.detach())
        return StepOutput(loss, terms)
