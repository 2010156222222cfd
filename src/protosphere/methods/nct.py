"""NCT — Neural Collapse Terminus (Yang et al., "Neural Collapse Terminus: A Unified Solution for Class Incremental
Learning and Its Variants"; its fixed-ETF alignment comes from NC-FSCIL, Yang et al., ICLR 2023).

One simplex ETF for all K classes of the scenario is fixed from the start in projection space (the "terminus":
later classes already own their prototype). With z the L2-normalised projection of the augmented batch (one view per
sample unless ``views: 2``)::

    loss = head_weight · head(z)                           head = dr_loss(z, y, ETF, c) or prototype_ce(z, y, ETF, τ, c)
         + distill_weight · dr_distill(z, z_past, m)       from task 1 on: ½ mean_i m_i (z_i·z_past_i − 1)², the DR
                                                            loss with the t−1 model's normalised output as target
                                                            (m: old-class rows when a buffer exists, all rows
                                                            otherwise)

defaults head_weight 10, distill_weight 50 (NC-FSCIL / NCT). ``classifier: learnable`` replaces the fixed ETF with
a trained cosine classifier (K × d rows from a seeded random start, renormalised in the loss; needs
``head_loss: ce``), everything else equal: the learnable-classifier baseline of NCT's claim. ``class_balanced``:
c_k = 1/N_k over the (gathered) batch (:func:`~protosphere.losses.inverse_frequency_weights`).
``mixture_of_experts``: the projector is a :class:`~protosphere.models.heads.MixtureOfExperts` with one expert per task
and a learned gate; besides the mixed output, each row's own-task expert is aligned to its prototype
(``+ head_weight · expert_weight · expert_dr_loss``). All
``num_experts`` experts (default: the scenario's number of tasks, filled in by :meth:`NCT.resolve_config`) exist from
the start and task t uses the first t+1: the gate's softmax runs over those, the later experts are neither evaluated
nor trained, and their gate rows stay at zero until their task — the same numbers as adding one expert and one zero
gate row per task, but with a parameter set fixed before ``fabric.setup_module``, so DDP synchronises every expert
(with find-unused-parameters on, as the idle experts get no gradient) and checkpoints always have one structure. The
past model's output is the t−1 model's mixture over its first t experts.
Buffer (:class:`~protosphere.methods.parts.RepresentationMemory`), past model and evaluation as in
:mod:`~protosphere.methods.co2l` (memory-free by default).
"""

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from ..errors import ConfigError
from ..losses import dr_distill, dr_loss, expert_dr_loss, inverse_frequency_weights, prototype_ce
from ..models.heads import MixtureOfExperts
from ..registry import METHODS
from .base import StepOutput
from .parts import ClassMeanDrift, FixedPrototypes, PastModel, RepresentationMemory
from .representation import Classifier, ReplayContrastConfig, RepresentationMethod


class NCTConfig(ReplayContrastConfig):
    name: str = "nct"
    head_loss: Literal["dr", "ce"] = "dr"
    classifier: Literal["etf", "learnable"] = Field(
        "etf",
        description="etf: the fixed simplex ETF (NCT); learnable: a trained cosine classifier (unit-normalised "
        "rows, random start) with the same distillation — the baseline NCT is compared against",
    )
    head_weight: float = Field(10.0, ge=0)
    ce_temperature: float = Field(0.1, gt=0, description="τ of the CE on ETF logits")
    distill_weight: float = Field(50.0, ge=0)
    class_balanced: bool = False
    mixture_of_experts: bool = False
    num_experts: int | None = Field(None, ge=1, description="experts of the mixture; None: one per task")
    expert_weight: float = Field(1.0, ge=0)
    views: int = Field(1, ge=1, le=2)
    etf_seed: int = 0
    classifiers: list[Classifier] = Field(
        default_factory=lambda: ["nearest_prototype", "ncm", "linear_probe", "linear_probe_seen"]
    )

    @model_validator(mode="after")
    def _learnable_needs_ce(self):
        if self.classifier == "learnable" and self.head_loss != "ce":
            raise ValueError(
                "method.classifier=learnable needs method.head_loss=ce: the DR loss pulls each row to a "
                "fixed target, and with learnable rows nothing keeps the classes apart; set head_loss: ce"
            )
        return self


@METHODS.register("nct")
class NCT(RepresentationMethod):
    config_class = NCTConfig
    recipe = "seq-fmnist/nct"

    @classmethod
    def training_views(cls, config) -> int:
        return config.views

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.memory = RepresentationMemory.from_config(self.track_state, config)
        self.past = PastModel(self, train_mode_bn=config.past_model_bn == "train")
        self.drift = ClassMeanDrift(self, num_classes, config.projection_dim)
        if config.classifier == "learnable":
            start = torch.randn(
                num_classes, config.projection_dim, generator=torch.Generator().manual_seed(config.etf_seed)
            )
            self.prototypes = nn.Parameter(F.normalize(start, dim=1))
        else:
            FixedPrototypes("simplex_etf", config.etf_seed).attach(self, num_classes, config.projection_dim)
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))
        if config.mixture_of_experts:
            if config.num_experts is None:
                raise ValueError(
                    "mixture_of_experts needs num_experts (one per task; build_method sets it to the "
                    "scenario's number of tasks)"
                )
            self.projector = MixtureOfExperts(
                backbone.out_dim,
                config.projection_dim,
                config.num_experts,
                config.projection_hidden or backbone.out_dim,
                active=1,
            )

    @classmethod
    def resolve_config(cls, config, scenario):
        if config.mixture_of_experts and config.num_experts is None:  # one expert per task
            return config.model_copy(update={"num_experts": scenario.num_tasks})
        return config

    @classmethod
    def has_unused_parameters(cls, config):
        return config.mixture_of_experts  # the experts of later tasks idle until their task

    def begin_task(self, task):
        moe = self.projector if self.config.mixture_of_experts else None
        if moe is not None and task.index >= moe.num_experts:
            raise ConfigError(
                f"nct: task {task.index + 1} needs expert {task.index + 1} but method.num_experts is "
                f"{moe.num_experts}; leave num_experts unset (one per task) or raise it."
            )
        self.class_task[list(task.classes)] = task.index
        super().begin_task(task)
        self.past.begin_task(task, needed=self.config.distill_weight > 0)  # the t−1 model with its t active experts
        if moe is not None:
            moe.active = task.index + 1

    @torch.no_grad()
    def past_embed(self, views):
        if not self.config.mixture_of_experts:
            return self.past.embed(views)
        backbone, moe = self.past.model  # the t−1 model: its first t experts and gate rows
        return F.normalize(moe(backbone(views), active=self.task.index), dim=1)

    def head(self, z, y, weights):
        if self.config.head_loss == "dr":
            return dr_loss(z, y, self.prototypes, weights)
        return prototype_ce(
            z,
            y,
            self.prototypes,
            self.config.ce_temperature,
            weights,
            normalize_prototypes=self.config.classifier == "learnable",
        )

    def training_step(self, images, labels, step):
        cfg = self.config
        x, y = self.memory.join(images, labels)
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
            expert = expert_dr_loss(F.normalize(mixed.experts, dim=2), y, self.class_task, self.prototypes)
            loss = loss + cfg.head_weight * cfg.expert_weight * expert
            terms["expert_dr"] = expert.detach()
        if self.past.model is not None and cfg.distill_weight > 0:
            old_rows = None  # with a buffer only the old classes' rows are distilled
            if self.memory.buffer is not None:
                old_rows = torch.isin(y, torch.tensor(self.task.previous_classes, device=y.device))
            distill = dr_distill(z, self.past_embed(views), old_rows)
            loss = loss + cfg.distill_weight * distill
            terms["distill"] = distill.detach()
        return StepOutput(loss, terms)

    def diagnostics(self, task):
        return self.drift(task)
