"""The run record and the run directory: what ``results.json`` holds, and one owner of every file of a run.

:class:`RunRecord` is the schema of ``results.json`` (pydantic): the runner validates the results against it before
writing, and the report and :func:`protosphere.load_run` read typed attributes instead of raw dictionaries. Where the
structure is fixed (summaries, NC metrics, timings, the scenario) an unknown key is an error, so a misspelt key fails
when the file is written or read, not silently in a plot. Where the keys are data (classifier names, corruption
names) the record maps them. Files written by earlier versions load: every key a version did not write yet is
optional, and ``nc_epochs`` (the NC metrics of ``per_epoch``, stored twice by earlier versions) is still read.

:class:`RunDir` names the files of ``runs/<name>/`` (config.yaml, results.json, metrics.csv, checkpoints, plots,
report.html, embeddings.npz, report.log) and writes them through :func:`atomic_write`: a temporary file in the same
folder, flushed to disk and renamed over the target, so a crash or a failing serializer never leaves a half-written
file in place of a good one.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RunError

__all__ = ["RunRecord", "RunDir", "RunLock", "atomic_write", "read_record", "save_embedding_snapshot"]

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


# ---------------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------------
Writer = Callable[[IO[bytes]], Any]


def atomic_write(path: str | Path, content: Union[str, bytes, Writer]) -> Path:
    """Write ``content`` to ``path`` so that ``path`` holds either its old or its complete new content, never a part.

    ``content`` is text (UTF-8), bytes, or a function that writes to a binary file object (e.g.
    ``lambda f: torch.save(state, f)``). The data go to a temporary file beside ``path``, are flushed to disk and
    renamed over ``path`` (atomic on POSIX and Windows); when writing fails the temporary file is removed and the
    error propagates, leaving ``path`` as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # unique: parallel writers never share one
    # os.open with 0o666 honours the umask, so the file gets the permissions a plain open() would give it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(content, str):
                file.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray)):
                file.write(content)
            else:
                content(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write or fsync: name the file it was for
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX: fsync the directory); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_record(run_dir: str | Path) -> RunRecord:
    """The :class:`RunRecord` of a run directory; :class:`RunError` with one sentence when it cannot be read."""
    return RunDir(run_dir).read_results()


class RunDir:
    """The files of one run directory (``runs/<name>/``) and the only code that writes its records.

    ``metrics.csv`` is appended row by row as the run goes (see :class:`protosphere.engine.MetricsLog`); every
    other file is written whole through :func:`atomic_write`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    def task_checkpoint(self, task: int) -> Path:
        return self.checkpoints / f"task-{task}.ckpt"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def report_log(self) -> Path:
        return self.path / "report.log"

    @property
    def embeddings(self) -> Path:
        return self.path / EMBEDDINGS_FILE

    # -------------------------------------------------------------------------------------------------------------
    def write_config(self, config) -> Path:
        """``config.yaml``: the resolved :class:`~protosphere.config.RunConfig`."""
        from .config import dump_config

        return atomic_write(self.config, dump_config(config))

    def write_results(self, results: RunRecord | dict) -> RunRecord:
        """Validate ``results`` as a :class:`RunRecord` and write ``results.json``; returns the record."""
        record = RunRecord.from_data(results, source=f"the results of {self.path}")
        atomic_write(self.results, record.to_json())
        return record

    def read_results(self) -> RunRecord:
        if not self.path.is_dir():
            raise RunError(f"{self.path} is not a directory; pass a run directory such as runs/<name>.")
        if not self.results.is_file():
            raise RunError(f"{self.path} has no results.json (the run has not finished or this is not a run "
                           f"directory); finish it with `protosphere run CONFIG --resume` or pass runs/<name>.")
        try:
            data = json.loads(self.results.read_text())
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.results} is not readable JSON ({type(exc).__name__}); rerun the run to rewrite "
                           f"it.") from None
        return RunRecord.from_data(data, source=str(self.results))

    def save_checkpoint(self, state: dict, name: str) -> Path:
        """``checkpoints/<name>`` (``torch.save``), written atomically so a crash keeps the previous checkpoint."""
        import torch

        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return atomic_write(self.checkpoints / name, lambda file: torch.save(state, file))

    def write_text(self, name: str, text: str) -> Path:
        """Any other text file of the run directory (e.g. ``report.html``), atomically."""
        return atomic_write(self.path / name, text)


EMBEDDINGS_FILE = "embeddings.npz"
LOCK_FILE = "run.lock"
LOCK_FD_VARIABLE = "PROTOSPHERE_RUN_LOCK_FD"  # a report process started by its run inherits the run's lock


class RunLock:
    """``run.lock``: one process at a time trains, resumes, overwrites or reports a run folder.

    The lock is ``flock`` on an open file, so it belongs to the processes that hold the file open and disappears with
    them, a SIGKILL included (a stale run.lock file is then just a file, locked by nobody). The file holds the
    holder's PID, host and command, for the refusal of the next process; it is removed when the lock is released
    (unlinked before the unlock, and a process that locked a file that was removed meanwhile retries, so two
    processes never both hold it). A lock can be handed to a child process (:meth:`inheritable`): the background
    report of a finished run keeps the folder locked until it has written the report.
    """

    def __init__(self, run_dir: str | Path, purpose: str = "run"):
        self.path = Path(run_dir) / LOCK_FILE
        self.purpose = purpose
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> "RunLock":
        """Lock the folder, or raise :class:`RunError` naming the process that holds it; a no-op when held."""
        import fcntl

        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise RunError(f"{self.path.parent} is in use by {holder} (see {self.path}); wait until it ends or "
                               f"stop it, then try again.") from None
            if self._is_current(fd):
                self.fd = fd
                self._write_holder()
            else:  # the previous holder removed the file between our open and our lock: lock the new one
                os.close(fd)
        return self

    def adopt_inherited(self) -> bool:
        """Take over the lock a parent process handed down (its descriptor in $PROTOSPHERE_RUN_LOCK_FD) when it is
        this folder's; returns whether it was."""
        value = os.environ.pop(LOCK_FD_VARIABLE, "")
        if not value.isdigit() or self.fd is not None:
            return False
        fd = int(value)
        try:
            if not self._is_current(fd):
                os.close(fd)
                return False
        except OSError:  # not an open descriptor (the variable leaked from elsewhere)
            return False
        self.fd = fd
        self._write_holder()
        return True

    def inheritable(self) -> int:
        """The lock's descriptor, made inheritable for a child process that takes the lock over (pass it with
        ``pass_fds`` and $PROTOSPHERE_RUN_LOCK_FD); after :meth:`hand_over` this process no longer holds it."""
        os.set_inheritable(self.fd, True)
        return self.fd

    def hand_over(self) -> None:
        """Close this process's descriptor without unlocking or removing the file: the child holds the lock now."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self._is_current(self.fd):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        if not self.adopt_inherited():
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is the file now at :attr:`path` (not one removed since it was opened)."""
        try:
            current = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)

    def _write_holder(self) -> None:
        import socket

        text = f"{os.getpid()} {socket.gethostname()} protosphere {self.purpose}\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)


def _lock_holder(fd: int) -> str:
    """Who holds a lock, from its file: "process 123 on host (protosphere run)"; the holder writes it right after
    locking, so an empty file is read again a few times."""
    import time

    for _ in range(20):
        words = os.pread(fd, 512, 0).decode(errors="replace").split()
        if len(words) >= 2 and words[0].isdigit():
            return f"process {words[0]} on {words[1]} ({' '.join(words[2:]) or 'protosphere'})"
        time.sleep(0.01)
    return "another process"


def save_embedding_snapshot(run_dir: str | Path, features, labels, prototypes=None, max_points: int = 3000,
                            seed: int = 0) -> Path:
    """Write ``run_dir/embeddings.npz`` for the report's sphere picture and prototype–class-mean cosine matrix.

    Args:
        features: (N, d) features (tensor or array; normalised here).
        labels: (N,) integer class labels (indices into the scenario's label space).
        prototypes: optional (K, d) prototypes/classifier weights over the whole label space (row k = class k),
            in the same space as ``features``.
        max_points: at most this many rows are kept (a seeded random subset) for the picture; the class means and
            the cosine matrix use all N rows.

    Stored arrays: ``features`` (float32), ``labels`` (int64), ``classes`` (sorted present labels), ``class_means``
    (unit-norm mean of the unit-norm features per present class) and, with prototypes, ``prototypes`` (float32) and
    ``cosine`` (C_present × C_present: cos(class mean of class a, prototype of class b)).
    """
    import numpy as np

    f = _to_numpy(features).astype(np.float64)
    y = _to_numpy(labels).astype(np.int64).reshape(-1)
    if f.ndim != 2 or len(f) != len(y):
        raise ValueError(f"features must be (N, d) and labels (N,), got {f.shape} and {y.shape}.")
    z = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    classes = np.unique(y)
    means = np.stack([z[y == c].mean(0) for c in classes]) if len(classes) else np.zeros((0, f.shape[1]))
    means = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    keep = np.arange(len(y))
    if len(y) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), size=max_points, replace=False))
    arrays = {"features": f[keep].astype(np.float32), "labels": y[keep], "classes": classes,
              "class_means": means.astype(np.float32)}
    if prototypes is not None:
        w = _to_numpy(prototypes).astype(np.float64)
        if w.ndim != 2 or w.shape[1] != f.shape[1]:
            raise ValueError(f"prototypes must be (K, {f.shape[1]}) to match the features, got {w.shape}.")
        arrays["prototypes"] = w.astype(np.float32)
        present = classes[classes < len(w)]
        wn = w[present] / np.maximum(np.linalg.norm(w[present], axis=1, keepdims=True), 1e-12)
        arrays["cosine"] = (means[np.isin(classes, present)] @ wn.T).astype(np.float32)
    files = RunDir(run_dir)
    files.path.mkdir(parents=True, exist_ok=True)
    return atomic_write(files.embeddings, lambda file: np.savez_compressed(file, **arrays))


def _to_numpy(x):
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)
