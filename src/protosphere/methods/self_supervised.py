"""What the self-supervised methods share (``simclr``, ``moco``, ``cassle``, ``sycon``), and the base they wrap.

Step: two augmentations x1, x2 of the B images; each view passes the encoder and the projector on its own (BatchNorm
statistics per view, as in solo-learn); z_v = projector(backbone(x_v)), q_v = normalize(z_v). Labels never enter the
loss. ``contrast_scope: global`` gathers the rows a batch-contrastive loss compares from every process (with
gradients), so the loss is over the global batch; ``local`` keeps it per process, as the official CaSSLe/PNR code does.

Projector: ``projection_hidden`` (2048) wide, Linear–BN–ReLU–Linear as in solo-learn's SimCLR / MoCo v2+ projector
(``projection_batch_norm: false`` gives the Linear–ReLU–Linear projector of the CaSSLe/PNR fork of solo-learn).

The base is the self-supervised loss (SimCLR's NT-Xent, MoCo v2+'s momentum contrast, ...): an object the method
wraps, as the CaSSLe authors' ``distill_wrapper`` wraps any solo-learn method. ``simclr`` and ``moco`` are their base
alone; ``cassle`` and ``sycon`` wrap the base that ``method.base`` names. A base is a :class:`SelfSupervisedBase`
registered in :data:`SSL_BASES`, so a new one is one new file, and cassle and sycon take it unchanged.

Evaluation after each task uses labels only there: a linear probe and a weighted kNN on frozen encoder features,
fitted on the training data of every task seen so far (``probe_data: seen``; ``current`` uses the last task only).
``online_classifier: true`` also trains a linear classifier on **detached** encoder features of both views for
display (its cross-entropy is added to the loss, but the encoder receives no gradient from it).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import Registry
from .base import StepOutput
from .representation import Classifier, RepresentationConfig, RepresentationMethod


class SelfSupervisedConfig(RepresentationConfig):
    name: str = "simclr"
    temperature: float = Field(0.2, gt=0)
    projection_hidden: int | None = Field(2048, ge=1, description="default: the encoder's feature size")
    projection_batch_norm: bool = True
    contrast_scope: Literal["local", "global"] = "global"
    online_classifier: bool = False
    probe_data: Literal["seen", "current"] = "seen"
    classifiers: list[Classifier] = Field(default_factory=lambda: ["linear_probe", "knn"])


class SelfSupervisedBase:
    """The self-supervised loss a method is built on, as an object the method wraps.

    Built with the method, whose ``config`` it reads (the base's own settings, e.g. ``temperature``). State it keeps
    across steps (a momentum encoder, queues) is registered on the method under the names the base chooses, so the
    method's checkpoint holds it. ``views`` are the two augmented batches, ``q`` their normalised projections and
    ``z`` the raw ones (lists of two (B, d) tensors), ``step`` the StepContext.
    """

    term = "loss"  # the name of the base's loss among a step's terms
    renamed_state: dict[str, str] = {}  # merged into the method's Method.renamed_state

    def __init__(self, method: SelfSupervisedMethod):
        self.method = method

    def begin_task(self, task) -> None:
        """Before the task's first step."""

    def loss(self, views: list[torch.Tensor], q: list[torch.Tensor], z: list[torch.Tensor], step) -> torch.Tensor:
        """The base's loss for this step; state it keeps is updated after the loss is computed."""
        raise NotImplementedError

    def distill_input(self, q: list[torch.Tensor], z: list[torch.Tensor]) -> list[torch.Tensor]:
        """The projections this base hands to a distillation predictor (CaSSLe, Sy-CON), as its official code does."""
        return q

    # Sy-CON (PNR): the pseudo-negative form of the base, from task 1 on; a base without one cannot be Sy-CON's -----
    def prepare_pseudo_negatives(self) -> None:
        """Create the state the pseudo-negative loss keeps (after the method's predictor, whose initialisation draws
        from the global generator first)."""

    def pseudo_negative_loss(self, views, q, p, f, step, distill_temperature: float) -> torch.Tensor:
        """The Sy-CON loss that replaces :meth:`loss` once there is a past model: ``p`` the predictor's normalised
        output of each view, ``f`` the past model's normalised projection of the same view."""
        raise NotImplementedError


SSL_BASES: Registry[type[SelfSupervisedBase]] = Registry("self-supervised base")
"""Self-supervised bases (subclasses of :class:`SelfSupervisedBase`), by ``method.base`` (cassle, sycon)."""


class SelfSupervisedMethod(RepresentationMethod):
    """Two views, per-view encoding, contrast scope, the optional online classifier, evaluation data, and the base.

    ``base_class``: the base the method is (simclr, moco); None for a method that wraps the base ``method.base``
    names (cassle, sycon). The default :meth:`training_step` is the base's loss alone.
    """

    config_class = SelfSupervisedConfig
    views_per_image = 2
    base_class: type[SelfSupervisedBase] | None = None

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.online = nn.Linear(backbone.out_dim, num_classes) if config.online_classifier else None
        self.base = (self.base_class or SSL_BASES.get(config.base))(self)
        self.renamed_state = {**self.base.renamed_state, **type(self).renamed_state}

    def begin_task(self, task):
        super().begin_task(task)
        self.base.begin_task(task)

    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The two augmented views, each by its own pipeline when the recipe has per-view settings (solo-learn's
        asymmetric blur and solarization)."""
        return [self.transforms.train_view(images, 0), self.transforms.train_view(images, 1)]

    def encode_views(self, views):
        """Per view: encoder features h_v, raw projections z_v and normalised projections q_v."""
        h = [self.backbone(x) for x in views]
        z = [self.projector(f) for f in h]
        return h, z, [F.normalize(v, dim=1) for v in z]

    def scope(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The rows a batch-contrastive loss sees: gathered from every process (global) or this process's (local)."""
        return [self.gather(t) for t in tensors] if self.config.contrast_scope == "global" else list(tensors)

    def training_step(self, images, labels, step):
        views = self.views(images)
        h, z, q = self.encode_views(views)
        loss = self.base.loss(views, q, z, step)
        return self.finish(loss, {self.base.term: loss.detach()}, h, labels)

    def finish(self, loss: torch.Tensor, terms: dict, h, labels: torch.Tensor) -> StepOutput:
        if self.online is not None:
            logits = self.online(torch.cat(h).detach())
            targets = labels.repeat(len(h))
            ce = F.cross_entropy(logits, targets)
            loss = loss + ce
            terms["online_ce"] = ce.detach()
            terms["online_acc"] = (logits.detach().argmax(1) == targets).float().mean() * 100
        return StepOutput(loss, terms)

    def evaluation_data(self, task):
        if self.config.probe_data == "current":
            return task.train_images, task.train_labels
        return task.seen_data()

    def classifier_data(self):
        data = super().classifier_data()
        if self.config.probe_data == "seen":
            seen = "the training data of every task seen so far (the CaSSLe/PNR linear evaluation)"
            data.update(ncm=seen, linear_probe=seen, knn=seen)
        return data
