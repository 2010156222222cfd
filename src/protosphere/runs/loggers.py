"""Experiment trackers beside metrics.csv: TensorBoard and Weights & Biases through lightning-fabric's logger interface.

``logging.tensorboard: true`` writes event files under ``<run>/tensorboard`` with lightning-fabric's
``TensorBoardLogger``; ``logging.wandb: {project: ..., mode: offline|online}`` logs to Weights & Biases through
:class:`WandbLogger`, a lightning-fabric ``Logger`` (fabric ships none for W&B). Both are optional extras
(``pip install protosphere[tensorboard]`` / ``protosphere[wandb]``); a missing package is a clear error before training.

During the run they receive the values metrics.csv holds, named ``<split>/<name>`` (``train/loss``, ``train/lr``,
``train/img_per_s``, ``test/<classifier>/<setting>/T<j>``, ``test/nc/nc1``, ``epoch/...``), against the **global
step** (optimiser steps since the start of the run; it does not restart with each task), plus ``task`` and ``epoch``
once per logged step so curves can be split by task. Tasks are counted from 1 as in the report (``T1`` is metrics.csv's
``task0``; the ``task`` scalar is metrics.csv's 0-based ``task`` column).

After the last task they receive what the run concluded (:meth:`Trackers.log_results`): the continual metrics of every
classifier and setting (:func:`final_metrics`: ``final/<classifier>/<setting>/<metric>``, the fields of
:class:`~protosphere.runs.record.Summary` — final and average incremental accuracy, average forgetting, BWT, FWT).
TensorBoard gets them as scalars and as the metrics of its HParams tab, against the flattened config
(:func:`flat_hyperparameters`); W&B gets them as ``run.summary`` values, the accuracy matrices as a ``wandb.Table``
(``accuracy_matrix``), and the config as a nested, typed dict from the start (``wandb.init(config=...)``).

A resumed run continues the same TensorBoard folder (events after the checkpoint's step are discarded) and the same W&B
run (its id is kept in ``<run>/wandb/run-id``).
"""

from __future__ import annotations

import importlib.util
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_fabric.loggers import TensorBoardLogger
from lightning_fabric.loggers.logger import Logger

from ..config import RunConfig
from ..errors import ConfigError
from .rundir import RunDir

if TYPE_CHECKING:
    from .record import RunResults

SUMMARY_METRICS = (
    "final_average_accuracy",
    "average_incremental_accuracy",
    "average_forgetting",
    "backward_transfer",
    "forward_transfer",
)
_TASK_TAG = re.compile(r"(?<=/)task(\d+)$")


def flat_hyperparameters(config: RunConfig) -> dict[str, Any]:
    """The resolved config as dotted keys with scalar values, for TensorBoard's HParams tab, which takes numbers,
    strings and booleans only: a list becomes its text (``[256, 256]``) and None the string ``null``."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            key = prefix[:-1]
            flat[key] = node if isinstance(node, (int, float, str, bool)) else ("null" if node is None else str(node))

    walk(config.model_dump(mode="json"), "")
    return flat


def nested_hyperparameters(config: RunConfig) -> dict[str, Any]:
    """The resolved config as plain nested data (lists stay lists, None stays None), for W&B's config."""
    return config.model_dump(mode="json")


def final_metrics(results: RunResults) -> dict[str, float]:
    """``{"final/<classifier>/<setting>/<metric>": value}`` of every continual metric a run has (None ones, such as
    FWT in class-IL or forgetting after one task, are left out)."""
    out = {}
    for classifier, settings in results.metrics.items():
        for setting, summary in settings.items():
            for metric in SUMMARY_METRICS:
                value = getattr(summary, metric)
                if value is not None:
                    out[f"final/{classifier}/{setting}/{metric}"] = float(value)
    return out


def accuracy_rows(results: RunResults) -> tuple[list[str], list[list]]:
    """The accuracy matrices as one table: columns ``classifier, setting, after_task, T1 … Tn``; one row per
    classifier × setting × trained task (``A[t][j]``, %, tasks counted from 1)."""
    num_tasks = results.scenario.num_tasks
    columns = ["classifier", "setting", "after_task", *[f"T{j + 1}" for j in range(num_tasks)]]
    rows = [
        [classifier, setting, f"T{t + 1}", *[float(a) for a in row]]
        for classifier, settings in results.evaluation.accuracy.items()
        for setting, matrix in settings.items()
        for t, row in enumerate(matrix)
    ]
    return columns, rows


def _tracker_tag(name: str) -> str:
    """metrics.csv's name → the trackers' tag: ``test/ncm/class_il/task0`` → ``test/ncm/class_il/T1`` (tasks
    counted from 1, as the report counts them)."""
    return _TASK_TAG.sub(lambda match: f"T{int(match.group(1)) + 1}", name)


class TensorBoardTracker(TensorBoardLogger):
    """lightning-fabric's ``TensorBoardLogger`` in ``<run>/tensorboard`` that ends with the HParams tab filled: the
    flattened config (:func:`flat_hyperparameters`) against the run's continual metrics (:func:`final_metrics`, also
    written as scalars, which is where the tab reads a metric's value)."""

    def __init__(self, config: RunConfig, run_dir: Path, resume_step: int | None = None):
        folder = RunDir(run_dir).tensorboard
        kwargs = {"purge_step": resume_step} if resume_step is not None else {}
        super().__init__(root_dir=str(folder.parent), name=folder.name, version="", default_hp_metric=False, **kwargs)
        self._hyperparameters = flat_hyperparameters(config)
        self._trial = config.name or "run"

    def log_results(self, results: RunResults, step: int) -> None:
        metrics = final_metrics(results)
        try:
            from tensorboard.plugins.hparams import summary_v2 as hp
        except ImportError:  # tensorboardX alone: its hparams summaries (booleans become 0/1)
            self.log_hyperparams(self._hyperparameters, metrics=metrics, step=step)
            return
        self.log_metrics(metrics, step)
        # the hparams plugin's own summaries (no TensorFlow needed): the experiment (which hyper-parameters and
        # metrics exist) and this run's values, typed (numbers, strings, booleans)
        experiment = hp.hparams_config_pb(
            hparams=[hp.HParam(name) for name in self._hyperparameters], metrics=[hp.Metric(tag) for tag in metrics]
        )
        writer = self.experiment._get_file_writer()
        writer.add_summary(experiment, step)
        writer.add_summary(hp.hparams_pb(self._hyperparameters, trial_id=self._trial), step)
        writer.flush()


class WandbLogger(Logger):
    """A lightning-fabric ``Logger`` writing to Weights & Biases (``wandb.init`` with ``dir`` = the run folder and
    ``config`` = the run's nested config)."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        project: str,
        mode: str = "offline",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        resume: bool = False,
        config: dict[str, Any] | None = None,
    ):
        import wandb

        super().__init__()
        folder = RunDir(run_dir).wandb
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "run-id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else secrets.token_hex(6)
        id_file.write_text(run_id)
        self._name = name
        self._run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            tags=tags or None,
            name=name,
            id=run_id,
            dir=str(run_dir),
            mode=mode,
            config=config,
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._run.id

    @property
    def root_dir(self) -> str:
        return self._run.dir

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._run.log(dict(metrics), step=step)

    def log_hyperparams(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        self._run.config.update(dict(params), allow_val_change=True)

    def log_results(self, results: RunResults, step: int) -> None:
        """The continual metrics as ``run.summary`` values and the accuracy matrices as the table
        ``accuracy_matrix`` (:func:`accuracy_rows`)."""
        import wandb

        self._run.summary.update(final_metrics(results))
        columns, rows = accuracy_rows(results)
        self._run.log({"accuracy_matrix": wandb.Table(columns=columns, data=rows)}, step=step)

    def finalize(self, status: str) -> None:
        self._run.finish(exit_code=0 if status == "success" else 1)


def _require(package: str, extra: str, key: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"`{key}` needs the `{package}` package, which is not installed; "
            f"`pip install protosphere[{extra}]` or `pip install {package}`, or turn the setting off."
        )


def check_trackers(config: RunConfig) -> None:
    """Fail before training when a tracker's package is missing."""
    if config.logging.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        _require("tensorboard", "tensorboard", "logging.tensorboard")
    if config.logging.wandb is not None:
        _require("wandb", "wandb", "logging.wandb")


def open_trackers(config: RunConfig, run_dir: Path, resume_step: int | None = None) -> list[Logger]:
    """The trackers ``config.logging`` asks for (rank 0 only); W&B gets the config now, TensorBoard with the results."""
    check_trackers(config)
    trackers: list[Logger] = []
    if config.logging.tensorboard:
        trackers.append(TensorBoardTracker(config, run_dir, resume_step))
    if config.logging.wandb is not None:
        w = config.logging.wandb
        trackers.append(
            WandbLogger(
                run_dir,
                config.name or "run",
                w.project,
                mode=w.mode,
                entity=w.entity,
                group=w.group,
                tags=w.tags,
                resume=resume_step is not None,
                config=nested_hyperparameters(config),
            )
        )
    return trackers


class Trackers:
    """Fan-out of metric rows to the trackers, keyed by the run's global step. ``task`` and ``epoch`` go out once per
    step (a task's last step carries its training row and its evaluation rows, each logged separately)."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers
        self._task_step: int | None = None  # the step whose `task` scalar was written
        self._epoch_step: int | None = None

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def log(self, split: str, values: dict, step: int, task: int, epoch: int | None = None) -> None:
        metrics = {_tracker_tag(f"{split}/{name}"): float(value) for name, value in values.items() if value is not None}
        if not metrics:
            return
        if step != self._task_step:
            metrics["task"] = float(task)
            self._task_step = step
        if epoch is not None and step != self._epoch_step:
            metrics["epoch"] = float(epoch)
            self._epoch_step = step
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def log_results(self, results: RunResults, step: int) -> None:
        """What the finished run concluded (see the module's docstring), at its last step."""
        for logger in self.loggers:
            logger.log_results(results, step)

    def close(self, status: str) -> None:
        for logger in self.loggers:
            logger.finalize(status)
