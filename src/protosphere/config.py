"""Run configuration: YAML validated into typed pydantic models, with dotted ``key=value`` overrides.

A run is described by one :class:`RunConfig`. Every section forbids unknown keys; a misspelt key is reported with the
closest valid key, an ill-typed or out-of-range value with the key, the value and the rule it breaks — one sentence,
raised as :class:`~protosphere.errors.ConfigError`.

Method-specific settings live under ``method:``; the method named by ``method.name`` supplies the schema for the rest of
that section. Methods, datasets, backbones and augmentations are accepted by name from the registries of
:mod:`protosphere.registry`, so whatever user code registers is a valid value.

A config file may start from another: ``base: fnc2.yaml`` (a path relative to the including file) is read first, then
the file's own keys are deep-merged on top (mappings merge key by key, any other value replaces the base's). Bases may
have bases of their own.

Shipped recipes: the configs of the package (``protosphere/configs/``, the repository's ``configs/``) are found by name
wherever protosphere is installed: ``default``, ``seq-fmnist/fnc2``, ``paper/fnc2-seq-cifar10-200`` (a file path that
exists always wins). Each method's recipe is one of them (``Method.recipe``): its ``optimizer``, ``train``, ``eval``
and ``method`` sections are the defaults beneath any config that names the method, so ``method: {name: fnc2}`` trains
FNC2 as its paper's CPU setting does, not with generic defaults.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import core_schema

from .errors import ConfigError, quote, shorten
from .registry import AUGMENTATIONS, BACKBONES, CORRUPTIONS, DATASETS, METHODS, Registry, UnknownNameError


class Registered:
    """Annotation of a ``str`` field whose value must be a name in ``registry`` (checked at validation, so names
    registered after this module was imported count)."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: str) -> str:
        if value not in self.registry:
            raise ValueError(self.registry.unknown(value))
        return value


SIZE_UNITS = {
    "": 1,
    "b": 1,
    **{p + "b": 1000**i for i, p in enumerate("kmgtp", 1)},
    **{p + "ib": 1024**i for i, p in enumerate("kmgtp", 1)},
}
SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``512MB`` (SI: kB, MB, GB, TB, PB are powers of 1000), ``2GiB``
    (binary: KiB, MiB, GiB, TiB, PiB are powers of 1024), ``1.5GB`` or ``4096`` (units are case-insensitive; a
    fractional byte count is rounded down). Anything else raises ValueError naming the accepted forms."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = SIZE.fullmatch(value) if isinstance(value, str) else None
    unit = SIZE_UNITS.get(match.group(2).lower()) if match else None
    if unit is None:
        raise ValueError(
            "a size must be a number of bytes (a non-negative integer) or a number with a unit: kB, MB, GB, TB "
            "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 512MB or 2GiB"
        )
    return int(float(match.group(1)) * unit)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dataset: Annotated[str, Registered(DATASETS)] = Field(
        "fashion_mnist", description="dataset (`protosphere datasets` shows which are present)"
    )
    domains: list[str] | None = Field(
        None,
        description="DomainNet: its domains in task order, one task each "
        "(default: clipart, infograph, painting, quickdraw, real, "
        "sketch); needs scenario.kind=domain_il",
    )
    root: str | None = Field(
        None, description="folder holding the dataset (default: $PROTOSPHERE_DATA, system packages, user cache)"
    )
    download: bool = Field(
        False,
        description="download a missing dataset from its official source (or run `protosphere datasets --ensure NAME`)",
    )
    train_fraction: float = Field(1.0, gt=0, le=1, description="class-stratified fraction of the training set to use")
    image_size: int | None = Field(None, ge=8, description="resize for image-folder datasets")
    workers: int | None = Field(
        None,
        ge=1,
        description="processes that decode an image-folder or zip dataset on its first load, into the decoded "
        "cache later loads memory-map (default: the usable CPU cores)",
    )
    device_budget: int | str | None = Field(
        None,
        description="bytes of dataset images kept on the training device at once, e.g. 512MB or 2GiB (default: "
        "half of the device's free memory; on the CPU, of the available RAM); a task whose training images do not "
        "fit is copied to the device one batch per step, with the same batches",
    )

    @field_validator("device_budget", mode="before")
    @classmethod
    def _size(cls, value):
        if value is not None:
            parse_size(value)  # refuse anything that is not a size now; the value is kept as written
        return value.strip() if isinstance(value, str) else value

    @property
    def device_budget_bytes(self) -> int | None:
        """``device_budget`` in bytes (None: the default, a fraction of the device's free memory)."""
        return None if self.device_budget is None else parse_size(self.device_budget)


class ScenarioConfig(Section):
    kind: Literal["class_il", "data_il", "domain_il"] = Field(
        "class_il", description="class-, data- or domain-incremental"
    )
    num_tasks: int = Field(5, ge=1, description="number of tasks the data is split into")
    classes_per_task: list[int] | None = Field(None, description="classes of each task (default: an even split)")
    class_order: list[int] | None = Field(None, description="order in which classes arrive (default: 0, 1, 2, ...)")
    shuffle_classes: bool = Field(False, description="shuffle the class order with the run's seed")
    domain: Literal["rotation", "permutation"] = Field("rotation", description="domain-IL: what changes between tasks")
    max_rotation: float = Field(180.0, ge=0, le=360, description="domain-IL rotation: angle of the last task (degrees)")
    imbalance_ratio: float | None = Field(None, gt=0, le=1, description="long-tail profile n_min/n_max (e.g. 0.01)")

    @model_validator(mode="after")
    def _consistent(self) -> ScenarioConfig:
        if self.classes_per_task is not None:
            if len(self.classes_per_task) != self.num_tasks:
                raise ValueError(
                    f"classes_per_task has {len(self.classes_per_task)} entries but num_tasks is {self.num_tasks}"
                )
            if any(c < 1 for c in self.classes_per_task):
                raise ValueError("every entry of classes_per_task must be at least 1")
        if self.class_order is not None and self.shuffle_classes:
            raise ValueError("give either class_order or shuffle_classes=true, not both")
        return self


class ModelConfig(Section):
    backbone: Annotated[str, Registered(BACKBONES)] = Field("small_cnn", description="encoder network")
    mlp_hidden: list[int] = Field(default_factory=lambda: [100, 100], description="hidden widths of the mlp backbone")
    channels_last: bool = Field(True, description="channels-last memory layout for convolutions (faster)")
    init: Literal["default", "xavier"] = Field(
        "default",
        description="weight initialisation: torch's default, or Mammoth's Xavier-uniform with zero biases "
        "on every Linear layer (backbone and heads)",
    )
    stem: Literal["cifar", "cifar_pad2", "imagenet"] = Field(
        "cifar",
        description="ResNet-18 stem: cifar (3x3 stride 1, no max-pool: SupCon/Co2L/Mammoth), cifar_pad2 (the same "
        "conv with padding 2: solo-learn/CaSSLe/PNR on CIFAR) or imagenet (7x7 stride 2, BN, ReLU, 3x3 stride-2 "
        "max-pool: torchvision/solo-learn, for 224-px images)",
    )

    @model_validator(mode="after")
    def _stem_for_resnets(self) -> ModelConfig:
        if self.stem != "cifar" and self.backbone in ("mlp", "small_cnn"):
            raise ValueError(
                f"stem={self.stem} applies to the ResNet-18 backbones (resnet18, resnet18_reduced), not to "
                f"{self.backbone}; drop model.stem or choose a ResNet backbone"
            )
        return self


class OptimizerConfig(Section):
    name: Literal["sgd", "adam", "adamw", "lars"] = Field("sgd", description="optimiser")
    lr: float = Field(0.05, gt=0, description="base learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD/LARS momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    scheduler: Literal["none", "cosine", "step"] = Field("none", description="learning-rate schedule within each task")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs at the start of each task")
    milestones: list[float] = Field(
        default_factory=lambda: [0.6, 0.75, 0.9],
        description="step schedule: fractions of a task at which the lr decays",
    )
    gamma: float = Field(0.2, gt=0, le=1, description="step schedule: decay factor")


def _pair(name: str, value, low_open: float, high: float | None):
    """(min, max) with ``low_open < min ≤ max`` (and ``max ≤ high`` when given)."""
    if value is None:
        return value
    lo, hi = value
    if not (lo > low_open and lo <= hi and (high is None or hi <= high)):
        bound = f"0 < min ≤ max ≤ {high:g}" if high is not None else "0 < min ≤ max"
        raise ValueError(f"{name} must be [min, max] with {bound}")
    return value


class AugmentViewConfig(Section):
    """The augmentation settings of one view; a key left out (null) takes the shared value of ``train.augment``."""

    scale: tuple[float, float] | None = Field(None, description="RandomResizedCrop area fraction [min, max]")
    ratio: tuple[float, float] | None = Field(None, description="RandomResizedCrop aspect ratio w/h [min, max]")
    jitter: tuple[float, float, float, float] | None = Field(
        None, description="ColorJitter strengths [brightness, contrast, saturation, hue]"
    )
    jitter_p: float | None = Field(None, ge=0, le=1, description="probability of the colour jitter")
    grayscale_p: float | None = Field(None, ge=0, le=1, description="probability of grayscale (RGB data)")
    blur_p: float | None = Field(None, ge=0, le=1, description="probability of the Gaussian blur")
    blur_sigma: tuple[float, float] | None = Field(None, description="Gaussian blur sigma range [min, max] (pixels)")
    blur_kernel: int | None = Field(
        None, ge=1, description="Gaussian blur kernel side (odd; default image_size // 20 * 2 + 1: 23 at 224 px)"
    )
    solarize_p: float | None = Field(None, ge=0, le=1, description="probability of solarization (x ≥ 0.5 → 1 − x)")

    @field_validator("scale", "ratio", "blur_sigma", "jitter", mode="before")
    @classmethod
    def _length(cls, value, info):
        size = 4 if info.field_name == "jitter" else 2
        if isinstance(value, (list, tuple)) and len(value) != size:
            what = "[brightness, contrast, saturation, hue]" if size == 4 else "[min, max]"
            raise ValueError(f"{info.field_name} must be {what}, {size} numbers; got {len(value)}")
        return value

    @field_validator("scale")
    @classmethod
    def _scale(cls, value):
        return _pair("scale", value, 0.0, 1.0)

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value):
        return _pair("ratio", value, 0.0, None)

    @field_validator("blur_sigma")
    @classmethod
    def _sigma(cls, value):
        return _pair("blur_sigma", value, 0.0, None)

    @field_validator("jitter")
    @classmethod
    def _jitter(cls, value):
        if value is not None and (min(value[:3]) < 0 or not 0 <= value[3] <= 0.5):
            raise ValueError("jitter must be [brightness, contrast, saturation, hue], each ≥ 0, hue ≤ 0.5")
        return value

    @field_validator("blur_kernel")
    @classmethod
    def _odd_kernel(cls, value):
        if value is not None and value % 2 == 0:
            raise ValueError("the blur kernel side must be odd, so that it is centred on the pixel")
        return value

    def overrides(self) -> dict[str, Any]:
        """The keys this view sets, as build_augmentation options."""
        return {k: v for k, v in self.model_dump().items() if v is not None and k in AugmentViewConfig.model_fields}


class AugmentConfig(AugmentViewConfig):
    """Options of the contrastive augmentation (see ``protosphere.data.augment``), shared by every view, with
    per-view overrides in ``views`` (solo-learn's asymmetric recipes: e.g. blur 1.0 / 0.1, solarization 0.0 / 0.2)."""

    scale: tuple[float, float] = Field((0.2, 1.0), description="RandomResizedCrop area fraction [min, max]")
    ratio: tuple[float, float] = Field(
        (3.0 / 4.0, 4.0 / 3.0), description="RandomResizedCrop aspect ratio w/h [min, max]"
    )
    jitter: tuple[float, float, float, float] = Field(
        (0.4, 0.4, 0.4, 0.1), description="ColorJitter strengths [brightness, contrast, saturation, hue]"
    )
    jitter_p: float = Field(0.8, ge=0, le=1, description="probability of the colour jitter")
    grayscale_p: float = Field(0.2, ge=0, le=1, description="probability of grayscale (RGB data)")
    blur_p: float = Field(0.0, ge=0, le=1, description="probability of the Gaussian blur (0: no blur)")
    blur_sigma: tuple[float, float] = Field(
        (0.1, 2.0), description="Gaussian blur sigma range [min, max] (pixels), drawn uniformly per image"
    )
    blur_kernel: int | None = Field(
        None, ge=1, description="Gaussian blur kernel side (odd; default image_size // 20 * 2 + 1: 23 at 224 px)"
    )
    solarize_p: float = Field(0.0, ge=0, le=1, description="probability of solarization (x ≥ 0.5 → 1 − x; 0: none)")
    views: list[AugmentViewConfig] = Field(
        default_factory=list,
        description="per-view overrides (a key left out takes the shared value), none or one entry for each of the "
        "two views, e.g. "
        "[{blur_p: 1.0}, {blur_p: 0.1, solarize_p: 0.2}]",
    )

    @field_validator("views")
    @classmethod
    def _two_views(cls, value):
        if len(value) not in (0, 2):
            raise ValueError(
                f"views has {len(value)} entr{'y' if len(value) == 1 else 'ies'}; give one entry per view of "
                "the two-view methods (2), or none for the same augmentation in both"
            )
        return value

    def options(self) -> dict[str, Any]:
        """The shared options that differ from the defaults (what build_augmentation needs to be told)."""
        default = AugmentConfig().model_dump()
        return {k: v for k, v in self.model_dump().items() if k != "views" and v != default[k]}

    def view_options(self) -> list[dict[str, Any]] | None:
        """Per view, the keys it overrides (None without per-view settings)."""
        return [view.overrides() for view in self.views] or None


class TrainConfig(Section):
    epochs: int = Field(1, ge=1, description="epochs per task")
    first_task_epochs: int | None = Field(None, ge=1, description="epochs of the first task (default: epochs)")
    batch_size: int = Field(32, ge=1, description="global training batch (split across processes under DDP)")
    augmentation: Annotated[str, Registered(AUGMENTATIONS)] = Field(
        "supervised", description="training augmentation recipe"
    )
    normalize: bool = Field(
        True,
        description="normalise inputs by the dataset's mean and std (training and "
        "evaluation); false keeps pixels in [0, 1], as Mammoth's ToTensor()-only inputs",
    )
    flip: bool = Field(True, description="random horizontal flips in the augmentation")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig,
        description="contrastive augmentation options: crop scale and ratio, jitter strengths and probability, "
        "grayscale, Gaussian blur and solarization probabilities, and per-view overrides",
    )
    log_every_n_steps: int = Field(50, ge=1, description="training loss, lr and img/s logged every N steps")
    checkpoint_every_n_steps: int | None = Field(None, ge=1, description="also checkpoint within a task every N steps")
    keep_checkpoints: bool = Field(
        False,
        description="keep every task-<t>.ckpt; by default only last.ckpt and the latest task-<t>.ckpt are "
        "kept (what --resume and its fallback need)",
    )

    @model_validator(mode="after")
    def _augment_options_need_contrastive(self) -> TrainConfig:
        if self.augmentation in ("none", "supervised") and self.augment != AugmentConfig():
            raise ValueError(
                f"train.augment sets options of the contrastive augmentation, but train.augmentation is "
                f"{self.augmentation!r}, which does not use them; set train.augmentation=contrastive or drop "
                f"train.augment"
            )
        return self

    def epochs_for(self, task: int) -> int:
        return self.first_task_epochs if task == 0 and self.first_task_epochs is not None else self.epochs


class EvalConfig(Section):
    batch_size: int = Field(256, ge=1, description="evaluation batch size")
    random_init_baseline: bool = Field(True, description="evaluate the untrained model first (FWT's baseline)")
    neural_collapse: bool = Field(True, description="NC metrics on test features after every task")
    per_epoch: bool = Field(False, description="also evaluate accuracy and NC metrics after every epoch")
    corruptions: list[str] | None = Field(
        None, description="corruptions applied to the test set after the last task; 'all' for the whole suite"
    )
    corruption_severities: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], description="corruption severities 1..5"
    )
    corruption_classifiers: Literal["headline", "all"] = Field(
        "headline", description="which classifiers the corruption suite evaluates (each one costs a full pass)"
    )
    embeddings: bool = Field(True, description="save test embeddings for the report's sphere picture")
    probe_buffer_size: int | None = Field(
        None,
        ge=0,
        description="two-stage methods (co2l, fnc2, nct) without a training buffer: samples stored only "
        "for the linear probe, filled as a training buffer of that size would be (default 200, Co2L's protocol; 0 = "
        "the last task alone); with a training buffer the probe uses that buffer",
    )
    probe_augment: bool | None = Field(
        None,
        description="two-stage methods: every linear-probe epoch encodes freshly augmented copies of the probe's "
        "training images (the training augmentation, one view, under no_grad), as the Co2L and FNC2 authors' linear "
        "stages do; false: each image encoded once, un-augmented. Default: the method's protocol (true for co2l and "
        "fnc2)",
    )
    report: Literal["inline", "background", "off"] = Field(
        "inline",
        description="report.html and plots: written before the run returns (inline), by a low-priority "
        "process started when results.json is written, so the run returns at once (background), or not at all "
        "(off; `protosphere report RUN_DIR` writes them later)",
    )

    @field_validator("report", mode="before")
    @classmethod
    def _report_off(cls, value):
        return "off" if value is False else value  # YAML reads a bare `off` (eval.report=off) as false

    @field_validator("corruptions", mode="before")
    @classmethod
    def _known_corruptions(cls, value):
        known = CORRUPTIONS.in_order()
        if value == "all":
            return list(known)

        for name in value or []:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}" if close else f"choose from {', '.join(known)}"
                raise ValueError(f"unknown corruption {name!r}; {hint}")
        return value

    @field_validator("corruption_severities")
    @classmethod
    def _severities(cls, value):
        if not value or any(s not in (1, 2, 3, 4, 5) for s in value):
            raise ValueError("severities must be a non-empty list of integers 1..5")
        return value


class FabricConfig(Section):
    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = Field("auto", description="device type")
    devices: int | str = Field(1, description="devices per node (number, list or 'auto')")
    num_nodes: int = Field(1, ge=1, description="nodes (multi-node under torchrun or SLURM)")
    strategy: str = Field("auto", description="lightning-fabric strategy, e.g. ddp")
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"] = Field(
        "32-true", description="numeric precision"
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")


class WandbConfig(Section):
    project: str = Field("protosphere", description="Weights & Biases project")
    mode: Literal["offline", "online"] = Field(
        "offline",
        description="offline: files under the run folder only (sync later with `wandb sync`); online: "
        "stream to the W&B server",
    )
    entity: str | None = Field(None, description="W&B team or user (default: yours)")
    group: str | None = Field(None, description="W&B group, e.g. one per compare (default: none)")
    tags: list[str] = Field(default_factory=list, description="W&B tags")


class LoggingConfig(Section):
    """Experiment trackers beside metrics.csv (which is always written): they log the same values."""

    tensorboard: bool = Field(
        False, description="TensorBoard event files under <run>/tensorboard (pip install protosphere[tensorboard])"
    )
    wandb: WandbConfig | None = Field(
        None, description="Weights & Biases, e.g. {project: p, mode: offline} or true (pip install protosphere[wandb])"
    )

    @field_validator("wandb", mode="before")
    @classmethod
    def _wandb_switch(cls, value):
        if value is True:
            return {}
        if value is False:
            return None
        return value


class MethodConfig(Section):
    """Base of every method's settings; ``name`` selects the method and its schema."""

    name: str = "er"


RUN_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")  # file systems allow 255 bytes a name; room for suffixes


def plain_name(text: str) -> str:
    """``text`` as a run name: every run of other characters (spaces, ``+``, ``/``) becomes one ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


class RunConfig(Section):
    name: str | None = Field(
        None, description="the run's folder under output_dir, one plain folder name (default: <config file>-seed<seed>)"
    )
    output_dir: str = Field("runs", description="where run folders are written (`~` is your home folder)")
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="one seed for data order, augmentation, init and class order (0 to 2**32-1, the "
        "range every generator accepts as it is)",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: SerializeAsAny[MethodConfig] = Field(default_factory=MethodConfig, validate_default=True)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    fabric: FabricConfig = Field(default_factory=FabricConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("output_dir")
    @classmethod
    def _home_folder(cls, value: str) -> str:
        return os.path.expanduser(value)  # `~/runs` is the home folder's runs, not a folder named `~`

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, value: str | None) -> str | None:
        if value is not None and (not RUN_NAME.fullmatch(value) or value in (".", "..")):
            raise ValueError(
                "a run name is one plain folder name (letters, digits and `._-`, not `.` or `..`, at "
                "most 200 characters); put other folders in output_dir=..."
            )
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method_schema(cls, value: Any) -> Any:
        if isinstance(value, MethodConfig):
            value = value.model_dump()
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError("method must be a mapping with at least `name`")
        name = value.get("name", MethodConfig.model_fields["name"].default)
        try:
            schema = METHODS.get(name).config_class
        except UnknownNameError as exc:  # not a ValueError: the message names `method.name`, not the whole section
            raise ConfigError(f"Invalid value for `method.name` (got {name!r}): {exc}") from None
        return schema.model_validate(value)

    @model_validator(mode="after")
    def _method_probe_protocol(self) -> RunConfig:
        if self.eval.probe_augment is None:  # the method's paper protocol, written out (and so in the fingerprint)
            default = bool(getattr(METHODS.get(self.method.name), "probe_augment_default", False))
            self.eval = self.eval.model_copy(update={"probe_augment": default})
        return self


# --------------------------------------------------------------------------------------------------------------------
# Loading, overrides and readable errors


def _section_at(model: type[BaseModel], loc: tuple, data: dict) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of `loc` (following the method's own schema)."""
    current: type[BaseModel] = model
    node: Any = data
    for key in loc[:-1]:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and key < len(node) else None
            continue
        if current is RunConfig and key == "method":
            name = (node or {}).get("method", {}).get("name", "er") if isinstance(node, dict) else "er"
            try:
                current = METHODS.get(name).config_class
            except UnknownNameError:
                current = MethodConfig
            node = node.get("method") if isinstance(node, dict) else None
            continue
        field = current.model_fields.get(key)
        if field is None:
            return None
        sub = _model_in(field.annotation)
        if sub is None:
            return None
        current = sub
        node = node.get(key) if isinstance(node, dict) else None
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section class a field holds: the annotation itself, or inside ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _describe(error: dict, data: dict) -> str:
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-")))
    dotted = ".".join(str(p) for p in loc) or "config"
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _section_at(RunConfig, loc, data)
        valid = sorted(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        parent = ".".join(str(p) for p in loc[:-1])
        hint = (
            f"did you mean `{(parent + '.') if parent else ''}{close[0]}`?"
            if close
            else (f"valid keys here: {', '.join(valid)}." if valid else "remove it.")
        )
        return f"Unknown config key `{dotted}`: {hint}"
    given = error.get("input")
    given_text = "" if isinstance(given, dict) else f" (got {quote(given)})"
    message = error["msg"]
    if kind == "literal_error":
        return f"Invalid value for `{dotted}`{given_text}: {message[0].lower() + message[1:]}."
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return f"Invalid value for `{dotted}`{given_text}: {message[0].lower() + message[1:]}."


def validate_config(data: dict, source: str = "config") -> RunConfig:
    """Validate a plain mapping into a :class:`RunConfig`, turning pydantic errors into one readable ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source} must be a YAML mapping of sections (data, scenario, method, ...), got {type(data).__name__}."
        )
    data = with_method_recipe(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0], data)
        more = (
            f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after fixing this)"
            if len(errors) > 1
            else ""
        )
        raise ConfigError(f"{source}: {first}{more}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"Override `{shorten(text)}` is not of the form key=value (e.g. train.epochs=2).")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"Override `{shorten(text)}` has an empty key; write dotted keys such as method.buffer_size=500."
        )
    if not raw.strip():  # `method=` would reset a whole section to its defaults, `train.epochs=` fail obscurely
        raise ConfigError(
            f"Override `{shorten(text)}` has no value after `=`; give one (e.g. {shorten(key, 40)}=...), "
            f"or write {shorten(key, 40)}=null to unset it."
        )
    try:
        value = load_yaml(raw)
    except ConfigError as exc:
        raise ConfigError(f"Override `{shorten(text)}`: {exc}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted ``key=value`` overrides (values parsed as YAML) to a nested mapping, in order."""
    data = yaml.safe_load(yaml.safe_dump(data)) if data else {}
    for text in overrides:
        path, value = parse_override(text)
        section(data, path[:-1], text)[path[-1]] = value
    return data


def section(data: dict, path: list[str], text: str) -> dict:
    """The nested mapping at ``path`` in ``data``, creating missing sections; ``text`` names the override in the
    error when a step of the path is a plain value."""
    node = data
    for part in path:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"Override `{shorten(text)}`: `{part}` is a value, not a section, so it has no sub-keys.")
        node = child
    return node


MAX_YAML_NODES = 100_000  # the values of a config once its aliases are expanded; real configs hold a few hundred


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing what validates but should not: a key given twice in one mapping (YAML keeps the
    last one silently) and aliases that expand into more than :data:`MAX_YAML_NODES` values (a "billion laughs"
    document of a few hundred bytes that becomes gigabytes once merged, dumped or validated)."""

    def compose_document(self):
        node = super().compose_document()
        expanded = expanded_size(node)
        if expanded > MAX_YAML_NODES:
            raise ConfigError(
                f"its aliases (`*name`) expand into {expanded:,} values, more than the "
                f"{MAX_YAML_NODES:,} a config may hold; write the values out or use fewer nested "
                f"aliases."
            )
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden key by key
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, (str, int, float, bool)) and key in lines:
                    raise ConfigError(
                        f"the key `{shorten(key)}` appears twice in one mapping (lines {lines[key]} "
                        f"and {line}), and only the last would count; keep one of them."
                    )
                if isinstance(key, (str, int, float, bool)):
                    lines[key] = line
        return super().construct_mapping(node, deep=deep)


def expanded_size(node) -> int:
    """How many nodes ``node`` stands for once every alias is expanded, counted without expanding (an alias is the
    same node object, so each distinct node is sized once)."""
    sizes: dict[int, int] = {}

    def size(n) -> int:
        if id(n) not in sizes:
            sizes[id(n)] = 0  # a recursive alias counts once instead of looping
            children = (
                [c for pair in n.value for c in pair]
                if isinstance(n, yaml.MappingNode)
                else (n.value if isinstance(n, yaml.SequenceNode) else [])
            )
            sizes[id(n)] = 1 + sum(size(c) for c in children)
        return sizes[id(n)]

    return size(node) if node is not None else 0


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"
RECIPE_SECTIONS = ("optimizer", "train", "eval", "method")  # what a method's recipe sets; never data, model or fabric


def shipped_configs() -> dict[str, Path]:
    """Every config shipped with the package, by name (its path under ``configs/`` without ``.yaml``)."""
    return {
        path.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix(): path
        for path in sorted(SHIPPED_CONFIGS.rglob("*.yaml"))
    }


def locate_config(path_or_name: str | Path) -> Path:
    """A config file: ``path_or_name`` itself when it exists, else the shipped recipe of that name (``default``,
    ``seq-fmnist/fnc2``, ``configs/paper/fnc2-seq-cifar10-200.yaml`` from another folder)."""
    path = Path(path_or_name)
    if path.exists():
        return path
    name = path.as_posix().removesuffix(".yaml").removeprefix("configs/")
    shipped = shipped_configs()
    if name in shipped:
        return shipped[name]
    close = difflib.get_close_matches(name, list(shipped), n=1, cutoff=0.6)
    hint = f"did you mean the shipped `{close[0]}`? " if close else ""
    raise ConfigError(
        f"Config file {path} does not exist and is not a shipped recipe; {hint}pass a path to a YAML file or a "
        f"name that `protosphere configs` lists (e.g. default, seq-fmnist/fnc2)."
    )


def method_recipe(name: str) -> dict:
    """The defaults a method brings (:data:`RECIPE_SECTIONS` of its ``recipe`` config, bases resolved), or ``{}``
    for a method without one (e.g. one registered by user code)."""
    recipe = getattr(METHODS.get(name), "recipe", None) if name in METHODS else None
    if recipe is None:
        return {}
    if recipe not in _RECIPES:
        data = read_yaml(locate_config(recipe))
        _RECIPES[recipe] = {key: data[key] for key in RECIPE_SECTIONS if key in data}
    return json.loads(json.dumps(_RECIPES[recipe]))  # a copy: callers merge into it


_RECIPES: dict[str, dict] = {}


def with_method_recipe(data: dict) -> dict:
    """``data`` on top of the recipe of the method it names (``method.name``, default ``er``)."""
    method = data.get("method") if isinstance(data.get("method"), dict) else {}
    name = method.get("name", MethodConfig.model_fields["name"].default)
    recipe = method_recipe(name) if isinstance(name, str) else {}
    if recipe.get("method", {}).get("name", name) != name:  # a recipe shared by a family names one of them
        recipe["method"]["name"] = name
    return deep_merge(recipe, data)


def load_yaml(text: str):
    """``text`` parsed as a config's YAML (:class:`ConfigLoader`)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist; pass a path to a YAML file (see configs/).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); save it as UTF-8."
        ) from None
    try:
        data = load_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"Config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"Config file {path} is not valid YAML{where}; fix the syntax.") from None
    if data is None:  # an empty file: every default
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path} must be a YAML mapping of sections (data, scenario, method, ...), "
            f"got a {type(data).__name__}; see configs/ for examples."
        )
    return data


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` on top: mappings merge key by key, any other value (lists included) replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict:
    """The mapping of a YAML config file (or shipped recipe, :func:`locate_config`) with its ``base:`` chain resolved
    (bases first, each file merged on top)."""
    chain: list[Path] = []
    path = locate_config(path)
    layers = []
    while True:
        data = _read_mapping(path)
        chain.append(path)
        base = data.pop("base", None)
        layers.append(data)
        if base is None:
            break
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(
                f"Config file {path}: `base` must be the path of another YAML file (relative to "
                f"{path.parent}), got {base!r}."
            )
        following = path.parent / base
        if not following.is_file():
            raise ConfigError(
                f"Config file {path}: its base {base} does not exist (looked for {following}); `base` is "
                f"a path relative to the including file."
            )
        if any(following.resolve() == seen.resolve() for seen in chain):
            loop = " → ".join(str(p) for p in chain + [following])
            raise ConfigError(
                f"Config file {chain[0]} includes itself through `base` ({loop}); remove one of these `base:` lines."
            )
        path = following
    data: dict = {}
    for layer in reversed(layers):
        data = deep_merge(data, layer)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (or start from defaults), apply overrides and validate."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    config = validate_config(data, source=str(path) if path is not None else "config")
    if config.name is None:
        stem = Path(path).stem if path is not None else config.method.name
        config.name = f"{plain_name(stem)}-seed{config.seed}"
    return config


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_fingerprint(config: RunConfig) -> str:
    """Hash of everything that changes the numbers (not the run's name, output place or devices)."""
    data = config.model_dump(mode="json")
    for key in ("name", "output_dir"):
        data.pop(key, None)
    data.pop("fabric", None)
    data["data"].pop("device_budget", None)  # where the images wait for their batch, not which batches they make
    data.pop("logging", None)  # trackers only watch
    if data["data"].get("domains") is None:  # keys added later: at their defaults they keep earlier fingerprints
        data["data"].pop("domains", None)
    data["data"].pop("workers", None)  # how many processes decode changes no byte of the images
    if data["eval"].get("probe_buffer_size") is None:
        data["eval"].pop("probe_buffer_size", None)
    if not data["eval"].get("probe_augment"):  # the probe as it always was (un-augmented features)
        data["eval"].pop("probe_augment", None)
    data["train"].pop("log_every_n_steps", None)
    data["train"].pop("checkpoint_every_n_steps", None)
    data["train"]["keep_checkpoints"] = True  # changes no number; pinned to its old default so fingerprints stay
    data["eval"].pop("report", None)
    # options added later are left out at their defaults, so earlier runs keep their fingerprints
    if data["train"].get("augment") == AugmentConfig().model_dump(mode="json"):
        data["train"].pop("augment")
    for section, key, default in (
        ("model", "init", "default"),
        ("model", "stem", "cifar"),
        ("train", "normalize", True),
        ("method", "classifier", "etf"),
    ):
        if data[section].get(key) == default:
            data[section].pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
