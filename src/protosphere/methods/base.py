"""What every method is: a module that turns a batch into a loss, plus hooks at task boundaries.

A method never touches devices, processes or files. The engine hands it batches of images as floats in [0, 1] on the
training device, a :class:`StepContext` saying where in the run it is, and, through :meth:`Method.install_collectives`,
a ``gather`` function that concatenates a tensor across processes with gradients (the identity on one process).
Everything a method keeps between steps (replay buffer, past model, queues, prototypes) lives in the module, so
``state_dict`` is its whole checkpoint; what differs between processes (replay buffers) is declared with
:meth:`Method.track_state` and listed by :meth:`Method.tracked_state`, which the engine saves per process.
Reusable pieces (replay memory, fixed prototypes, momentum encoder, key queue) are in :mod:`.parts`.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig
from ..data.augment import augment_view


@dataclass
class StepContext:
    task: int
    epoch: int
    step: int  # step within the task, 0-based
    steps_in_task: int
    global_step: int
    epochs_in_task: int = 1


@dataclass
class TaskContext:
    index: int
    classes: tuple[int, ...]
    seen_classes: list[int]  # every class of tasks 0..index
    num_tasks: int
    train_images: torch.Tensor  # uint8 (N, C, H, W), on the training device (on the host when ``streamed``)
    train_labels: torch.Tensor  # on the device of train_images
    previous_classes: list[int] = field(default_factory=list)  # every class of tasks 0..index-1
    previous: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # earlier tasks' training data
    device: torch.device | None = None  # the training device (default: that of train_images)
    streamed: bool = False  # the task did not fit the device budget: its data stay on the host, copied per batch

    def __post_init__(self):
        if self.device is None:
            self.device = self.train_images.device

    @classmethod
    def of(cls, scenario, index: int, device=None, stream: bool = False) -> TaskContext:
        """The context of task ``index`` of a :class:`~protosphere.data.scenarios.Scenario`: its training data on
        ``device``, or left where the scenario holds them (the host) when ``stream`` (earlier tasks' data stay on
        the host)."""
        task = scenario.tasks[index]
        place = (lambda x: x) if stream else (lambda x: x.to(device))
        return cls(
            index=index,
            classes=tuple(task.classes),
            seen_classes=scenario.classes_up_to(index),
            num_tasks=scenario.num_tasks,
            train_images=place(task.train_images),
            train_labels=place(task.train_labels),
            previous_classes=scenario.classes_up_to(index - 1) if index > 0 else [],
            previous=[(p.train_images, p.train_labels) for p in scenario.tasks[:index]],
            device=torch.device(device) if device is not None else task.train_images.device,
            streamed=stream,
        )

    def seen_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images and labels of tasks 0..index (earlier tasks moved to this task's data's device: the
        training device, or the host for a streamed task)."""
        device = self.train_images.device
        images = torch.cat([x.to(device) for x, _ in self.previous] + [self.train_images])
        labels = torch.cat([y.to(device) for _, y in self.previous] + [self.train_labels])
        return images, labels

    def seen_mask(self, num_classes: int, device=None) -> torch.Tensor:
        mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
        mask[self.seen_classes] = True
        return mask


@dataclass
class StepOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Transforms:
    train: Callable[[torch.Tensor], torch.Tensor]  # augmentation + normalisation (view 0's, for per-view recipes)
    eval: Callable[[torch.Tensor], torch.Tensor]  # normalisation only

    def train_view(self, images: torch.Tensor, view: int) -> torch.Tensor:
        """View ``view`` (0-based) of the training augmentation: its own pipeline when the recipe is asymmetric
        (:class:`~protosphere.data.augment.ViewTransforms`, e.g. blur 1.0 / 0.1), else ``train(images)``."""
        return augment_view(self.train, images, view)


def frozen_copy(module: nn.Module, train_mode_bn: bool = False) -> nn.Module:
    """A detached snapshot for distillation: no gradients, eval mode unless train-mode BatchNorm is asked for."""
    snapshot = copy.deepcopy(module)
    for parameter in snapshot.parameters():
        parameter.requires_grad_(False)
    snapshot.train(train_mode_bn)
    snapshot.keep_train_mode = train_mode_bn
    return snapshot


class Method(nn.Module):
    """Base class. Subclasses set ``config_class`` and implement :meth:`training_step` and :meth:`logits`."""

    config_class: type[MethodConfig] = MethodConfig
    # the shipped config whose optimizer/train/eval/method sections are this method's defaults (its paper's setting at
    # CPU scale): `method: {name: fnc2}` alone then trains as configs/seq-fmnist/fnc2.yaml does; None: generic defaults
    recipe: str | None = None
    views_per_image = 1  # augmented views of each image a training step uses (2: a contrastive pair)

    @classmethod
    def training_views(cls, config: MethodConfig) -> int:
        """Views of each image one training step of a method with ``config`` uses."""
        return cls.views_per_image

    unused_parameters: bool = False  # some parameters get no gradient in some steps (see has_unused_parameters)
    # state_dict keys renamed since checkpoints were first written: old key (or old prefix ending in ".") -> new, so
    # that earlier checkpoints still load
    renamed_state: dict[str, str] = {}

    @classmethod
    def resolve_config(cls, config: MethodConfig, scenario) -> MethodConfig:
        """The config the method is built with: ``config`` with what only the scenario knows filled in (a copy; the
        run's own config, its config.yaml and fingerprint keep the value as written). Default: ``config`` itself."""
        return config

    @classmethod
    def has_unused_parameters(cls, config: MethodConfig) -> bool:
        """Whether a training step may leave parameters without a gradient (e.g. a predictor idle in task 0), so that
        DDP must look for them (``ddp_find_unused_parameters_true``). Default: the class's ``unused_parameters``."""
        return cls.unused_parameters

    def __init__(self, config: MethodConfig, backbone: nn.Module, num_classes: int, transforms: Transforms):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.num_classes = num_classes
        self.transforms = transforms
        self.task: TaskContext | None = None
        # kept out of the module tree (so DDP and optimisers never see them) but saved with the state_dict
        self._tracked: dict = {}
        self._snapshot_sources: dict[str, Callable[[], nn.Module]] = {}
        self._snapshots: dict[str, nn.Module] = {}
        # seconds spent fitting each classifier in the last prepare_evaluation (see fit_timer)
        self.fit_seconds: dict[str, float] = {}
        self.install_collectives(gather=lambda tensor: tensor, synchronize=lambda: None, to_device=lambda x: x)

    def install_collectives(
        self,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        synchronize: Callable[[], None] | None = None,
        to_device: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """How the engine connects the method to its processes and device (the only way it does).

        ``gather(tensor)`` concatenates a tensor's rows across processes with gradients (the identity on one
        process; :func:`protosphere.distributed.gather_with_grad` under DDP); ``synchronize()`` waits until the
        device has finished queued work, so that :meth:`fit_timer` times asynchronous devices to completion;
        ``to_device(batch)`` brings a batch of stored rows (a slice of a task's data that may wait on the host, see
        :attr:`TaskContext.streamed`) to the training device (the identity where it is there already;
        :func:`protosphere.data.streaming.to_device` in a run). An argument left at None keeps what is installed."""
        if gather is not None:
            self.gather = gather
        if synchronize is not None:
            self.synchronize = synchronize
        if to_device is not None:
            self.to_device = to_device

    # state kept outside parameters -----------------------------------------------------------------------------
    def track_state(self, name: str, obj) -> None:
        """Save ``obj`` (anything with state_dict/load_state_dict, e.g. a replay buffer) with the method, under
        ``name``; None forgets what was tracked under that name. Tracked state is kept per process under DDP. An
        object that keeps tensors on the training device also has ``to(device)``, which :meth:`restore_state` calls."""
        if obj is None:
            self._tracked.pop(name, None)
        else:
            self._tracked[name] = obj

    def tracked_state(self) -> dict:
        """Name → object of the state declared with :meth:`track_state`, in declaration order (a copy): what the
        engine checkpoints for every process and restores onto the training device."""
        return dict(self._tracked)

    def restore_state(self, state: dict, own_tracked: dict | None = None, device: torch.device | None = None) -> None:
        """Continue from a checkpoint: load ``state`` (a :meth:`state_dict`), then ``own_tracked`` (this process's
        own tracked state, under DDP: the state holds rank 0's buffers) and put the tracked objects on ``device``
        (checkpoints load on the CPU, while a buffer keeps its rows where the method trains)."""
        self.load_state_dict(state)
        for name, obj_state in (own_tracked or {}).items():
            self._tracked[name].load_state_dict(obj_state)
        if device is not None:
            for obj in self._tracked.values():
                move = getattr(obj, "to", None)
                if move is not None:  # an object that keeps no tensors has nothing to place
                    move(device)

    def register_snapshot(self, name: str, source: Callable[[], nn.Module], train_mode_bn: bool = False) -> None:
        """Declare a frozen copy (e.g. the past model) that :meth:`take_snapshot` refreshes from ``source()``."""
        self._snapshot_sources[name] = (source, train_mode_bn)

    def take_snapshot(self, name: str) -> nn.Module:
        source, train_mode_bn = self._snapshot_sources[name]
        self._snapshots[name] = frozen_copy(source(), train_mode_bn)
        return self._snapshots[name]

    def snapshot(self, name: str) -> nn.Module | None:
        return self._snapshots.get(name)

    def get_extra_state(self):
        return {
            "tracked": {name: obj.state_dict() for name, obj in self._tracked.items()},
            "snapshots": {name: module.state_dict() for name, module in self._snapshots.items()},
        }

    def set_extra_state(self, state) -> None:
        for name, obj_state in state["tracked"].items():
            self._tracked[name].load_state_dict(obj_state)
        self._snapshots = {}
        for name, module_state in state["snapshots"].items():
            self.take_snapshot(name).load_state_dict(module_state)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in self.renamed_state.items():
            for key in [
                k for k in state_dict if k == prefix + old or (old.endswith(".") and k.startswith(prefix + old))
            ]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for module in self._snapshots.values():  # follow .to(device) / .double() like registered modules
            module._apply(fn, *args, **kwargs)
        return self

    # hooks -----------------------------------------------------------------------------------------------------
    def configure_evaluation(self, evaluation, seed: int = 0) -> None:
        """Take the run's evaluation settings (``eval:`` section) that change what a method stores or how it fits
        its classifiers, e.g. a classifier-only buffer, and the run's seed; called once after construction.
        Default: nothing to take."""

    def classifier_data(self) -> dict[str, str]:
        """Which data each classifier was fitted on, in words; empty when a method says nothing."""
        return {}

    def begin_task(self, task: TaskContext) -> None:
        self.task = task

    def training_data(self, task: TaskContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The (images, labels) the engine shuffles into this task's batches."""
        return task.train_images, task.train_labels

    def training_step(self, images: torch.Tensor, labels: torch.Tensor, step: StepContext) -> StepOutput:
        raise NotImplementedError

    def end_task(self, task: TaskContext) -> None:
        pass

    # evaluation ------------------------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features of un-augmented images (floats in [0, 1])."""
        return self.backbone(self.transforms.eval(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare_evaluation(self, task: TaskContext) -> None:
        """Fit whatever the classifiers need (class means, a linear probe) after ``task``; eval mode, no grad."""

    @contextlib.contextmanager
    def fit_timer(self, name: str):
        """``with self.fit_timer("linear_probe"): ...`` adds the block's wall time to ``fit_seconds[name]``."""
        self.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.synchronize()
            self.fit_seconds[name] = self.fit_seconds.get(name, 0.0) + time.perf_counter() - start

    def classifiers(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Named classifiers to evaluate after each task; the first one is the headline."""
        return {"head": self.logits}

    def diagnostics(self, task: TaskContext) -> dict | None:
        """Extra measurements after ``task`` (e.g. prototype alignment, drift of old-class means); called once per
        task, after evaluation, without gradients. None when a method has none."""
        return None

    def classifier_weights(self) -> torch.Tensor | None:
        """(K, d) weights of the feature classifier, for the NC3/NC4 metrics (None when there is none)."""
        return None


class SupervisedMethod(Method):
    """A backbone with a linear classifier over the whole label space (the usual continual-learning baselines)."""

    def __init__(self, config, backbone, num_classes, transforms):
        super().__init__(config, backbone, num_classes, transforms)
        self.classifier = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, normalized_images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(normalized_images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self(self.transforms.eval(images))

    def classifier_weights(self) -> torch.Tensor:
        return self.classifier.weight

    def cross_entropy(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented forward pass and CE loss; returns (loss, logits)."""
        logits = self(self.transforms.train(images))
        return F.cross_entropy(logits, labels), logits
