"""Shared base of the representation-learning methods (contrastive, prototype, self-supervised).

Such a method trains an encoder + projection head with a loss on L2-normalised projections and is judged by
classifiers fitted on frozen features after each task (two-stage evaluation):

* ``nearest_prototype`` — argmax over the fixed prototypes of the classes seen so far, in projection space (no stored
  data needed; only for methods that own prototypes, i.e. set ``self.prototypes``);
* ``ncm`` — nearest class mean of normalised encoder features; means are recomputed for every class present in the
  evaluation data and kept from earlier tasks for the others (memory-free runs keep old means as they were);
* ``linear_probe`` — a linear layer on frozen encoder features trained on the evaluation data (current task + replay
  buffer) with class-balanced sampling, the Co2L protocol;
* ``linear_probe_seen`` — the same probe trained on the training data of every task seen so far: not a continual
  classifier (it uses data a learner no longer has) but the standard measure of what the representation retains
  (the CaSSLe/PNR linear-evaluation protocol), reported beside the honest ones;
* ``knn`` — weighted k-nearest neighbours on cosine similarity (for self-supervised runs).

``evaluation_data`` says which stored data a classifier may use. A method that stores data sets ``self.memory`` to a
:class:`~protosphere.methods.parts.RepresentationMemory` (co2l, fnc2, nct): its rows then join the training data,
the evaluation data and the linear probe's data as that memory says.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import MethodConfig
from ..data.scenarios import model_input
from ..evaluation import extract_features, fit_linear_probe, knn_logits, ncm_logits, nearest_prototype_logits
from ..models import ProjectionHead
from .base import Method, TaskContext
from .parts import RepresentationMemory

Classifier = Literal["nearest_prototype", "ncm", "linear_probe", "linear_probe_unaugmented", "linear_probe_seen", "knn"]


class RepresentationConfig(MethodConfig):
    projection_dim: int = Field(128, ge=1)
    projection_hidden: int | None = Field(None, ge=1, description="default: the encoder's feature size")
    projection_batch_norm: bool = False
    classifiers: list[Classifier] = Field(default_factory=lambda: ["ncm", "linear_probe"])
    probe_epochs: int = Field(10, ge=1)
    probe_min_steps: int = Field(300, ge=0, description="more probe epochs when its data give fewer steps than this")
    probe_lr: float = Field(0.1, gt=0)
    probe_batch_size: int = Field(256, ge=1)
    probe_class_balanced: bool = True
    probe_schedule: Literal["cosine", "step", "constant"] = "cosine"
    knn_k: int = Field(20, ge=1)
    knn_temperature: float = Field(0.07, gt=0)


class ReplayContrastConfig(RepresentationConfig):
    """Settings of the methods with a :class:`~protosphere.methods.parts.RepresentationMemory` and a past model
    (``co2l``, ``fnc2``, ``nct``)."""

    buffer_size: int = Field(0, ge=0, description="0 = memory-free")
    buffer_sampling: Literal["co2l", "reservoir", "class_balanced"] = "co2l"
    replay_batch_size: int | None = Field(None, ge=1, description="reservoir/class_balanced; default: batch size")
    past_model_bn: Literal["eval", "train"] = "eval"


class RepresentationMethod(Method):
    config_class = RepresentationConfig
    probe_augment_default = False  # eval.probe_augment when unset: whether the paper's linear stage re-augments
    probe_augment, run_seed = False, 0  # set by configure_evaluation

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        hidden = config.projection_hidden or backbone.out_dim
        self.projector = ProjectionHead(
            backbone.out_dim, hidden, config.projection_dim, batch_norm=config.projection_batch_norm
        )
        self.register_buffer("class_means", torch.zeros(num_classes, backbone.out_dim))
        # fixed prototypes, when a method has them (FixedPrototypes.attach); the nearest-prototype classifier reads them
        self.register_buffer("prototypes", None)
        self.memory: RepresentationMemory | None = None  # stored data, when a method keeps some
        self._fitted: dict = {}  # the linear probe, refitted after every task; not part of the trained model
        self._bank: tuple[torch.Tensor, torch.Tensor] | None = None

    # training helpers --------------------------------------------------------------------------------------------
    def embed(self, normalized_images: torch.Tensor) -> torch.Tensor:
        """Unit-norm projections (N, projection_dim) of already transformed images."""
        return F.normalize(self.projector(self.backbone(normalized_images)), dim=1)

    def forward(self, normalized_images: torch.Tensor) -> torch.Tensor:
        return self.embed(normalized_images)

    def two_views(self, images: torch.Tensor) -> torch.Tensor:
        """Two independent augmentations stacked as ``cat(view1, view2)`` (2B, C, H, W); each view by its own
        pipeline when the recipe has per-view settings."""
        return torch.cat([self.transforms.train_view(images, 0), self.transforms.train_view(images, 1)])

    # stored data ------------------------------------------------------------------------------------------------
    def configure_evaluation(self, evaluation, seed: int = 0) -> None:
        self.probe_augment = bool(getattr(evaluation, "probe_augment", False))
        self.run_seed = int(seed)
        if self.memory is not None:
            self.memory.configure_evaluation(evaluation)

    def begin_task(self, task: TaskContext) -> None:
        super().begin_task(task)
        if self.memory is not None:
            self.memory.begin_task(task)

    def training_data(self, task: TaskContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self.memory is not None:
            return self.memory.training_data(task)
        return super().training_data(task)

    # evaluation -------------------------------------------------------------------------------------------------
    def evaluation_data(self, task: TaskContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (uint8) and labels the classifiers may be fitted on after ``task``: its training data by default
        (followed by the memory's training buffer, when there is one)."""
        if self.memory is not None:
            return self.memory.evaluation_data(task)
        return task.train_images, task.train_labels

    def classifier_only_rows(self, task: TaskContext) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Stored (images, labels) that only the linear probe sees, after the evaluation data (a memory-free run's
        classifier-only buffer); None by default."""
        return self.memory.classifier_only_rows() if self.memory is not None else None

    def classifier_data(self) -> dict[str, str]:
        """Which data each classifier was fitted on, in words (results.json, console summary, report)."""
        data = {
            "nearest_prototype": "no stored data (the fixed prototypes of the seen classes)",
            "ncm": "the current task's training data; earlier means kept for the other classes",
            "linear_probe": "the current task's training data",
            "linear_probe_seen": "the training data of every task seen so far (not a continual classifier)",
            "knn": "the current task's training data",
            **(self.memory.describe() if self.memory is not None else {}),
        }
        data["linear_probe_unaugmented"] = data["linear_probe"] + "; each image encoded once, un-augmented"
        if self.probe_augment:
            data["linear_probe"] += "; a new augmented view at every draw of an image"
        return data

    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Float encoder features (N, d) of uint8 images (or floats in [0, 1]), in batches on the training device
        (images held on the host come one batch at a time), without gradients."""
        dtype = torch.get_default_dtype()  # float32, or float64 in a float64 run
        return extract_features(
            lambda batch: self.features(model_input(self.to_device(batch))).to(dtype), images, batch_size
        )

    def augmented_probe_features(
        self, images: torch.Tensor, task: int, epoch: int, batch_size: int = 256, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encoder features (N, d) of one freshly augmented view of each image (an image given twice gets two views) —
        the training augmentation, as the Co2L / FNC2 authors' linear stages load their training images — under
        ``no_grad`` in eval mode, batched on the training device. ``rows``: the views are of ``images[rows]``
        (gathered one batch at a time). The augmentation draws from a generator on the training device seeded by
        (run seed, task, epoch), so the probe is deterministic and leaves the run's RNG untouched."""
        generator = torch.Generator(device=self.class_means.device)
        generator.manual_seed(self.run_seed * 1_000_003 + task * 1009 + epoch + 7_777_777)
        dtype = torch.get_default_dtype()

        def encode(batch):
            return self.backbone(self.transforms.train(model_input(self.to_device(batch)), generator)).to(dtype)

        if rows is None:
            return extract_features(encode, images, batch_size)
        return extract_features(lambda r: encode(images[r.to(images.device)]), rows, batch_size)

    def prepare_evaluation(self, task: TaskContext) -> None:
        cfg = self.config
        self.fit_seconds = {}
        images, labels = self.evaluation_data(task)
        with self.fit_timer("encode"):  # shared by ncm, linear_probe and knn
            features = self.encode(images)
        labels = self.to_device(labels)  # beside the features (a streamed task's data wait on the host)
        with self.fit_timer("ncm"):
            normalized = F.normalize(features, dim=1)
            for c in labels.unique().tolist():
                self.class_means[c] = F.normalize(normalized[labels == c].mean(0), dim=0)

        def probe(x, y, epoch_features=None):
            return fit_linear_probe(
                x,
                y,
                self.num_classes,
                epochs=cfg.probe_epochs,
                lr=cfg.probe_lr,
                batch_size=cfg.probe_batch_size,
                class_balanced=cfg.probe_class_balanced,
                seed=task.index,
                schedule=cfg.probe_schedule,
                min_steps=cfg.probe_min_steps,
                epoch_features=epoch_features,
            ).to(features.device)

        probes = {"linear_probe", "linear_probe_unaugmented"} & set(cfg.classifiers)
        if probes:  # the probe's data: the evaluation data, then any classifier-only rows
            extra = self.classifier_only_rows(task)
            probe_images, probe_labels, fixed = images, labels, features
            if extra is not None:
                probe_images = torch.cat([images, extra[0].to(images.device)])
                probe_labels = torch.cat([labels, extra[1].to(labels.device)])
                with self.fit_timer("encode"):
                    fixed = torch.cat([features, self.encode(extra[0])])
        if "linear_probe" in probes and self.probe_augment:
            with self.fit_timer("linear_probe"):  # a new view at every draw (the authors' linear stage)

                def views(epoch, rows):
                    return self.augmented_probe_features(probe_images, task.index, epoch, rows=rows)

                self._fitted["probe"] = probe(fixed, probe_labels, epoch_features=views)
        if probes and ("linear_probe_unaugmented" in probes or not self.probe_augment):
            timer = "linear_probe" if not self.probe_augment else "linear_probe_unaugmented"
            with self.fit_timer(timer):
                self._fitted["probe_fixed"] = probe(fixed, probe_labels)
            if not self.probe_augment:
                self._fitted["probe"] = self._fitted["probe_fixed"]
        if "linear_probe_seen" in cfg.classifiers:
            with self.fit_timer("linear_probe_seen"):  # its own encoding of all seen data included
                seen_images, seen_labels = task.seen_data()
                self._fitted["probe_seen"] = probe(self.encode(seen_images), seen_labels)
        if "knn" in cfg.classifiers:
            self._bank = (normalized, labels)

    def classifiers(self):
        table = {
            "nearest_prototype": self._nearest_seen_prototype,
            "ncm": lambda x: ncm_logits(self.features(x), self.class_means),
            "linear_probe": lambda x: self._fitted["probe"](self.features(x)),
            "linear_probe_unaugmented": lambda x: self._fitted["probe_fixed"](self.features(x)),
            "linear_probe_seen": lambda x: self._fitted["probe_seen"](self.features(x)),
            "knn": lambda x: knn_logits(
                self._bank[0],
                self._bank[1],
                F.normalize(self.features(x), dim=1),
                self.num_classes,
                k=self.config.knn_k,
                temperature=self.config.knn_temperature,
            ),
            **self.extra_classifiers(),
        }
        names = [n for n in self.config.classifiers if n != "nearest_prototype" or self.prototypes is not None]
        return {name: table[name] for name in names}

    def _nearest_seen_prototype(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine to the fixed prototypes of the classes seen so far (later classes' prototypes exist from the start,
        but a class-IL learner knows it has not met them yet)."""
        logits = nearest_prototype_logits(self(self.transforms.eval(x)), self.prototypes)
        if self.task is None:
            return logits
        return logits.masked_fill(~self.task.seen_mask(logits.shape[1], logits.device), float("-inf"))

    def extra_classifiers(self) -> dict:
        """Classifiers a subclass adds to the table above, by name (selected through ``config.classifiers``)."""
        return {}

    def classifier_weights(self):
        return self.class_means
