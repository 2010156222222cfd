"""FNC2 + HSD — focal neural-collapse contrastive learning with hardness–softness distillation (Dang et al.,
"Memory-efficient Continual Learning with Neural Collapse Contrastive", WACV 2025, arXiv 2412.02865).

The paper's code is not public: this method, like :func:`protosphere.losses.fnc2`, is **protosphere's
reconstruction** from the paper's description. One simplex ETF for the whole label space is fixed in projection space
(a buffer, never trained); a batch is two augmented views ``cat(view1, view2)`` (plus replayed rows)::

    loss = fnc2(z, y, ETF, seen_classes, τ, γ, prototype_weight, anchor_mask)
           + λ_hsd · hsd(z, z_past, ETF[previous classes], α)                       (from task 1 on)
    α = hsd_alpha(step, steps_in_task, schedule)  — 1 → 0 over each task by default (IRD first, then S-PRD)

``seen_classes`` = previous + current classes (old prototypes act as negatives: pseudo-replay without memory);
``anchor_mask`` = current-task rows when a buffer exists, all rows memory-free. Ablations: ``distillation: ird``
(Co2L's IRD alone), ``prd`` (S-PRD alone, CCLIS — Kim et al., AAAI 2024), ``none``; ``old_prototypes_as_negatives:
false`` contrasts against the current classes' prototypes only (plus, with a buffer, those of the classes present in
the batch, which the prototype term needs). Memory-free by default (``buffer_size: 0``); buffer handling, past model
and two-stage evaluation as in :mod:`~protosphere.methods.co2l`. Headline classifier: nearest ETF prototype.
"""

from typing import Literal

import torch
from pydantic import Field

from ..geometry import simplex_etf
from ..losses import fnc2, hsd, hsd_alpha, ird, prd
from . import register
from .base import StepOutput
from .co2l import ReplayContrastConfig, ReplayContrastMethod
from .representation import Classifier


class FNC2Config(ReplayContrastConfig):
    name: str = "fnc2"
    temperature: float = Field(0.5, gt=0)
    gamma: float = Field(2.0, ge=0, description="focal focusing parameter γ")
    prototype_weight: float = Field(1.0, ge=0)
    old_prototypes_as_negatives: bool = True
    distillation: Literal["hsd", "ird", "prd", "none"] = "hsd"
    hsd_weight: float = Field(1.0, ge=0, description="λ_hsd, the weight of the distillation term")
    hsd_schedule: Literal["linear", "cosine", "constant"] = "linear"
    hsd_alpha0: float = Field(1.0, ge=0, le=1, description="α of the constant schedule")
    ird_current_temperature: float = Field(0.2, gt=0)
    ird_past_temperature: float = Field(0.01, gt=0)
    prd_current_temperature: float = Field(0.2, gt=0)
    prd_past_temperature: float = Field(0.1, gt=0)
    etf_seed: int = 0
    classifiers: list[Classifier] = Field(default_factory=lambda: ["nearest_prototype", "ncm", "linear_probe", "linear_probe_seen"])


@register("fnc2")
class FNC2(ReplayContrastMethod):
    config_class = FNC2Config

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        del self.prototypes  # the base's plain attribute becomes a fixed buffer (saved, moved, never trained)
        self.register_buffer("prototypes", simplex_etf(num_classes, config.projection_dim, config.etf_seed))

    @property
    def uses_past_model(self):
        return self.config.distillation != "none" and self.config.hsd_weight > 0

    def training_step(self, images, labels, step):
        cfg, task = self.config, self.task
        x, y = self.replay(images, labels)
        views = self.two_views(x)
        z, y2 = self.gather(self.embed(views)), self.gather(y.repeat(2))
        current = torch.tensor(task.classes, device=y2.device)
        anchors = torch.isin(y2, current) if self.buffer is not None else None
        if cfg.old_prototypes_as_negatives:
            seen = task.seen_classes
        else:
            seen = current if self.buffer is None else torch.cat([current, y2]).unique()
        loss = main = fnc2(z, y2, self.prototypes, seen, cfg.temperature, cfg.gamma, cfg.prototype_weight, anchors)
        terms = {"fnc2": main.detach()}
        if self.snapshot("past") is not None and self.uses_past_model:
            z_past, old = self.gather(self.past_embed(views)), self.prototypes[task.previous_classes]
            ird_t = (cfg.ird_current_temperature, cfg.ird_past_temperature)
            prd_t = (cfg.prd_current_temperature, cfg.prd_past_temperature)
            if cfg.distillation == "hsd":
                alpha = hsd_alpha(step.step, step.steps_in_task, cfg.hsd_schedule, cfg.hsd_alpha0)
                distill = hsd(z, z_past, old, alpha, ird_t, prd_t)
                terms["hsd_alpha"] = torch.tensor(alpha)
            elif cfg.distillation == "ird":
                distill = ird(z, z_past, *ird_t)
            else:
                distill = prd(z, z_past, old, *prd_t)
            loss = loss + cfg.hsd_weight * distill
            terms[cfg.distillation] = distill.detach()
        return StepOutput(loss, terms)
