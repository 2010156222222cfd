"""Parts that methods compose: replay memory, a past model, fixed prototypes, a momentum encoder and a key queue.

* :class:`Replay` — the replay buffer every replay method uses (er, der++, co2l, fnc2, nct), with one storage
  convention: images are kept as uint8, as the datasets hold them, and become floats in [0, 1] when drawn.
* :class:`RepresentationMemory` — what a two-stage representation method (co2l, fnc2, nct) stores: a training buffer
  (Co2L's refilled memory or an ER-style replay batch) and, for memory-free runs, a classifier-only buffer for the
  linear probe.
* :class:`PastModel` — the frozen encoder + projector of the previous task that a method distils from (co2l, fnc2,
  nct, cassle, sycon), and its normalised projections.
* :class:`ClassMeanDrift` — after each task, drift of old-class means and alignment with the prototypes (co2l, fnc2,
  nct).
* :class:`FixedPrototypes` — class prototypes fixed in projection space (simplex ETF, orthonormal), registered one way
  as the method's ``prototypes`` buffer (fnc2, nct, clop).
* :class:`MomentumEncoder` and :class:`KeyQueue` — MoCo's EMA copy of encoder + projector and its FIFO of keys
  (the MoCo base of moco, cassle and sycon).

Each part owns its state; a method registers the nn.Modules as submodules and tracks the buffers with
:meth:`~protosphere.methods.base.Method.track_state`, so checkpoints hold them. A part built with the method itself
(``PastModel(self)``) registers what it keeps on the method under the method's own names, so the checkpoint keys do
not depend on which part holds them.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..buffer import ReplayBuffer
from ..geometry import orthonormal_prototypes, simplex_etf
from ..metrics import mean_drift, prototype_alignment

log = logging.getLogger(__name__)

# Co2L §5.3 / the FNC2 authors: the classifier of a memory-free run sees 200 stored samples
DEFAULT_PROBE_BUFFER = 200


# --- replay -----------------------------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images as uint8: uint8 unchanged, floats in [0, 1] as ``round(255 x)``. Exact for the engine's batches, which
    are ``k / 255`` (in float32, float64, float16 or bfloat16), so :func:`to_float` gives them back bit for bit."""
    if images.dtype == torch.uint8:
        return images
    return images.mul(255).round().to(torch.uint8)


def to_float(images: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 images as floats in [0, 1], computed as the engine makes a batch (default dtype, ``/ 255``), then cast
    to ``dtype`` (the dtype the engine's batches reach the method in; the default dtype when None)."""
    x = images.to(torch.get_default_dtype()).div(255)
    return x if dtype is None else x.to(dtype)


class Replay(ReplayBuffer):
    """A :class:`~protosphere.buffer.ReplayBuffer` of past images stored as uint8 (a quarter of float32's memory).

    :meth:`store` takes images as uint8 (task data) or as the engine's float batches in [0, 1] and keeps them as
    uint8 in the ``examples`` field, beside the labels and any row-aligned tensors given (DER++'s logits, kept as
    given). :meth:`draw` samples like :meth:`~protosphere.buffer.ReplayBuffer.sample` and turns the images back into
    the floats they were streamed as. :meth:`all` returns them as stored (uint8), as the classifiers' data.
    Checkpoints written when images were kept as floats load (the floats are converted back exactly).
    """

    def store(self, images: torch.Tensor, labels: torch.Tensor, **beside: torch.Tensor) -> None:
        """Offer a batch: images (B, C, H, W) uint8 or floats in [0, 1], labels (B,), row-aligned extras."""
        self.add(labels, examples=to_uint8(images), **beside)

    def draw(self, size: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """``size`` rows without replacement (all if fewer); ``examples`` as floats in [0, 1] of ``dtype``."""
        drawn = self.sample(size)
        drawn["examples"] = to_float(drawn["examples"], dtype)
        return drawn

    def load_state_dict(self, state: dict) -> None:
        examples = state["data"].get("examples")
        if examples is not None and examples.is_floating_point():  # written when images were stored as floats
            state = {**state, "data": {**state["data"], "examples": to_uint8(examples)}}
        super().load_state_dict(state)


Sampling = Literal["co2l", "reservoir", "class_balanced"]


class RepresentationMemory:
    """The stored data of a two-stage representation method: a training buffer and a classifier-only buffer.

    * ``buffer`` (``size`` rows; None when 0 = memory-free). ``sampling: co2l`` (Co2L's own): at the start of task
      t the memory shrinks evenly per class to ``capacity // #classes of tasks < t`` rows and is refilled to capacity,
      class-balanced, with task t−1's training samples; its rows are mixed into the task's shuffled data
      (:meth:`training_data`). ``reservoir`` / ``class_balanced``: :meth:`join` appends a replay batch drawn from the
      buffer to every stream batch (ER style) and then offers the stream batch to the buffer.
    * ``probe_buffer``: in memory-free runs, ``DEFAULT_PROBE_BUFFER`` (or ``eval.probe_buffer_size``) rows filled
      exactly as a training buffer of that size would be, but only the linear probe sees them (Co2L's and FNC2's
      memory-free evaluation); with a training buffer the probe's data is that buffer, and there is none.

    ``track`` is the method's :meth:`~protosphere.methods.base.Method.track_state`, so both buffers are checkpointed
    (per process under DDP).
    """

    def __init__(
        self,
        track: Callable[[str, object], None],
        size: int,
        sampling: Sampling = "co2l",
        replay_batch_size: int | None = None,
    ):
        self._track = track
        self.sampling = sampling
        self.replay_batch_size = replay_batch_size
        self.buffer = self._new_buffer(size, "buffer")
        self.probe_buffer = self._new_buffer(DEFAULT_PROBE_BUFFER if self.buffer is None else 0, "probe_buffer")

    @classmethod
    def from_config(cls, track: Callable[[str, object], None], config) -> RepresentationMemory:
        """The memory a config with ``buffer_size``, ``buffer_sampling`` and ``replay_batch_size`` asks for."""
        return cls(track, config.buffer_size, config.buffer_sampling, config.replay_batch_size)

    def _new_buffer(self, size: int, name: str) -> Replay | None:
        buffer = None
        if size > 0:
            buffer = Replay(size, "class_balanced" if self.sampling == "class_balanced" else "reservoir")
        self._track(name, buffer)
        return buffer

    def configure_evaluation(self, evaluation) -> None:
        """Take ``eval.probe_buffer_size`` (memory-free runs only; with a training buffer the probe uses that)."""
        if evaluation.probe_buffer_size is not None and self.buffer is None:
            self.probe_buffer = self._new_buffer(evaluation.probe_buffer_size, "probe_buffer")

    def begin_task(self, task) -> None:
        """Co2L sampling: shrink and refill every buffer with task t−1's data at the start of task t ≥ 1."""
        if task.index > 0 and self.sampling == "co2l":
            for buffer in (self.buffer, self.probe_buffer):
                if buffer is not None:
                    self._refill(task, buffer)

    @staticmethod
    def _refill(task, buffer: Replay) -> None:
        images, labels = task.previous[-1]
        if not buffer.is_empty():
            buffer.shrink_per_class(buffer.capacity // len(task.previous_classes))
        new, free = labels.unique().tolist(), buffer.capacity - len(buffer)
        chosen = []
        for i, c in enumerate(new):  # class-balanced refill; the remainder goes to the first classes
            rows = (labels == c).nonzero().flatten()
            quota = free // len(new) + (i < free % len(new))
            chosen.append(rows[torch.randperm(len(rows), generator=buffer.generator)[:quota]])
        chosen, device = torch.cat(chosen), task.device  # the buffer stays on the training device
        buffer.store(images[chosen].to(device), labels[chosen].to(device))

    def join(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ER-style sampling: the stream batch followed by a replay batch, then the stream batch offered to the
        buffers (the identity with Co2L sampling). The classifier-only buffer is drawn from and offered the stream
        the same way, so its generator and rows are those of a training buffer of its size, but never joins."""
        if self.sampling == "co2l":
            return images, labels
        x, y, size = images, labels, self.replay_batch_size or len(images)
        if self.buffer is not None and not self.buffer.is_empty():
            drawn = self.buffer.draw(size, images.dtype)
            x, y = torch.cat([images, drawn["examples"]]), torch.cat([labels, drawn["labels"]])
        if self.probe_buffer is not None and not self.probe_buffer.is_empty():
            self.probe_buffer.sample(size)
        for buffer in (self.buffer, self.probe_buffer):
            if buffer is not None:
                buffer.store(images, labels)
        return x, y

    def training_data(self, task) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's training data, followed by the buffer's rows with Co2L sampling."""
        if self.buffer is None or self.sampling != "co2l" or self.buffer.is_empty():
            return task.train_images, task.train_labels
        return self.evaluation_data(task)

    def evaluation_data(self, task) -> tuple[torch.Tensor, torch.Tensor]:
        """The task's training data followed by the training buffer's rows (uint8), for every classifier."""
        if self.buffer is None or self.buffer.is_empty():
            return task.train_images, task.train_labels
        stored, device = self.buffer.all(), task.train_images.device
        return (
            torch.cat([task.train_images, stored["examples"].to(device)]),
            torch.cat([task.train_labels, stored["labels"].to(device)]),
        )

    def classifier_only_rows(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The classifier-only buffer's (images, labels), or None when there is none or it is empty."""
        if self.probe_buffer is None or self.probe_buffer.is_empty():
            return None
        stored = self.probe_buffer.all()
        return stored["examples"], stored["labels"]

    def describe(self) -> dict[str, str]:
        """Which data the classifiers see, in words, for the entries this memory changes."""
        if self.buffer is not None:
            stored = f"the current task + the training buffer ({self.buffer.capacity} samples)"
            return {"ncm": stored + "; earlier means kept for classes not in it", "linear_probe": stored, "knn": stored}
        if self.probe_buffer is not None:
            return {
                "linear_probe": f"the current task + up to {self.probe_buffer.capacity} classifier-only samples "
                f"of earlier tasks (eval.probe_buffer_size; never used in representation "
                f"training)"
            }
        return {}


# --- past model and class-mean drift ----------------------------------------------------------------------------


class PastModel:
    """The frozen model of the previous task: a copy of the method's encoder + projector taken at the start of every
    task ≥ 1, before its first step, without gradients, in eval mode unless ``train_mode_bn`` (then BatchNorm
    normalises with batch statistics, as a ``copy.deepcopy`` of a model in train mode does in Co2L's and the FNC2
    authors' code).

    The copy is the method's snapshot ``name`` (:meth:`~protosphere.methods.base.Method.register_snapshot`), so it is
    checkpointed with the method; :attr:`model` is None until the first copy.
    """

    def __init__(self, method: nn.Module, train_mode_bn: bool = False, name: str = "past"):
        self._method, self.name = method, name
        method.register_snapshot(name, lambda: nn.Sequential(method.backbone, method.projector), train_mode_bn)

    def begin_task(self, task, needed: bool = True) -> None:
        """Copy the current model at the start of a task ≥ 1; ``needed`` False (distillation switched off) skips
        the copy, and :attr:`model` stays None."""
        if task.index > 0 and needed:
            self._method.take_snapshot(self.name)

    @property
    def model(self) -> nn.Module | None:
        return self._method.snapshot(self.name)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm projections (N, d) of already transformed images by the past model."""
        return F.normalize(self.model(images), dim=1)


class ClassMeanDrift:
    """The method's diagnostics after a task (:func:`class_mean_diagnostics`): each seen class's mean projection,
    its cosine to the class prototype and the drift of old classes' means since the task that introduced them.

    The means at introduction are kept in the method's ``learned_means`` buffer (num_classes, dim), checkpointed.
    """

    def __init__(self, method: nn.Module, num_classes: int, dim: int):
        self._method = method
        method.register_buffer("learned_means", torch.zeros(num_classes, dim))

    def __call__(self, task) -> dict:
        return class_mean_diagnostics(self._method, task, self._method.learned_means)


# --- fixed prototypes -------------------------------------------------------------------------------------------


class FixedPrototypes:
    """Class prototypes fixed in projection space for the whole label space, never trained.

    ``kind``: ``simplex_etf`` (K unit rows with pairwise cosine −1/(K−1), :func:`~protosphere.geometry.simplex_etf`;
    FNC2, NCT) or ``orthonormal`` (K orthonormal rows, d ≥ K, :func:`~protosphere.geometry.orthonormal_prototypes`;
    CLOP), drawn from ``seed``. :meth:`attach` registers them as the method's ``prototypes`` buffer: saved with the
    state dict, moved with the module, invisible to optimisers. The nearest-prototype classifier and the prototype
    diagnostics read that buffer.
    """

    builders = {"simplex_etf": simplex_etf, "orthonormal": orthonormal_prototypes}

    def __init__(self, kind: Literal["simplex_etf", "orthonormal"], seed: int = 0):
        if kind not in self.builders:
            raise ValueError(f"Unknown prototype kind {kind!r}; use one of {sorted(self.builders)}.")
        self.kind, self.seed = kind, int(seed)

    def build(self, num_classes: int, dim: int) -> torch.Tensor:
        """(num_classes, dim) float32 prototypes."""
        return self.builders[self.kind](num_classes, dim, seed=self.seed)

    def attach(self, module: nn.Module, num_classes: int, dim: int) -> torch.Tensor:
        """Register the prototypes as ``module.prototypes`` (a buffer) and return them."""
        module.register_buffer("prototypes", self.build(num_classes, dim))
        return module.prototypes


# --- momentum encoder and key queue ------------------------------------------------------------------------------


def momentum_at(step: int, steps: int, base: float = 0.99, final: float = 0.999) -> float:
    """Cosine momentum schedule: ``base`` at step 0, ``final`` at step ``steps``."""
    return final - (final - base) * (math.cos(math.pi * step / max(1, steps)) + 1) / 2


class MomentumEncoder(nn.Module):
    """An EMA copy of encoder + projector (MoCo; He et al., CVPR 2020), started as a copy, never given gradients.

    At step s of the S steps of a task, :meth:`update` sets ``θ_k ← m_s θ_k + (1 − m_s) θ_q`` with
    ``m_s = m_T − (m_T − m_0)(1 + cos(π s / S)) / 2`` (m_0 = ``base``, m_T = ``final``; restarts every task;
    solo-learn's ``MomentumUpdater``), and records m_s in ``momentum``. Calling the module gives unit keys
    ``normalize(projector(backbone(x)))`` without gradient.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, base: float = 0.99, final: float = 0.999):
        super().__init__()
        self.backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.projector = copy.deepcopy(projector).requires_grad_(False)
        self.base, self.final = base, final
        self.momentum = base

    @torch.no_grad()
    def update(self, step, backbone: nn.Module, projector: nn.Module) -> float:
        """EMA towards the online ``backbone`` and ``projector`` for ``step`` (a StepContext); returns m."""
        m = momentum_at(step.step, step.steps_in_task, self.base, self.final)
        online = [*backbone.parameters(), *projector.parameters()]
        target = [*self.backbone.parameters(), *self.projector.parameters()]
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, [p.detach() for p in online], alpha=1 - m)
        self.momentum = m
        return m

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(images)), dim=1)


class KeyQueue(nn.Module):
    """A FIFO of unit keys per view (MoCo's queue; PNR's past-model queue): buffer ``keys`` (views, M, d), started
    as random unit vectors, and pointer ``ptr``.

    :meth:`enqueue` writes (views, n, d) values at the pointer, wrapping around. Give it keys gathered from every
    process (the method's ``gather``): the queues then stay identical on every process. :meth:`read` returns a copy
    (the buffer is written before backward). ``clamp``: at the first step of a task, a queue longer than the task's
    training set rounded down to a multiple of the global batch shrinks to that size, keeping its most recent keys
    (:func:`clamp_to_task`); it never grows back. Without clamping, M stays (as in the official code, where a queue
    then holds several epochs' keys per image). A clamped queue loads from a checkpoint with its saved size.
    """

    def __init__(self, size: int, dim: int, views: int = 2, clamp: bool = True):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(views, size, dim), dim=2))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.clamp = clamp
        self._task_size: int | None = None

    def begin_task(self, task_size: int) -> None:
        """Remember the task's training-set size, for the clamp at the task's first step."""
        self._task_size = int(task_size) if self.clamp else None

    def read(self) -> torch.Tensor:
        return self.keys.clone()

    @torch.no_grad()
    def enqueue(self, values: torch.Tensor) -> None:
        """Write (views, n, d) ``values`` FIFO at the pointer (wrapping around)."""
        size = self.keys.shape[1]
        values = values[:, -size:]
        rows = (self.ptr + torch.arange(values.shape[1], device=self.keys.device)) % size
        self.keys[:, rows] = values.to(self.keys.dtype)
        self.ptr.copy_((self.ptr + values.shape[1]) % size)

    @torch.no_grad()
    def shrink(self, size: int) -> None:
        """Keep the ``size`` most recent keys per view (oldest first); the pointer restarts at 0."""
        current = self.keys.shape[1]
        keep = (self.ptr - size + torch.arange(size, device=self.keys.device)) % current
        self.keys.data = self.keys[:, keep].contiguous()
        self.ptr.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "keys")
        if saved is not None and saved.shape != self.keys.shape:  # clamped before the checkpoint was written
            self.keys.data = saved.new_empty(saved.shape).to(self.keys)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def clamp_to_task(queues: list[KeyQueue], batch: int, owner: str, task=None) -> None:
    """At a task's first step (``batch`` = the global batch): shrink each clamping queue that exceeds the task's
    training set, rounded down to a multiple of ``batch``, and say so once (``owner``: the method's name; ``task``: its
    TaskContext, for the message)."""
    for queue in queues:
        size, queue._task_size = queue._task_size, None
        if size is None:
            continue
        limit, current = max(batch, size // batch * batch), queue.keys.shape[1]
        if current <= limit:
            continue
        if queue is queues[0]:
            index = task.index if task is not None else 0
            log.warning(
                f"{owner}: queue_size {current} exceeds the {size} training images of task {index} "
                f"(rounded down to a multiple of the batch of {batch}: {limit}); the queues now hold "
                f"{limit} entries per view."
            )
        queue.shrink(limit)


# --- diagnostics ------------------------------------------------------------------------------------------------


@torch.no_grad()
def class_mean_diagnostics(method: nn.Module, task, learned_means: torch.Tensor, per_class: int = 256) -> dict:
    """Projection-space class means of the seen classes (≤ ``per_class`` training rows each, un-augmented, through
    ``method(transforms.eval(x))``): cosine to their prototype (when ``method.prototypes`` is set) and drift
    ``1 − cos`` of old-class means since the end of the task that introduced them. Writes the current task's means
    into ``learned_means`` (K, d) for later drift."""
    was_training = method.training
    method.eval()
    pairs = [*task.previous, (task.train_images, task.train_labels)]
    classes, device = list(task.seen_classes), learned_means.device
    means = []
    for c in classes:
        x = to_float(first_rows_of_class(pairs, c, per_class).to(device))
        means.append(F.normalize(method(method.transforms.eval(x)).mean(0), dim=0))
    means, index = torch.stack(means), {c: i for i, c in enumerate(classes)}
    out = {"classes": classes}
    if method.prototypes is not None:
        align = prototype_alignment(means, method.prototypes[classes])
        out.update(prototype_alignment=float(align.mean()), prototype_alignment_per_class=align.tolist())
    old = list(task.previous_classes)
    if old:
        drift = mean_drift(learned_means[old], means[[index[c] for c in old]])
        out.update(old_mean_drift=float(drift.mean()), old_classes=old, old_mean_drift_per_class=drift.tolist())
    current = [c for c in task.classes if c not in old]
    learned_means[current] = means[[index[c] for c in current]].to(learned_means.dtype)
    method.train(was_training)
    return out


def first_rows_of_class(pairs: list[tuple[torch.Tensor, torch.Tensor]], label: int, count: int) -> torch.Tensor:
    """The first ``count`` images of class ``label`` in the (images, labels) ``pairs`` taken in order (as in their
    concatenation), on the CPU; only those rows are read, so data held on the host or memory-mapped stay unread."""
    found, need = [], count
    for images, labels in pairs:
        if need <= 0:
            break
        rows = (labels == label).nonzero().flatten()[:need]
        if len(rows):
            found.append(images[rows.to(images.device)].cpu())
            need -= len(rows)
    return torch.cat(found) if found else pairs[0][0][:0].cpu()
