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
    log_every_n_steps: int = Field(50, ge=1, description="training loss, lr and img/s logged every N steps")
    checkpoint_every_n_steps: int | None = Field(None, ge=1, description="also checkpoint within a task every N steps")
    keep_checkpoints: bool = Field(
        False,
        description="keep every task-<t>.ckpt; by default only last.ckpt and the latest task-<t>.ckpt are "
        "kept (what --resume and its fallback need)",
    )

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
        annotation = field.annotation
        sub = (
            next(
                (
                    a
                    for a in getattr(annotation, "__args__", (annotation,))
                    if isinstance(a, type) and issubclass(a, BaseModel)
                ),
                None,
            )
            if annotation is not None
            else None
        )
        if sub is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sub = annotation
        if sub is None:
            return None
        current = sub
        node = node.get(key) if isinstance(node, dict) else None
    return current


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
    """The mapping of a YAML config file with its ``base:`` chain resolved (bases first, each file merged on top)."""
    chain: list[Path] = []
    path = Path(path)
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
    for section, key, default in (
        ("model", "init", "default"),
        ("train", "normalize", True),
        ("method", "classifier", "etf"),
    ):
        if data[section].get(key) == default:
            data[section].pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
