"""The run record: what ``results.json`` holds (the files of a run are :mod:`protosphere.rundir`'s).

:class:`RunRecord` is the schema of ``results.json`` (pydantic): the runner validates the results against it before
writing, and the report and :func:`protosphere.load_run` read typed attributes instead of raw dictionaries. Where the
structure is fixed (summaries, NC metrics, timings, the scenario) an unknown key is an error, so a misspelt key fails
when the file is written or read, not silently in a plot. Where the keys are data (classifier names, corruption
names) the record maps them. Files written by earlier versions load: every key a version did not write yet is
optional, and ``nc_epochs`` (the NC metrics of ``per_epoch``, stored twice by earlier versions) is still read.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RunError

__all__ = ["RunRecord"]

Setting = Literal["class_il", "task_il"]
Matrix = list[list[float]]  # A[t][j]: accuracy (%) on task j's test data after training task t


class _Fixed(BaseModel):
    """A part of results.json whose keys are known: an unknown (e.g. misspelt) key is an error."""

    model_config = ConfigDict(extra="forbid")


class Summary(_Fixed):
    """The continual metrics of one accuracy matrix (:func:`protosphere.metrics.continual.summarize`)."""

    num_tasks: int | None = None
    final_average_accuracy: float | None = None
    average_incremental_accuracy: float | None = None
    forgetting: list[float] | None = None  # per task: best accuracy after learning it − final accuracy (pp)
    average_forgetting: float | None = None
    backward_transfer: float | None = None
    forward_transfer: float | None = None  # None in class-IL or without a random-init baseline


class NeuralCollapse(_Fixed):
    """NC metrics of the seen classes (:func:`protosphere.metrics.neural_collapse.neural_collapse`); nc3/nc4 only
    for methods with classifier weights."""

    split: str | None = None
    classes: int | None = None
    nc1: float | None = None
    equinorm: float | None = None
    equiangularity: float | None = None
    max_angle: float | None = None
    within_class_effective_rank: float | None = None
    between_class_effective_rank: float | None = None
    nc3: float | None = None
    nc4: float | None = None


class EpochNeuralCollapse(NeuralCollapse):
    """NC metrics after one epoch of one task (the ``nc_epochs`` entries of earlier versions)."""

    task: int
    epoch: int


class EpochEvaluation(_Fixed):
    """Evaluation after an epoch (``eval.per_epoch``): accuracy rows over every task's test set, NC metrics."""

    task: int
    epoch: int
    accuracy: dict[str, dict[Setting, list[float]]] = Field(default_factory=dict)
    neural_collapse: NeuralCollapse | None = None


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


class ClassifierTiming(_Fixed):
    fit_s: float
    predict_s: float


class TaskTiming(_Fixed):
    task: int | None = None
    train_s: float | None = None
    eval_s: float | None = None
    images: int | None = None
    img_per_s: float | None = None
    classifiers: dict[str, ClassifierTiming] | None = None  # "encode": the shared feature pass of the classifiers


class Timings(_Fixed):
    tasks: list[TaskTiming] = Field(default_factory=list)
    total_s: float | None = None


class Confusion(_Fixed):
    """The headline classifier's confusion matrix after the last task on the seen tasks' test data:
    ``matrix[a][b]`` = images of class ``classes[a]`` predicted as ``classes[b]``; ``other[a]`` = predicted outside
    the seen classes."""

    classifier: str | None = None
    classes: list[int] = Field(default_factory=list)
    matrix: list[list[int]] = Field(default_factory=list)
    other: list[int] | None = None


class ScenarioInfo(_Fixed):
    name: str | None = None
    kind: Literal["class_il", "data_il", "domain_il"] | None = None
    num_tasks: int | None = None
    num_classes: int | None = None
    class_order: list[int] | None = None
    class_names: list[str] | None = None
    tasks: list[list[int]] | None = None
    domains: list[str] | None = None  # domain-IL datasets: the domain of each task


class Provenance(_Fixed):
    version: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None


class Environment(_Fixed):
    protosphere: str | None = None
    torch: str | None = None
    lightning_fabric: str | None = None
    numpy: str | None = None
    python: str | None = None
    platform: str | None = None
    cpu: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None
    gpu: str | None = None
    device: str | None = None
    world_size: int | None = None
    precision: str | None = None


class RunRecord(_Fixed):
    """The schema of ``results.json``, in the order the keys are written.

    Only ``accuracy`` is required (it is what makes a results file); every other key is optional, because earlier
    versions wrote fewer of them. ``config`` is the resolved :class:`~protosphere.config.RunConfig` as plain data; it
    has its own schema in :mod:`protosphere.config` and is validated there when a run is reloaded.
    """

    name: str | None = None
    status: str | None = None  # "complete" once the run has written its last task
    seed: int | None = None
    method: str | None = None
    headline_classifier: str | None = None
    classifier_data: dict[str, str] = Field(default_factory=dict)  # classifier → which data it was fitted on
    scenario: ScenarioInfo = Field(default_factory=ScenarioInfo)
    accuracy: dict[str, dict[Setting, Matrix]]  # classifier → setting → A[t][j]
    metrics: dict[str, dict[Setting, Summary]] = Field(default_factory=dict)
    random_init: dict[str, dict[Setting, list[float]]] | None = None  # the untrained model's row: FWT's b_j
    neural_collapse: list[NeuralCollapse | None] = Field(default_factory=list)  # after each task
    diagnostics: list[Diagnostics | None] = Field(default_factory=list)  # after each task
    per_epoch: list[EpochEvaluation] = Field(default_factory=list)
    nc_epochs: list[EpochNeuralCollapse] | None = None  # read from earlier files only; now derived from per_epoch
    corruptions: dict[str, dict[str, list[float]]] | None = None  # classifier → corruption → top-1 error per severity
    confusion: Confusion | None = None
    fingerprint: str | None = None  # config.config_fingerprint of the config: which runs may be reused
    command: str | None = None
    code: Provenance | None = None
    timings: Timings = Field(default_factory=Timings)
    environment: Environment = Field(default_factory=Environment)
    config: dict[str, Any] | None = None

    # -------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_data(cls, data: Any, source: str = "results.json") -> "RunRecord":
        """Validate plain data (a parsed results.json); :class:`RunError` with one sentence when it does not fit."""
        if isinstance(data, RunRecord):
            return data
        if not isinstance(data, dict):
            raise RunError(f"{source} is not a protosphere results file (a JSON object with `accuracy` was expected, "
                           f"got {type(data).__name__}); pass a run directory such as runs/<name>.")
        if "accuracy" not in data:
            raise RunError(f"{source} is not a protosphere results file (no `accuracy`); pass a run directory such "
                           f"as runs/<name>.")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RunError(f"{source} does not match the results.json schema: {_describe(exc)}") from None

    def to_data(self) -> dict:
        """The record as plain data: exactly the keys that were set, in the schema's order, floats untouched."""
        return self.model_dump(mode="python", exclude_unset=True)

    def to_json(self) -> str:
        """results.json's text (two-space indent, Python's float repr, as protosphere has always written it)."""
        return json.dumps(self.to_data(), indent=2)

    # -------------------------------------------------------------------------------------------------------------
    def epoch_neural_collapse(self) -> list[EpochNeuralCollapse]:
        """NC metrics after every evaluated epoch: from ``per_epoch``, or ``nc_epochs`` in files that stored them."""
        if self.nc_epochs:
            return list(self.nc_epochs)
        return [EpochNeuralCollapse(task=e.task, epoch=e.epoch, **e.neural_collapse.model_dump(exclude_unset=True))
                for e in self.per_epoch if e.neural_collapse is not None]

    def summary(self, classifier: str | None = None, setting: Setting = "class_il") -> Summary | None:
        """The continual metrics of ``classifier`` (default: the headline) in ``setting``, None when absent."""
        return self.metrics.get(classifier or self.headline_classifier or "", {}).get(setting)


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
