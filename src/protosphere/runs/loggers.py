"""Experiment trackers beside metrics.csv: TensorBoard and Weights & Biases through lightning-fabric's logger interface.

``logging.tensorboard: true`` writes event files under ``<run>/tensorboard`` with lightning-fabric's own
``TensorBoardLogger``; ``logging.wandb: {project: ..., mode: offline|online}`` logs to Weights & Biases through
:class:`WandbLogger`, a lightning-fabric ``Logger`` (fabric ships none for W&B). Both are optional extras
(``pip install protosphere[tensorboard]`` / ``protosphere[wandb]``); a missing package is a clear error before training.

They receive exactly the values metrics.csv holds, named ``<split>/<name>`` (``train/loss``, ``train/lr``,
``train/img_per_s``, ``test/<classifier>/<setting>/task<j>``, ``test/nc/nc1``, ``epoch/...``), against the **global
step** (optimiser steps since the start of the run; it does not restart with each task), plus ``task`` and ``epoch`` so
curves can be split by task. A resumed run continues the same TensorBoard folder (events after the checkpoint's step
are discarded) and the same W&B run (its id is kept in ``<run>/wandb/run-id``).
"""

from __future__ import annotations

import importlib.util
import secrets
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import Logger

from ..config import RunConfig
from ..errors import ConfigError
from .rundir import RunDir


def flat_hyperparameters(config: RunConfig) -> dict[str, Any]:
    """The resolved config as dotted keys with scalar values (lists as text), for the trackers' hparams tables."""
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


class WandbLogger(Logger):
    """A lightning-fabric ``Logger`` writing to Weights & Biases (``wandb.init`` with ``dir`` = the run folder)."""

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
    """The trackers ``config.logging`` asks for, with the run's hyper-parameters logged (rank 0 only)."""
    check_trackers(config)
    trackers: list[Logger] = []
    if config.logging.tensorboard:
        from lightning_fabric.loggers import TensorBoardLogger

        kwargs = {"purge_step": resume_step} if resume_step is not None else {}
        folder = RunDir(run_dir).tensorboard
        trackers.append(
            TensorBoardLogger(
                root_dir=str(folder.parent), name=folder.name, version="", default_hp_metric=False, **kwargs
            )
        )
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
            )
        )
    hyper = flat_hyperparameters(config)
    for tracker in trackers:
        tracker.log_hyperparams(hyper)
    return trackers


class Trackers:
    """Fan-out of metric rows to the trackers, keyed by the run's global step."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def log(self, split: str, values: dict, step: int, task: int, epoch: int | None = None) -> None:
        metrics = {f"{split}/{name}": float(value) for name, value in values.items() if value is not None}
        if not metrics:
            return
        metrics["task"] = float(task)
        if epoch is not None:
            metrics["epoch"] = float(epoch)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def close(self, status: str) -> None:
        for logger in self.loggers:
            logger.finalize(status)
