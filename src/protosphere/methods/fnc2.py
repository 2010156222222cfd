"""FNC2 + HSD — focal neural-collapse contrastive learning with hardness–softness distillation (Dang et al.,
"Memory-efficient Continual Learning with Neural Collapse Contrastive", WACV 2025, arXiv 2412.02865), wired as the
authors' code (dangtrunganh/samix ``main_train.py``, run "without SAMix" with ``--loss fnc2``).

One simplex ETF for the whole label space is fixed in projection space (a buffer, never trained); a batch is two
augmented views ``cat(view1, view2)`` (plus Co2L-style buffer rows)::

    loss = fnc2(z, y, ETF, current classes, previous classes, τ, τ_base, γ)
           + λ_hsd · hsd(z', z_past, ETF[seen classes], α)                          (from task 1 on)
    α = hsd_alpha(step, steps_in_task, "official", epochs=E, marks=(0.3, 0.8))  — 1 → 0.5 within each task

z' is z, or ``normalize(predictor(z))`` with the optional distillation predictor (``distill_predictor_hidden``,
the authors' later ``--predictor_hidden_dim 128``). The past model is a copy of encoder + projector taken at the start
of each task and kept in train mode (BatchNorm on batch statistics, like the official ``copy.deepcopy`` of a model in
train mode). Ablations: ``old_prototypes_as_negatives: false`` (no pseudo-replay), ``distillation: ird | prd | none``,
``hsd_schedule: linear | cosine | constant``. Memory-free by default (``buffer_size: 0``): the representation never
sees stored data, and the linear probe — the headline, as in the paper — is fitted on the last task plus
``eval.probe_buffer_size`` (200) classifier-only samples; nearest prototype and NCM use no stored data at all.
"""

from typing import Literal

import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from ..losses import HSD_SCHEDULES, fnc2, hsd, hsd_alpha, ird, prd
from ..registry import METHODS
from .base import StepOutput
from .parts import ClassMeanDrift, FixedPrototypes, PastModel, RepresentationMemory
from .representation import Classifier, ReplayContrastConfig, RepresentationMethod


class FNC2Config(ReplayContrastConfig):
    name: str = "fnc2"
    temperature: float = Field(0.5, gt=0)
    base_temperature: float = Field(0.07, gt=0)
    gamma: int = Field(1, ge=0, description="focal focusing parameter γ (an integer: p_ii may exceed 1)")
    old_prototypes_as_negatives: bool = True
    distillation: Literal["hsd", "ird", "prd", "none"] = "hsd"
    hsd_weight: float = Field(1.0, ge=0, description="λ_hsd, the weight of the distillation term")
    hsd_schedule: Literal[HSD_SCHEDULES] = "official"
    hsd_marks: tuple[float, float] = Field(
        (0.3, 0.8),
        description="official schedule: α starts to fall at the first "
        "fraction of the task's epochs and stops at the second",
    )
    hsd_alpha0: float = Field(1.0, ge=0, le=1, description="α of the constant schedule")
    ird_current_temperature: float = Field(0.2, gt=0)
    ird_past_temperature: float = Field(0.01, gt=0)
    prd_current_temperature: float = Field(0.2, gt=0)
    prd_past_temperature: float = Field(0.1, gt=0)
    distill_predictor_hidden: int | None = Field(
        128,
        ge=1,
        description="hidden width of the distillation "
        "predictor (Linear–BN–ReLU–Linear) on the current side of HSD from the second task, as every training "
        "script of the authors sets it (--predictor_hidden_dim 128; 256 on Tiny-ImageNet); null: no predictor",
    )
    past_model_bn: Literal["eval", "train"] = "train"
    etf_seed: int = 0
    classifiers: list[Classifier] = Field(
        default_factory=lambda: [
            "linear_probe",
            "nearest_prototype",
            "ncm",
            "linear_probe_seen",
            "linear_probe_unaugmented",
        ]
    )

    @field_validator("hsd_marks")
    @classmethod
    def _ordered_marks(cls, marks):
        if not 0 <= marks[0] <= marks[1] <= 1:
            raise ValueError(f"needs 0 <= first <= second <= 1 (fractions of a task's epochs), got {list(marks)}")
        return marks


@METHODS.register("fnc2")
class FNC2(RepresentationMethod):
    config_class = FNC2Config
    views_per_image = 2
    recipe = "seq-fmnist/fnc2"
    probe_augment_default = True  # samix src/datasets/evaluate_dataloader.py: the training transform

    @classmethod
    def has_unused_parameters(cls, config):
        return config.distill_predictor_hidden is not None  # the predictor is idle in the first task

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.memory = RepresentationMemory.from_config(self.track_state, config)
        self.past = PastModel(self, train_mode_bn=config.past_model_bn == "train")
        self.drift = ClassMeanDrift(self, num_classes, config.projection_dim)
        FixedPrototypes("simplex_etf", config.etf_seed).attach(self, num_classes, config.projection_dim)
        hidden, dim = config.distill_predictor_hidden, config.projection_dim
        self.distill_predictor = (
            None
            if hidden is None
            else nn.Sequential(
                nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
            )
        )

    @property
    def uses_past_model(self):
        return self.config.distillation != "none" and self.config.hsd_weight > 0

    def begin_task(self, task):
        super().begin_task(task)
        self.past.begin_task(task, needed=self.uses_past_model)

    def training_step(self, images, labels, step):
        cfg, task = self.config, self.task
        x, y = self.memory.join(images, labels)
        views = self.two_views(x)
        z, y2 = self.gather(self.embed(views)), self.gather(y.repeat(2))
        previous = task.previous_classes if cfg.old_prototypes_as_negatives else []
        loss = main = fnc2(
            z, y2, self.prototypes, task.classes, previous, cfg.temperature, cfg.base_temperature, cfg.gamma
        )
        terms = {"fnc2": main.detach()}
        if self.past.model is not None and self.uses_past_model:
            z_past, seen = self.gather(self.past.embed(views)), self.prototypes[task.seen_classes]
            if self.distill_predictor is not None:
                z = F.normalize(self.distill_predictor(z), dim=1)
            ird_t = (cfg.ird_current_temperature, cfg.ird_past_temperature)
            prd_t = (cfg.prd_current_temperature, cfg.prd_past_temperature)
            if cfg.distillation == "hsd":
                alpha = hsd_alpha(
                    step.step,
                    step.steps_in_task,
                    cfg.hsd_schedule,
                    cfg.hsd_alpha0,
                    epochs=step.epochs_in_task,
                    marks=cfg.hsd_marks,
                )
                distill = hsd(z, z_past, seen, alpha, ird_t, prd_t)
                terms["hsd_alpha"] = z.new_tensor(alpha)
            elif cfg.distillation == "ird":
                distill = ird(z, z_past, *ird_t)
            else:
                distill = prd(z, z_past, seen, *prd_t)
            loss = loss + cfg.hsd_weight * distill
            terms[cfg.distillation] = distill.detach()
        return StepOutput(loss, terms)

    def diagnostics(self, task):
        return self.drift(task)
