"""The run record: the schema of ``results.json``, as a run writes it and as a reader reads it (the file itself is
:mod:`protosphere.runs.rundir`'s).

:class:`RunRecord` is the record a run writes. It is strict: every key this version writes is required (optional are
only keys that depend on options: the corruption errors, NC3/NC4, a domain-IL scenario's domains, a method's
diagnostics) and an unknown key is an error, also when assigned. It is assembled from typed parts, each made where
its numbers are: the protocol's :class:`Evaluation` grows after every task and epoch (and is what a checkpoint keeps
of the evaluation), the protocol's :class:`RunResults` adds what the run was and its continual metrics after the
last task, and the runner adds :class:`Provenance` and :class:`Environment`. A misspelt key thus fails at the moment
its value is measured, not when results.json is written at the end of the run.

:class:`StoredRecord` is ``results.json`` as a reader gets it, whichever version wrote it: the keys and types of
:class:`RunRecord`, each of them optional because earlier versions wrote fewer (an absent list or mapping reads as
empty, an absent part as a part without keys, anything else as None), plus the keys only earlier versions wrote
(``nc_epochs``). An unknown key or a wrong type is still an error, so a misspelt key in a file fails when the file is
read, not silently in a plot. Where the keys are data (classifier names, corruption names) the record maps them.

The file does not store its version (``results.json`` keeps the layout it has always had), so a reader tells it
from the content: :attr:`StoredRecord.schema_version` is :data:`SCHEMA_VERSION` for a file that :class:`RunRecord`
accepts, and 1 for the files of earlier versions.
"""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, model_validator

from ..errors import RunError

__all__ = ["SCHEMA_VERSION", "Evaluation", "Provenance", "RunRecord", "RunResults", "StoredRecord"]

# 1: written before the record was typed: keys were added to results.json one by one, so any of them may be
#    missing, and the per-epoch NC metrics were also stored as ``nc_epochs``
# 2: the layout RunRecord writes: every key it requires is there
SCHEMA_VERSION = 2

Setting = Literal["class_il", "task_il"]
Row = dict[str, dict[Setting, list[float]]]  # classifier → setting → accuracy (%) on each task's test data
Matrix = list[list[float]]  # A[t][j]: accuracy (%) on task j's test data after training task t
Corruptions = dict[str, dict[str, list[float]]]  # classifier → corruption → top-1 error (%) per severity
_ROW = TypeAdapter(Row)


class _Part(BaseModel):
    """A part of results.json whose keys are known: an unknown (e.g. misspelt) key is an error, when the part is made
    and when a key is assigned."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------------------------------------------------------
# the parts, as a run makes them
# ---------------------------------------------------------------------------------------------------------------
class Summary(_Part):
    """The continual metrics of one accuracy matrix (:func:`protosphere.metrics.continual.summarize`)."""

    num_tasks: int
    final_average_accuracy: float
    average_incremental_accuracy: float
    forgetting: list[float]  # per earlier task: best accuracy after learning it − final accuracy (pp)
    average_forgetting: float | None  # None for a single task
    backward_transfer: float | None
    forward_transfer: float | None  # None in class-IL, without a random-init baseline or for a single task


class NeuralCollapse(_Part):
    """NC metrics of the seen classes (:func:`protosphere.metrics.neural_collapse.neural_collapse`); nc3/nc4 only
    for methods with classifier weights."""

    split: str
    classes: int
    nc1: float
    equinorm: float
    equiangularity: float
    max_angle: float
    within_class_effective_rank: float
    between_class_effective_rank: float
    nc3: float | None = None
    nc4: float | None = None


class EpochEvaluation(_Part):
    """Evaluation after an epoch (``eval.per_epoch``): accuracy rows over every task's test set, NC metrics."""

    task: int
    epoch: int
    accuracy: Row
    neural_collapse: NeuralCollapse | None


class Diagnostics(BaseModel):
    """A method's diagnostics after a task (:meth:`Method.diagnostics`): the prototype methods report alignment of the
    class means with their prototypes and the drift of old-class means. A method may add numbers of its own, so
    further keys are kept (the engine logs every number as ``diag/<key>``)."""

    model_config = ConfigDict(extra="allow")

    classes: list[int] | None = None
    prototype_alignment: float | None = None
    prototype_alignment_per_class: list[float] | None = None
    old_mean_drift: float | None = None
    old_classes: list[int] | None = None
    old_mean_drift_per_class: list[float] | None = None


class ClassifierTiming(_Part):
    fit_s: float
    predict_s: float


class TaskTiming(_Part):
    task: int
    train_s: float
    eval_s: float
    images: int
    img_per_s: float
    classifiers: dict[str, ClassifierTiming]  # "encode": the shared feature pass of the classifiers


class TaskTimings(_Part):
    """The timings of the tasks trained so far (what a checkpoint keeps)."""

    tasks: list[TaskTiming]


class Timings(TaskTimings):
    total_s: float  # the run's wall time, set-up and report included


class Confusion(_Part):
    """The headline classifier's confusion matrix after the last task on the seen tasks' test data:
    ``matrix[a][b]`` = images of class ``classes[a]`` predicted as ``classes[b]``; ``other[a]`` = predicted outside
    the seen classes."""

    classifier: str
    classes: list[int]
    matrix: list[list[int]]
    other: list[int]


class ScenarioInfo(_Part):
    name: str
    kind: Literal["class_il", "data_il", "domain_il"]
    num_tasks: int
    num_classes: int
    class_order: list[int]
    class_names: list[str]
    tasks: list[list[int]]
    domains: list[str] | None = None  # domain-IL datasets: the domain of each task


class CodeRevision(_Part):
    version: str
    git_commit: str | None  # None outside a git checkout (e.g. an installed wheel)
    git_dirty: bool | None


class Environment(_Part):
    protosphere: str
    torch: str
    lightning_fabric: str
    numpy: str
    python: str
    platform: str
    cpu: str
    cpu_count: int | None
    torch_threads: int
    gpu: str | None
    device: str
    world_size: int
    precision: str


class Evaluation(_Part):
    """What the evaluation protocol has measured so far: the part of the record a checkpoint keeps, so a resumed run
    continues it. Grows after every task (a row of every accuracy matrix, NC metrics, diagnostics, timings) and
    epoch; the corruption errors and the confusion matrix come after the last task."""

    accuracy: dict[str, dict[Setting, Matrix]]
    random_init: Row | None  # the untrained model's row: FWT's baseline b_j
    neural_collapse: list[NeuralCollapse | None]  # after each task
    diagnostics: list[Diagnostics | None]  # after each task
    per_epoch: list[EpochEvaluation]
    corruptions: Corruptions | None = None
    confusion: Confusion | None = None
    timings: TaskTimings

    @classmethod
    def of(cls, saved: dict | None = None) -> Evaluation:
        """The evaluation a checkpoint saved (:meth:`saved`), or that of a run before its first task. Every key is
        set, so that :meth:`saved` keeps them all; checkpoints of earlier versions may lack the diagnostics."""
        empty = {
            "accuracy": {},
            "random_init": None,
            "neural_collapse": [],
            "diagnostics": [],
            "per_epoch": [],
            "timings": {"tasks": []},
        }
        return cls.model_validate({**empty, **(saved or {})})

    def saved(self) -> dict:
        """Plain data for a checkpoint (a copy): exactly the keys that were set, so an absent key stays absent."""
        return self.model_dump(exclude_unset=True)

    def add_row(self, row: Row) -> None:
        """Append a row (the evaluation after a task) to every classifier's matrices."""
        row = _ROW.validate_python(row)
        for classifier, settings in row.items():
            for setting, accuracies in settings.items():
                self.accuracy.setdefault(classifier, {}).setdefault(setting, []).append(accuracies)


class RunResults(_Part):
    """What the protocol concludes after the last task: what the run was, its evaluation and its continual metrics;
    results.json but for where the run came from and what it ran on."""

    name: str
    status: str  # "complete": the run has evaluated its last task
    seed: int
    method: str
    headline_classifier: str
    classifier_data: dict[str, str]  # classifier → which data it was fitted on
    scenario: ScenarioInfo
    metrics: dict[str, dict[Setting, Summary]]
    evaluation: Evaluation
    config: dict[str, Any]  # the resolved RunConfig as plain data (validated by protosphere.config on reload)


class Provenance(_Part):
    """Where a run came from: its config's fingerprint (which runs may be reused), the command and the code."""

    fingerprint: str  # protosphere.config.config_fingerprint
    command: str
    code: CodeRevision


class RunRecord(_Part):
    """``results.json`` as this version writes it, in the order of its keys (see the module's docstring)."""

    name: str
    status: str
    seed: int
    method: str
    headline_classifier: str
    classifier_data: dict[str, str]
    scenario: ScenarioInfo
    accuracy: dict[str, dict[Setting, Matrix]]
    metrics: dict[str, dict[Setting, Summary]]
    random_init: Row | None
    neural_collapse: list[NeuralCollapse | None]
    diagnostics: list[Diagnostics | None]
    per_epoch: list[EpochEvaluation]
    corruptions: Corruptions | None = None  # only with eval.corruptions
    confusion: Confusion
    fingerprint: str
    command: str
    code: CodeRevision
    timings: Timings
    environment: Environment
    config: dict[str, Any]

    @classmethod
    def assemble(
        cls, results: RunResults, provenance: Provenance, environment: Environment, total_s: float
    ) -> RunRecord:
        """The record of a finished run: the protocol's ``results``, the runner's ``provenance`` and
        ``environment``, and the run's wall time."""
        about = {key: getattr(results, key) for key in results.model_fields_set - {"evaluation"}}
        evaluation = results.evaluation
        measured = {key: getattr(evaluation, key) for key in evaluation.model_fields_set - {"timings"}}
        if measured.get("corruptions") is None:
            measured.pop("corruptions", None)
        timings = Timings(tasks=evaluation.timings.tasks, total_s=total_s)
        return cls(**about, **measured, **provenance.model_dump(), timings=timings, environment=environment)

    def to_data(self) -> dict:
        """The record as plain data: exactly the keys that were set, in the schema's order, floats untouched."""
        return self.model_dump(mode="python", exclude_unset=True)

    def to_json(self) -> str:
        """results.json's text (two-space indent, Python's float repr, as protosphere has always written it)."""
        return json.dumps(self.to_data(), indent=2)


# ---------------------------------------------------------------------------------------------------------------
# the record as read
# ---------------------------------------------------------------------------------------------------------------
_READ: dict[type[BaseModel], type[BaseModel]] = {}


def _as_read(model: type[BaseModel]) -> type[BaseModel]:
    """The reading twin of a written part: the same keys with the same types (parts replaced by their twins), each
    of them optional, because files of earlier versions lack keys this version writes."""
    if model not in _READ:
        fields = {}
        for name, info in model.model_fields.items():
            annotation = _read_type(info.annotation)
            fields[name] = (annotation, _absent(annotation))
        _READ[model] = create_model(
            f"Stored{model.__name__}",
            __config__=ConfigDict(extra=model.model_config["extra"]),
            __doc__=f"{model.__name__} as read from results.json (every key optional).",
            __module__=__name__,
            **fields,
        )
    return _READ[model]


def _read_type(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _as_read(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if not args or origin is Literal:
        return annotation
    read = tuple(_read_type(arg) for arg in args)
    return Union[read] if origin in (Union, types.UnionType) else origin[read]  # noqa: UP007 (built at run time)


def _absent(annotation: Any) -> Any:
    """What an absent key reads as: an empty list or mapping, a part without keys, else None."""
    origin = get_origin(annotation)
    if origin in (list, dict):
        return Field(default_factory=origin)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Field(default_factory=annotation)
    return None


class EpochNeuralCollapse(_as_read(NeuralCollapse)):
    """NC metrics after one epoch of one task (the ``nc_epochs`` entries of schema version 1)."""

    task: int
    epoch: int


class StoredRecord(_as_read(RunRecord)):
    """``results.json`` as read, from any version (see the module's docstring); ``schema_version`` tells which."""

    nc_epochs: list[EpochNeuralCollapse] | None = None  # schema version 1 only; now derived from per_epoch
    schema_version: int = Field(SCHEMA_VERSION, exclude=True)  # told from the content, never written

    @model_validator(mode="before")
    @classmethod
    def _tell_version(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schema_version" not in data:
            data = {**data, "schema_version": _layout_version(data)}
        return data

    @classmethod
    def from_data(cls, data: Any, source: str = "the results file") -> StoredRecord:
        """Validate plain data (a parsed results.json) or a record; :class:`RunError` with one sentence when it does
        not fit. ``source`` names the data in that sentence."""
        if isinstance(data, StoredRecord):
            return data
        if isinstance(data, RunRecord):
            data = data.to_data()
        if not isinstance(data, dict):
            raise RunError(
                f"{source} is not a protosphere results file (a JSON object with `accuracy` was expected, "
                f"got {type(data).__name__}); pass a run directory such as runs/<name>."
            )
        if "accuracy" not in data:
            raise RunError(
                f"{source} is not a protosphere results file (no `accuracy`); pass a run directory such as runs/<name>."
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RunError(f"{source} does not match the results.json schema: {_describe(exc)}") from None

    def to_data(self) -> dict:
        """The record as plain data: exactly the keys the file held, floats untouched."""
        return self.model_dump(mode="python", exclude_unset=True)

    def epoch_neural_collapse(self) -> list[EpochNeuralCollapse]:
        """NC metrics after every evaluated epoch: derived from ``per_epoch``, or read from ``nc_epochs`` in files of
        schema version 1 that stored them."""
        if self.schema_version == 1 and self.nc_epochs:
            return list(self.nc_epochs)
        return [
            EpochNeuralCollapse(task=e.task, epoch=e.epoch, **e.neural_collapse.model_dump(exclude_unset=True))
            for e in self.per_epoch
            if e.neural_collapse is not None
        ]

    def summary(self, classifier: str | None = None, setting: Setting = "class_il"):
        """The continual metrics (a read :class:`Summary`) of ``classifier`` (default: the headline) in
        ``setting``, None when absent."""
        return self.metrics.get(classifier or self.headline_classifier or "", {}).get(setting)


def _layout_version(data: dict) -> int:
    try:
        RunRecord.model_validate(data)
    except ValidationError:
        return 1
    return SCHEMA_VERSION


def _describe(exc: ValidationError) -> str:
    """The first problem of a validation error as a clause: where (dotted key) and what, plus how many others."""
    errors = exc.errors()
    first = errors[0]
    # pydantic names the union member it tried ("function-after[...]") and marks a bad mapping key with "[key]"
    loc = [part for part in first["loc"] if not (isinstance(part, str) and part.startswith(("function-", "nullable[")))]
    bad_key = bool(loc) and loc[-1] == "[key]"
    loc = loc[:-1] if bad_key else loc
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "results"
    message = first["msg"]
    message = message[0].lower() + message[1:]
    if first["type"] == "extra_forbidden":
        what = f"unknown key `{where}`"
    elif bad_key:
        what = f"unknown key `{where}` ({message})"
    else:
        given = first.get("input")
        shown = "" if isinstance(given, (dict, list)) else f" (got {given!r})"
        what = f"`{where}`: {message}{shown}"
    more = len(errors) - 1
    also = f" and {more} more problem{'s' if more > 1 else ''}" if more else ""
    return f"{what}{also}; fix the file or rerun the run to rewrite it."
