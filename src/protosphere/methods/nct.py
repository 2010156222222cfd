"""NCT — Neural Collapse Terminus (Yang et al., "Neural Collapse Terminus: A Unified Solution for Class Incremental
Learning and Its Variants"; its fixed-ETF alignment comes from NC-FSCIL, Yang et al., ICLR 2023).

One simplex ETF for all K classes of the scenario is fixed from the start in projection space (the "terminus":
later classes already own their prototype). With z the L2-normalised projection of the augmented batch (one view per
sample unless ``views: 2``)::

    loss = head_weight · head(z)                           head = dr_loss(z, y, ETF, c) or CE(z·ETFᵀ/τ, y)
         + distill_weight · ½ mean_i (z_i·z_past_i − 1)²   from task 1 on: the DR loss with the t−1 model's
                                                            normalised output as target (old-class rows when a
                                                            buffer exists, all rows otherwise)

defaults head_weight 10, distill_weight 50 (NC-FSCIL / NCT). ``class_balanced``: c_k = 1/N_k over the (gathered)
batch (:func:`~protosphere.losses.inverse_frequency_weights`). ``mixture_of_experts``: the projector is a
:class:`~protosphere.models.heads.MixtureOfExperts` with one expert per task and a learned gate; besides the mixed
output, each row's own-task expert is aligned to its prototype (``+ head_weight · expert_weight · dr_loss``).
Buffer, past model and evaluation as in :mod:`~protosphere.methods.co2l` (memory-free by default).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..geometry import simplex_etf
from ..losses import dr_loss, inverse_frequency_weights
from ..models.heads import MixtureOfExperts
from . import register
from .base import StepOutput
from .co2l import ReplayContrastConfig, ReplayContrastMethod
from .representation import Classifier


class NCTConfig(ReplayContrastConfig):
    name: str = "nct"
    head_loss: Literal["dr", "ce"] = "dr"
    head_weight: float = Field(10.0, ge=0)
    ce_temperature: float = Field(0.1, gt=0, description="τ of the CE on ETF logits")
    distill_weight: float = Field(50.0, ge=0)
    class_balanced: bool = False
    mixture_of_experts: bool = False
    expert_weight: float = Field(1.0, ge=0)
    views: int = Field(1, ge=1, le=2)
    etf_seed: int = 0
    classifiers: list[Classifier] = Field(default_factory=lambda: ["nearest_prototype", "ncm", "linear_probe", "linear_probe_seen"])


@register("nct")
class NCT(ReplayContrastMethod):
    config_class = NCTConfig

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        del self.prototypes
        self.register_buffer("prototypes", simplex_etf(num_classes, config.projection_dim, config.etf_seed))
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))
        if config.mixture_of_experts:
            self.projector = MixtureOfExperts(backbone.out_dim, config.projection_dim, 1,
                                              config.projection_hidden or backbone.out_dim)

    @property
    def uses_past_model(self):
        return self.config.distill_weight > 0

    def begin_task(self, task):
        self.class_task[list(task.classes)] = task.index
        while self.config.mixture_of_experts and self.projector.num_experts < task.index + 1:
            self.projector.add_expert()  # before the snapshot, so checkpoints always match the structure
        super().begin_task(task)

    def load_state_dict(self, state_dict, *args, **kwargs):
        if self.config.mixture_of_experts:  # a checkpoint of a later task holds more experts
            experts = {k.split(".")[2] for k in state_dict if k.startswith("projector.experts.")}
            while self.projector.num_experts < len(experts):
                self.projector.add_expert()
        return super().load_state_dict(state_dict, *args, **kwargs)

    @torch.no_grad()
    def past_embed(self, views):
        if not self.config.mixture_of_experts:
            return super().past_embed(views)
        backbone, moe = self.snapshot("past")  # the t−1 model: its first t experts and gate rows
        h, n = backbone(views), self.task.index
        gate = torch.softmax(moe.gate(h)[:, :n], dim=1)
        return F.normalize(sum(gate[:, e : e + 1] * moe.experts[e](h) for e in range(n)), dim=1)

    def head(self, z, y, weights):
        if self.config.head_loss == "dr":
            return dr_loss(z, y, self.prototypes, weights)
        ce = F.cross_entropy(z @ self.prototypes.T / self.config.ce_temperature, y, reduction="none")
        a = weights[y] if weights is not None else torch.ones_like(ce)
        return (a * ce).sum() / a.sum()

    def training_step(self, images, labels, step):
        cfg = self.config
        x, y = self.replay(images, labels)
        views = self.two_views(x) if cfg.views == 2 else self.transforms.train(x)
        y = y.repeat(cfg.views)
        h = self.backbone(views)
        mixed = self.projector.forward_all(h) if cfg.mixture_of_experts else None
        z = F.normalize(mixed.output if mixed is not None else self.projector(h), dim=1)
        zg, yg = self.gather(z), self.gather(y)
        weights = inverse_frequency_weights(yg, self.num_classes) if cfg.class_balanced else None
        head = self.head(zg, yg, weights)
        loss, terms = cfg.head_weight * head, {cfg.head_loss: head.detach()}
        if mixed is not None:
            own = F.normalize(mixed.experts[torch.arange(len(y), device=y.device), self.class_task[y]], dim=1)
            expert = dr_loss(own, y, self.prototypes)
            loss = loss + cfg.head_weight * cfg.expert_weight * expert
            terms["expert_dr"] = expert.detach()
        if self.snapshot("past") is not None and self.uses_past_model:
            rows = torch.ones_like(y, dtype=z.dtype)
            if self.buffer is not None:
                rows = torch.isin(y, torch.tensor(self.task.previous_classes, device=y.device)).to(z.dtype)
            misalign = ((z * self.past_embed(views)).sum(1) - 1).square()
            distill = 0.5 * (rows * misalign).sum() / rows.sum().clamp_min(1)
            loss = loss + cfg.distill_weight * distill
            terms["distill"] = distill.detach()
        return StepOutput(loss, terms)
