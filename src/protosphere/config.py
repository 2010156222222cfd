"""Run configuration: YAML validated into typed pydantic models, with dotted ``key=value`` overrides.

A run is described by one :class:`RunConfig`. Every section forbids unknown keys; a misspelt key is reported with the
closest valid key, an ill-typed or out-of-range value with the key, the value and the rule it breaks — one sentence,
raised as :class:`~protosphere.errors.ConfigError`.

Method-specific settings live under ``method:``; the method named by ``method.name`` supplies the schema for the rest of
that section (see :mod:`protosphere.methods`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from .errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dataset: Literal["fashion_mnist", "mnist", "digits", "cifar10", "cifar100", "tiny_imagenet", "imagenet100"] = (
        "fashion_mnist"
    )
    root: str | None = None
    download: bool = False
    train_fraction: float = Field(1.0, gt=0, le=1)
    image_size: int | None = Field(None, ge=8, description="resize for image-folder datasets")


class ScenarioConfig(Section):
    kind: Literal["class_il", "data_il", "domain_il"] = "class_il"
    num_tasks: int = Field(5, ge=1)
    classes_per_task: list[int] | None = None
    class_order: list[int] | None = None
    shuffle_classes: bool = False
    domain: Literal["rotation", "permutation"] = "rotation"
    max_rotation: float = Field(180.0, ge=0, le=360)
    imbalance_ratio: float | None = Field(None, gt=0, le=1, description="long-tail profile n_min/n_max (e.g. 0.01)")

    @model_validator(mode="after")
    def _consistent(self) -> "ScenarioConfig":
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
    backbone: Literal["mlp", "small_cnn", "resnet18", "resnet18_reduced"] = "small_cnn"
    mlp_hidden: list[int] = Field(default_factory=lambda: [100, 100])
    channels_last: bool = True
    init: Literal["default", "xavier"] = Field(
        "default", description="weight initialisation: torch's default, or Mammoth's Xavier-uniform with zero biases "
        "on every Linear layer (backbone and heads)")


class OptimizerConfig(Section):
    name: Literal["sgd", "adam", "adamw", "lars"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "cosine", "step"] = "none"
    warmup_epochs: int = Field(0, ge=0)
    milestones: list[float] = Field(default_factory=lambda: [0.6, 0.75, 0.9])
    gamma: float = Field(0.2, gt=0, le=1)


class TrainConfig(Section):
    epochs: int = Field(1, ge=1)
    first_task_epochs: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    augmentation: Literal["none", "supervised", "contrastive"] = "supervised"
    normalize: bool = Field(True, description="normalise inputs by the dataset's mean and std (training and "
                            "evaluation); false keeps pixels in [0, 1], as Mammoth's ToTensor()-only inputs")
    flip: bool = True
    log_every_n_steps: int = Field(50, ge=1)
    checkpoint_every_n_steps: int | None = Field(None, ge=1)
    keep_checkpoints: bool = True

    def epochs_for(self, task: int) -> int:
        return self.first_task_epochs if task == 0 and self.first_task_epochs is not None else self.epochs


class EvalConfig(Section):
    batch_size: int = Field(256, ge=1)
    random_init_baseline: bool = True
    neural_collapse: bool = True
    per_epoch: bool = Field(False, description="also evaluate accuracy and NC metrics after every epoch")
    corruptions: list[str] | None = Field(None, description="corruptions applied to the test set after the last "
                                         "task; 'all' for the whole suite")
    corruption_severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    corruption_classifiers: Literal["headline", "all"] = Field(
        "headline", description="which classifiers the corruption suite evaluates (each one costs a full pass)")
    embeddings: bool = Field(True, description="save test embeddings for the report's sphere picture")
    report: Literal["inline", "background", "off"] = Field(
        "inline", description="report.html and plots: written before the run returns (inline), by a low-priority "
        "process started when results.json is written, so the run returns at once (background), or not at all "
        "(off; `protosphere report RUN_DIR` writes them later)")

    @field_validator("corruptions", mode="before")
    @classmethod
    def _known_corruptions(cls, value):
        from .data.corruptions import CORRUPTIONS

        if value == "all":
            return list(CORRUPTIONS)

        for name in value or []:
            if name not in CORRUPTIONS:
                close = difflib.get_close_matches(name, CORRUPTIONS, n=1)
                hint = f"did you mean {close[0]!r}" if close else f"choose from {', '.join(CORRUPTIONS)}"
                raise ValueError(f"unknown corruption {name!r}; {hint}")
        return value

    @field_validator("corruption_severities")
    @classmethod
    def _severities(cls, value):
        if not value or any(s not in (1, 2, 3, 4, 5) for s in value):
            raise ValueError("severities must be a non-empty list of integers 1..5")
        return value


class FabricConfig(Section):
    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"] = "32-true"
    threads: int | None = Field(None, ge=1)


class MethodConfig(Section):
    """Base of every method's settings; ``name`` selects the method and its schema."""

    name: str = "er"


class RunConfig(Section):
    name: str | None = None
    output_dir: str = "runs"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: SerializeAsAny[MethodConfig] = Field(default_factory=MethodConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    fabric: FabricConfig = Field(default_factory=FabricConfig)

    @field_validator("method", mode="before")
    @classmethod
    def _method_schema(cls, value: Any) -> Any:
        from .methods import method_config_class

        if isinstance(value, MethodConfig):
            value = value.model_dump()
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError("method must be a mapping with at least `name`")
        name = value.get("name", MethodConfig.model_fields["name"].default)
        return method_config_class(name).model_validate(value)


# --------------------------------------------------------------------------------------------------------------------
# Loading, overrides and readable errors


def _section_at(model: type[BaseModel], loc: tuple, data: dict) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of `loc` (following the method's own schema)."""
    from .methods import method_config_class

    current: type[BaseModel] = model
    node: Any = data
    for key in loc[:-1]:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and key < len(node) else None
            continue
        if current is RunConfig and key == "method":
            name = (node or {}).get("method", {}).get("name", "er") if isinstance(node, dict) else "er"
            try:
                current = method_config_class(name)
            except Exception:
                current = MethodConfig
            node = node.get("method") if isinstance(node, dict) else None
            continue
        field = current.model_fields.get(key)
        if field is None:
            return None
        annotation = field.annotation
        sub = next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                    and issubclass(a, BaseModel)), None) if annotation is not None else None
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
        hint = f"did you mean `{(parent + '.') if parent else ''}{close[0]}`?" if close else (
            f"valid keys here: {', '.join(valid)}." if valid else "remove it.")
        return f"Unknown config key `{dotted}`: {hint}"
    given = error.get("input")
    given_text = "" if isinstance(given, dict) else f" (got {given!r})"
    message = error["msg"]
    if kind == "literal_error":
        return f"Invalid value for `{dotted}`{given_text}: {message[0].lower() + message[1:]}."
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return f"Invalid value for `{dotted}`{given_text}: {message[0].lower() + message[1:]}."


def validate_config(data: dict, source: str = "config") -> RunConfig:
    """Validate a plain mapping into a :class:`RunConfig`, turning pydantic errors into one readable ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping of sections (data, scenario, method, ...), "
                          f"got {type(data).__name__}.")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0], data)
        more = f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} after fixing this)" if len(
            errors) > 1 else ""
        raise ConfigError(f"{source}: {first}{more}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"Override `{text}` is not of the form key=value (e.g. train.epochs=2).")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Override `{text}` has an empty key; write dotted keys such as method.buffer_size=500.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted ``key=value`` overrides (values parsed as YAML) to a nested mapping, in order."""
    data = yaml.safe_load(yaml.safe_dump(data)) if data else {}
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"Override `{text}`: `{part}` is a value, not a section, so it has no sub-keys.")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist; pass a path to a YAML file (see configs/).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"Config file {path} is not valid YAML{where}; fix the syntax.") from None
    return data or {}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (or start from defaults), apply overrides and validate."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    config = validate_config(data, source=str(path) if path is not None else "config")
    if config.name is None:
        stem = Path(path).stem if path is not None else config.method.name
        config.name = f"{stem}-seed{config.seed}"
    return config


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
