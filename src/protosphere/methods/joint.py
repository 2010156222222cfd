"""Joint training: at task t, train on the union of tasks 0..t — the upper bound (non-continual) of a scenario."""

import torch

from ..config import MethodConfig
from . import register
from .base import StepOutput, SupervisedMethod


class JointConfig(MethodConfig):
    name: str = "joint"


@register("joint")
class Joint(SupervisedMethod):
    config_class = JointConfig

    def training_data(self, task):
        images = torch.cat([x.to(task.train_images.device) for x, _ in task.previous] + [task.train_images])
        labels = torch.cat([y.to(task.train_labels.device) for _, y in task.previous] + [task.train_labels])
        return images, labels

    def training_step(self, images, labels, step):
        loss, _ = self.cross_entropy(images, labels)
        return StepOutput(loss, {"ce": loss.detach()})
