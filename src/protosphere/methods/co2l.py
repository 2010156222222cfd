"""Co2L — Contrastive Continual Learning (Cha, Lee & Shin, ICCV 2021).

A batch is two augmented views of B images stacked ``cat(view1, view2)`` (2B rows, plus replayed rows)::

    loss = asymmetric_supcon(z, y, current_classes, τ, τ_base) + λ · ird(z, z_past, κ_cur, κ_past)  (IRD: task ≥ 1)

z_past comes from a frozen copy of encoder + projector taken at the start of every task ≥ 1 (eval-mode BatchNorm;
``past_model_bn: train`` keeps Co2L's train-mode copy), run without gradient on the same augmented rows. Buffer rows
(old classes) are never anchors, only negatives. Memory (``buffer_size``, 0 = memory-free), ``buffer_sampling``
(:class:`~protosphere.methods.parts.RepresentationMemory`, shared with ``fnc2`` and ``nct``):

* ``co2l`` (Co2L's own): at the start of task t the memory shrinks evenly per class to ``capacity // #classes of tasks
  < t`` rows and is refilled to capacity, class-balanced, with task t−1's training samples; its rows are mixed into
  the task's shuffled data, no separate replay batch. Meant for class-IL (disjoint classes).
* ``reservoir`` / ``class_balanced``: a replay batch drawn from the buffer joins every stream batch (ER style).

Classifiers are fitted after each task on the current task + buffer (the Co2L linear-probe protocol).
"""

from pydantic import Field

from ..losses import asymmetric_supcon, ird
from ..registry import METHODS
from .base import StepOutput
from .parts import ClassMeanDrift, PastModel, RepresentationMemory
from .representation import Classifier, ReplayContrastConfig, RepresentationMethod


class Co2LConfig(ReplayContrastConfig):
    name: str = "co2l"
    temperature: float = Field(0.5, gt=0)
    base_temperature: float = Field(0.07, gt=0)
    distill_weight: float = Field(1.0, ge=0, description="λ of IRD")
    ird_current_temperature: float = Field(0.2, gt=0)
    ird_past_temperature: float = Field(0.01, gt=0)
    classifiers: list[Classifier] = Field(
        default_factory=lambda: ["linear_probe", "ncm", "linear_probe_seen", "linear_probe_unaugmented"]
    )


@METHODS.register("co2l")
class Co2L(RepresentationMethod):
    config_class = Co2LConfig
    views_per_image = 2
    recipe = "seq-fmnist/co2l"
    probe_augment_default = True  # main_linear_buffer.py loads with main_ce_buffer.set_loader: crops, flips, jitter

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.memory = RepresentationMemory.from_config(self.track_state, config)
        self.past = PastModel(self, train_mode_bn=config.past_model_bn == "train")
        self.drift = ClassMeanDrift(self, num_classes, config.projection_dim)

    def begin_task(self, task):
        super().begin_task(task)
        self.past.begin_task(task, needed=self.config.distill_weight > 0)

    def training_step(self, images, labels, step):
        cfg = self.config
        x, y = self.memory.join(images, labels)
        views = self.two_views(x)
        z, y2 = self.gather(self.embed(views)), self.gather(y.repeat(2))
        loss = asym = asymmetric_supcon(z, y2, self.task.classes, cfg.temperature, cfg.base_temperature)
        terms = {"asym_supcon": asym.detach()}
        if self.past.model is not None:
            z_past = self.gather(self.past.embed(views))
            distill = ird(z, z_past, cfg.ird_current_temperature, cfg.ird_past_temperature)
            loss = loss + cfg.distill_weight * distill
            terms["ird"] = distill.detach()
        return StepOutput(loss, terms)

    def diagnostics(self, task):
        return self.drift(task)
