"""CLOP: semi-supervised contrastive learning with orthonormal class prototypes (Li et al., "Preventing Collapse in
Contrastive Learning with Orthonormal Prototypes (CLOP)", arXiv 2403.18699).

Two views ``z1, z2`` (normalised projections, gathered over processes) of each image; the loss is
``clop(z1, z2, y, A, lam) + partner``, where A (K, projection_dim) are fixed orthonormal prototypes of the whole label
space (:class:`~protosphere.methods.parts.FixedPrototypes`, ``orthonormal``, so ``projection_dim ≥ K``) and the partner
is CLOP's :func:`~protosphere.losses.supervised_ntxent` (default) or SimCLR's :func:`~protosphere.losses.nt_xent`.

Label fraction (a method-level transform, no scenario option): with ``label_fraction < 1`` a deterministic,
class-stratified subset of each task's training rows keeps its label (:func:`labelled_mask`, seeded by
``label_seed`` and the task index) and every other row gets label −1 in ``training_data``, so training steps never
see a hidden label. The evaluation classifiers (``ncm``, ``linear_probe``) are fitted on the labelled rows only
(``evaluation_data``); ``nearest_prototype`` needs no data.
"""

from typing import Literal

import torch
from pydantic import Field

from ..losses import clop, nt_xent, supervised_ntxent
from ..registry import METHODS
from .base import StepOutput
from .parts import FixedPrototypes
from .representation import RepresentationConfig, RepresentationMethod

CLOPClassifier = Literal["nearest_prototype", "ncm", "linear_probe", "knn"]


def labelled_mask(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Bool mask (N,) of the rows that keep their label: per class c with n_c rows, ``max(1, round(fraction · n_c))``
    rows drawn without replacement from ``torch.Generator().manual_seed(seed)`` (the global RNG is untouched);
    all rows when ``fraction ≥ 1``. Same labels, fraction and seed → same mask."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}.")
    labels = labels.detach().cpu()
    if fraction >= 1:
        return torch.ones(len(labels), dtype=torch.bool)
    generator = torch.Generator().manual_seed(int(seed))
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        rows = (labels == c).nonzero().flatten()
        keep = max(1, round(fraction * len(rows)))
        mask[rows[torch.randperm(len(rows), generator=generator)[:keep]]] = True
    return mask


class CLOPConfig(RepresentationConfig):
    name: str = "clop"
    lam: float = Field(1.0, ge=0, description="weight λ of the prototype term")
    temperature: float = Field(0.5, gt=0, description="partner temperature: 0.5 on CIFAR-10, 0.2 on CIFAR-100")
    partner: Literal["supervised_ntxent", "nt_xent"] = "supervised_ntxent"
    label_fraction: float = Field(1.0, gt=0, le=1, description="share of training rows per class that keep a label")
    label_seed: int = 0
    prototype_seed: int = 0
    classifiers: list[CLOPClassifier] = Field(default_factory=lambda: ["nearest_prototype", "ncm", "linear_probe"])


@METHODS.register("clop")
class CLOP(RepresentationMethod):
    config_class = CLOPConfig
    views_per_image = 2
    recipe = "nc/clop-10"

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        FixedPrototypes("orthonormal", config.prototype_seed).attach(self, num_classes, config.projection_dim)

    def labelled(self, task) -> torch.Tensor:
        """Mask of the task's training rows that keep their label (on the labels' device)."""
        seed = self.config.label_seed * 1_000_003 + task.index
        return labelled_mask(task.train_labels, self.config.label_fraction, seed).to(task.train_labels.device)

    def training_data(self, task):
        if self.config.label_fraction >= 1:
            return task.train_images, task.train_labels
        return task.train_images, task.train_labels.masked_fill(~self.labelled(task), -1)

    def evaluation_data(self, task):
        if self.config.label_fraction >= 1:
            return task.train_images, task.train_labels
        mask = self.labelled(task)
        return task.train_images[mask], task.train_labels[mask]

    def classifier_data(self):
        data = super().classifier_data()
        if self.config.label_fraction < 1:
            labelled = f"the labelled {self.config.label_fraction:.0%} of the current task's training data"
            data.update(
                ncm=labelled + "; earlier means kept for the other classes", linear_probe=labelled, knn=labelled
            )
        return data

    def training_step(self, images, labels, step):
        cfg = self.config
        z1, z2 = self.embed(self.two_views(images)).chunk(2)
        z1, z2, y = self.gather(z1), self.gather(z2), self.gather(labels)
        prototype_term = clop(z1, z2, y, self.prototypes, lam=cfg.lam)
        if cfg.partner == "supervised_ntxent":
            partner = supervised_ntxent(z1, z2, y, temperature=cfg.temperature)
        else:
            partner = nt_xent(z1, z2, temperature=cfg.temperature)
        return StepOutput(prototype_term + partner, {"clop": prototype_term.detach(), cfg.partner: partner.detach()})
