"""Joint training: at task t, train on the union of tasks 0..t — the upper bound (non-continual) of a scenario."""

from ..config import MethodConfig
from ..registry import METHODS
from .base import StepOutput, SupervisedMethod


class JointConfig(MethodConfig):
    name: str = "joint"


@METHODS.register("joint")
class Joint(SupervisedMethod):
    config_class = JointConfig
    recipe = "seq-fmnist/joint"

    def training_data(self, task):
        return task.seen_data()

    def training_step(self, images, labels, step):
        loss, _ = self.cross_entropy(images, labels)
        return StepOutput(loss, {"ce": loss.detach()})
