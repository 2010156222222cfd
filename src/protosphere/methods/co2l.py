"""Co2L — Contrastive Continual Learning (Cha, Lee & Shin, ICCV 2021), and the replay/past-model base it shares with
``fnc2`` and ``nct``.

A batch is two augmented views of B images stacked ``cat(view1, view2)`` (2B rows, plus replayed rows)::

    loss = asymmetric_supcon(z, y, current_classes, τ, τ_base) + λ · ird(z, z_past, κ_cur, κ_past)  (IRD: task ≥ 1)

z_past comes from a frozen copy of encoder + projector taken at the start of every task ≥ 1 (eval-mode BatchNorm;
``past_model_bn: train`` keeps Co2L's train-mode copy), run without gradient on the same augmented rows. Buffer rows
(old classes) are never anchors, only negatives. Memory (``buffer_size``, 0 = memory-free), ``buffer_sampling``:

* ``co2l`` (Co2L's own): at the start of task t the memory shrinks evenly per class to ``capacity // #classes of tasks
  < t`` rows and is refilled to capacity, class-balanced, with task t−1's training samples; its rows are mixed into
  the task's shuffled data (:meth:`training_data`), no separate replay batch. Meant for class-IL (disjoint classes).
* ``reservoir`` / ``class_balanced``: a replay batch drawn from the buffer joins every stream batch (ER style).

Classifiers are fitted after each task on the current task + buffer (the Co2L linear-probe protocol).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..buffer import ReplayBuffer
from ..losses import asymmetric_supcon, ird
from ..metrics import mean_drift, prototype_alignment
from ..registry import METHODS
from .base import StepOutput
from .representation import Classifier, RepresentationConfig, RepresentationMethod

DEFAULT_PROBE_BUFFER = 200  # Co2L §5.3 / the FNC2 authors: the classifier of a memory-free run sees 200 stored samples


class ReplayContrastConfig(RepresentationConfig):
    buffer_size: int = Field(0, ge=0, description="0 = memory-free")
    buffer_sampling: Literal["co2l", "reservoir", "class_balanced"] = "co2l"
    replay_batch_size: int | None = Field(None, ge=1, description="reservoir/class_balanced; default: batch size")
    past_model_bn: Literal["eval", "train"] = "eval"


class ReplayContrastMethod(RepresentationMethod):
    """Buffer, past-model snapshot and diagnostics shared by ``co2l``, ``fnc2`` and ``nct``."""

    config_class = ReplayContrastConfig
    uses_past_model = True  # take a frozen copy of encoder + projector at the start of every task >= 1

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.buffer = self._new_buffer(config.buffer_size, "buffer")
        # memory-free runs: a classifier-only buffer for the linear probe (DESIGN "Two-stage evaluation")
        self.probe_buffer = self._new_buffer(DEFAULT_PROBE_BUFFER if self.buffer is None else 0, "probe_buffer")
        self.register_snapshot("past", lambda: nn.Sequential(self.backbone, self.projector),
                               train_mode_bn=config.past_model_bn == "train")
        self.register_buffer("learned_means", torch.zeros(num_classes, config.projection_dim))

    def _new_buffer(self, size: int, name: str) -> ReplayBuffer | None:
        self._tracked.pop(name, None)
        if size == 0:
            return None
        policy = "class_balanced" if self.config.buffer_sampling == "class_balanced" else "reservoir"
        buffer = ReplayBuffer(size, policy)
        self.track_state(name, buffer)
        return buffer

    def configure_evaluation(self, evaluation) -> None:
        if evaluation.probe_buffer_size is not None and self.buffer is None:  # with a training buffer, the probe's
            self.probe_buffer = self._new_buffer(evaluation.probe_buffer_size, "probe_buffer")  # data is that buffer

    def begin_task(self, task):
        super().begin_task(task)
        if task.index > 0 and self.config.buffer_sampling == "co2l":
            for buffer in (self.buffer, self.probe_buffer):
                if buffer is not None:
                    self._co2l_memory(task, buffer)
        if task.index > 0 and self.uses_past_model:
            self.take_snapshot("past")

    @staticmethod
    def _co2l_memory(task, buffer):
        images, labels = task.previous[-1]
        if not buffer.is_empty():
            buffer.shrink_per_class(buffer.capacity // len(task.previous_classes))
        new, free = labels.unique().tolist(), buffer.capacity - len(buffer)
        chosen = []
        for i, c in enumerate(new):  # class-balanced refill; the remainder goes to the first classes
            rows = (labels == c).nonzero().flatten()
            quota = free // len(new) + (i < free % len(new))
            chosen.append(rows[torch.randperm(len(rows), generator=buffer.generator)[:quota]])
        chosen, device = torch.cat(chosen), task.train_images.device
        buffer.add(labels[chosen].to(device), examples=images[chosen].to(device))

    def training_data(self, task):
        if self.buffer is None or self.config.buffer_sampling != "co2l" or self.buffer.is_empty():
            return task.train_images, task.train_labels
        return self.evaluation_data(task)

    def evaluation_data(self, task):
        return self._with_rows(task, self.buffer)

    def classifier_only_rows(self, task):
        if self.probe_buffer is None or self.probe_buffer.is_empty():
            return None
        stored = self.probe_buffer.all()
        return stored["examples"], stored["labels"]

    @staticmethod
    def _with_rows(task, buffer):
        """The task's training data followed by a buffer's rows (uint8 in every sampling mode)."""
        if buffer is None or buffer.is_empty():
            return task.train_images, task.train_labels
        stored, device = buffer.all(), task.train_images.device
        return (torch.cat([task.train_images, stored["examples"].to(device)]),
                torch.cat([task.train_labels, stored["labels"].to(device)]))

    def classifier_data(self):
        data = super().classifier_data()
        if self.buffer is not None:
            stored = f"the current task + the training buffer ({self.buffer.capacity} samples)"
            data.update(ncm=stored + "; earlier means kept for classes not in it", linear_probe=stored, knn=stored)
        elif self.probe_buffer is not None:
            data["linear_probe"] = (f"the current task + up to {self.probe_buffer.capacity} classifier-only samples "
                                    f"of earlier tasks (eval.probe_buffer_size; never used in representation "
                                    f"training)")
        return data

    def replay(self, images, labels):
        """ER-style modes: append a replay batch, then offer the stream batch to the buffer (identity otherwise).
        A classifier-only buffer is offered the stream the same way and never joins the batch."""
        if self.config.buffer_sampling == "co2l":
            return images, labels
        x, y, size = images, labels, self.config.replay_batch_size or len(images)
        if self.buffer is not None and not self.buffer.is_empty():
            drawn = self.buffer.sample(size)
            x = torch.cat([images, drawn["examples"].to(images.dtype).div(255)])
            y = torch.cat([labels, drawn["labels"]])
        if self.probe_buffer is not None and not self.probe_buffer.is_empty():
            self.probe_buffer.sample(size)  # drawn and dropped: its generator then stores what a training buffer would
        for buffer in (self.buffer, self.probe_buffer):
            if buffer is not None:
                buffer.add(labels, examples=images.mul(255).round().to(torch.uint8))
        return x, y

    @torch.no_grad()
    def past_embed(self, views):
        return F.normalize(self.snapshot("past")(views), dim=1)

    @torch.no_grad()
    def diagnostics(self, task, per_class: int = 256) -> dict:
        """Projection-space class means of the seen classes (≤ ``per_class`` training rows each, un-augmented):
        cosine to their prototype (methods with prototypes) and drift ``1 − cos`` of old-class means since the end
        of the task that introduced them. Records the current task's means for later drift."""
        was_training = self.training
        self.eval()
        pairs = [*task.previous, (task.train_images, task.train_labels)]
        images, labels = torch.cat([p[0].cpu() for p in pairs]), torch.cat([p[1].cpu() for p in pairs])
        classes, device = list(task.seen_classes), self.learned_means.device
        means = []
        for c in classes:
            x = images[labels == c][:per_class].to(device).float().div(255)
            means.append(F.normalize(self(self.transforms.eval(x)).mean(0), dim=0))
        means, index = torch.stack(means), {c: i for i, c in enumerate(classes)}
        out = {"classes": classes}
        if self.prototypes is not None:
            align = prototype_alignment(means, self.prototypes[classes])
            out.update(prototype_alignment=float(align.mean()), prototype_alignment_per_class=align.tolist())
        old = list(task.previous_classes)
        if old:
            drift = mean_drift(self.learned_means[old], means[[index[c] for c in old]])
            out.update(old_mean_drift=float(drift.mean()), old_classes=old, old_mean_drift_per_class=drift.tolist())
        current = [c for c in task.classes if c not in old]
        self.learned_means[current] = means[[index[c] for c in current]].to(self.learned_means.dtype)
        self.train(was_training)
        return out


class Co2LConfig(ReplayContrastConfig):
    name: str = "co2l"
    temperature: float = Field(0.5, gt=0)
    base_temperature: float = Field(0.07, gt=0)
    distill_weight: float = Field(1.0, ge=0, description="λ of IRD")
    ird_current_temperature: float = Field(0.2, gt=0)
    ird_past_temperature: float = Field(0.01, gt=0)
    classifiers: list[Classifier] = Field(default_factory=lambda: ["linear_probe", "ncm", "linear_probe_seen"])


@METHODS.register("co2l")
class Co2L(ReplayContrastMethod):
    config_class = Co2LConfig

    @property
    def uses_past_model(self):
        return self.config.distill_weight > 0

    def training_step(self, images, labels, step):
        cfg = self.config
        x, y = self.replay(images, labels)
        views = self.two_views(x)
        z, y2 = self.gather(self.embed(views)), self.gather(y.repeat(2))
        loss = asym = asymmetric_supcon(z, y2, self.task.classes, cfg.temperature, cfg.base_temperature)
        terms = {"asym_supcon": asym.detach()}
        if self.snapshot("past") is not None:
            z_past = self.gather(self.past_embed(views))
            distill = ird(z, z_past, cfg.ird_current_temperature, cfg.ird_past_temperature)
            loss = loss + cfg.distill_weight * distill
            terms["ird"] = distill.detach()
        return StepOutput(loss, terms)
