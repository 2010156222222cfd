"""Add your own method in one file, then run it like a built-in one.

The method here, ``prototype_pull``, pulls every image towards its class's prototype: a projection head on the
backbone gives unit-norm embeddings z (B, d), and the loss is the cross-entropy on their cosine logits to fixed
simplex-ETF prototypes W (K, d) (``protosphere.geometry.simplex_etf``, through the ``FixedPrototypes`` part)::

    loss = CE(z Wᵀ / τ, y)          (protosphere.losses.prototype_ce; NCT's CE head on a fixed ETF)

with a small reservoir replay buffer of past images joined to every batch (the ``Replay`` part, as ``er`` uses it).
It is evaluated by the nearest prototype among the classes seen so far. A method is a config class (its
``method.*`` keys, validated) and a ``Method`` subclass registered by name, whose ``training_step`` returns a
``StepOutput``; the engine does devices, optimisation, evaluation, checkpoints and the run folder.

Run it from Python (this file; about 15 s on one CPU core, scikit-learn's bundled 8×8 digits, 5 tasks × 2 classes)::

    python my_method.py [OUTPUT_DIR]

or from the command line, importing this file first (by module name from its folder, or by path), here starting
from the shipped ER config and swapping its method::

    protosphere --import my_method run seq-fmnist/er-200 method.name=prototype_pull data.dataset=digits \
        train.epochs=20 train.flip=false
    protosphere --import ./my_method.py config seq-fmnist/er-200 method.name=prototype_pull   # the merged config

Scale it up: drop ``data.dataset=digits`` (Seq-FashionMNIST, as the shipped config says), or ``model.backbone=
resnet18`` with ``data.dataset=cifar10`` on a GPU. To ship the method with a package, list this module under the
``protosphere.plugins`` entry-point group and every ``protosphere`` command loads it.
"""

import sys
import tempfile

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import protosphere
from protosphere.config import MethodConfig
from protosphere.losses import prototype_ce
from protosphere.methods.base import Method, StepOutput
from protosphere.methods.parts import FixedPrototypes, Replay
from protosphere.registry import METHODS


class PrototypePullConfig(MethodConfig):
    name: str = "prototype_pull"
    projection_dim: int = Field(32, ge=1, description="embedding size d (a simplex ETF of K classes needs d ≥ K − 1)")
    temperature: float = Field(0.1, gt=0, description="τ of the cosine logits")
    buffer_size: int = Field(200, ge=0, description="replayed past images (0: memory-free)")


@METHODS.register("prototype_pull")
class PrototypePull(Method):
    config_class = PrototypePullConfig

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.projector = nn.Linear(backbone.out_dim, config.projection_dim)
        # self.prototypes: (K, d) fixed for the whole label space, saved with the checkpoint, never trained
        FixedPrototypes("simplex_etf").attach(self, num_classes, config.projection_dim)
        self.buffer = Replay(config.buffer_size)
        self.track_state("buffer", self.buffer)  # checkpointed with the method

    def forward(self, normalized_images):
        """Unit-norm embeddings (B, d), where the prototypes live (the run's embedding snapshot calls this too)."""
        return F.normalize(self.projector(self.backbone(normalized_images)), dim=1)

    def training_step(self, images, labels, step):
        inputs, targets = images, labels
        if not self.buffer.is_empty():
            replay = self.buffer.draw(len(images), images.dtype)
            inputs, targets = torch.cat([images, replay["examples"]]), torch.cat([labels, replay["labels"]])
        loss = prototype_ce(self(self.transforms.train(inputs)), targets, self.prototypes, self.config.temperature)
        self.buffer.store(images, labels)
        return StepOutput(loss, {"prototype_ce": loss.detach()})

    def logits(self, images):
        cosines = self(self.transforms.eval(images)) @ self.prototypes.T
        if self.task is None:  # the untrained network, before the first task
            return cosines
        # a class-IL learner knows which classes it has met: the others' prototypes are not candidates
        return cosines.masked_fill(~self.task.seen_mask(self.num_classes, cosines.device), float("-inf"))

    def classifiers(self):
        return {"nearest_prototype": self.logits}

    def classifier_data(self):
        return {"nearest_prototype": "no stored data (the fixed prototypes of the classes seen so far)"}


if __name__ == "__main__":
    run = protosphere.run(
        {
            "data": {"dataset": "digits"},
            "scenario": {"kind": "class_il", "num_tasks": 5},
            "model": {"backbone": "small_cnn"},
            "method": {"name": "prototype_pull", "buffer_size": 200},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            # digits: ~290 training images a task, 5 steps an epoch; a flipped digit is another digit
            "train": {"epochs": 20, "batch_size": 64, "flip": False},
            "output_dir": sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="protosphere-"),
        },
        overwrite=True,
    )
    print(f"run folder: {run.run_dir}")
    for t, row in enumerate(run.accuracy("nearest_prototype")):
        print(f"after task {t}: class-IL accuracy on tasks 0..{t}: " + " ".join(f"{a:.1f}" for a in row[: t + 1]))
    metrics = run.results["metrics"]["nearest_prototype"]["class_il"]
    print(f"final average class-IL accuracy: {metrics['final_average_accuracy']:.2f} %")
