"""The Python API: ``protosphere.run(config_or_path, **overrides)`` and ``protosphere.load_run(run_dir)``.

``run`` trains exactly as ``protosphere run`` does (same run folder, same files) and returns a :class:`Run`;
``load_run`` opens a finished run folder. A :class:`Run` holds the resolved config, the run record (results.json as a
typed :class:`~protosphere.runs.record.StoredRecord`, and as plain data in ``results``) and, loaded on first use, the
trained model after the last task, ready for inference::

    import protosphere
    run = protosphere.run("configs/default.yaml", seed=1, train={"epochs": 2})   # or "train.epochs"=2 via **{...}
    run = protosphere.load_run("runs/default-seed1")
    features = run.encode(images)          # (N, d) encoder features of uint8 (N, C, H, W) images or floats in [0, 1]
    labels = run.predict(images)           # (N,) class ids with the headline classifier
    labels = run.predict(images, classifier="ncm")

Class ids are those of the scenario's tasks; ``run.class_names[i]`` names class ``i``. Classifiers that are fitted
on data after each task (a linear probe, kNN) are refitted on first use exactly as the run fitted them after its last
task (the last task's training data plus the replay buffer stored in the checkpoint), which needs the run's dataset;
the others (class means, fixed prototypes, a trained head) come straight from the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import RunConfig, load_config, read_yaml, section, validate_config
from .errors import ConfigError, RunError
from .runs.record import RunRecord, StoredRecord
from .runs.rundir import RunDir

__all__ = ["Run", "run", "load_run"]


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.replace("__", ".").split(".")
    if any(not p for p in parts):
        raise ConfigError(f"Override `{dotted}` has an empty key; write dotted keys such as train.epochs.")
    node = section(data, parts[:-1], dotted)
    if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
        for key, sub in value.items():  # train={"epochs": 2} changes train.epochs and keeps the other keys
            _set_dotted(node[parts[-1]], str(key), sub)
    else:
        node[parts[-1]] = dict(value) if isinstance(value, Mapping) else value


def resolve_config(config_or_path: str | Path | Mapping | RunConfig | None = None, **overrides) -> RunConfig:
    """A validated :class:`RunConfig` from a YAML path, a mapping or a config, with keyword overrides applied.

    Override keys are config keys: top-level (``seed=1``), dotted through a dict (``**{"train.epochs": 2}``), with
    ``__`` for dots (``train__epochs=2``), or a section mapping merged key by key (``train={"epochs": 2}``).
    """
    if isinstance(config_or_path, RunConfig):
        data, stem = config_or_path.model_dump(mode="json"), None
    elif isinstance(config_or_path, Mapping):
        data, stem = json.loads(json.dumps(dict(config_or_path))), None
    elif config_or_path is None:
        data, stem = {}, None
    elif isinstance(config_or_path, (str, Path)):
        base = load_config(config_or_path)  # validates the file alone first: its errors name the file
        data, stem = base.model_dump(mode="json"), Path(config_or_path).stem
        if "name" not in read_yaml(config_or_path):
            data.pop("name", None)  # the default name follows the overridden seed, as on the command line
    else:
        raise ConfigError(
            f"protosphere.run takes a YAML path, a mapping or a RunConfig, got {type(config_or_path).__name__}."
        )
    for key, value in overrides.items():
        _set_dotted(data, key, value)
    config = validate_config(data, source=str(config_or_path) if stem else "config")
    if config.name is None:
        config.name = f"{stem or config.method.name}-seed{config.seed}"
    return config


def run(
    config_or_path: str | Path | Mapping | RunConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    **overrides,
) -> Run:
    """Train and evaluate one config (as ``protosphere run``) and return the finished :class:`Run`.

    ``progress``: rich progress bars (default: when the output is a terminal or a notebook; one line per epoch
    otherwise). ``resume`` / ``overwrite`` as the command-line flags.
    """
    from rich.console import Console

    from .runs.runner import run as run_config

    config = resolve_config(config_or_path, **overrides)
    console = Console()
    if progress is None:
        progress = console.is_terminal or console.is_jupyter
    arguments = [repr(str(config_or_path) if isinstance(config_or_path, Path) else config_or_path)]
    arguments += [f"{key}={value!r}" for key, value in overrides.items()]
    record, run_dir = run_config(
        config,
        resume=resume,
        overwrite=overwrite,
        console=console,
        show_progress=progress,
        command=f"protosphere.run({', '.join(arguments)})",
    )
    return Run(run_dir, config, record)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Open a finished run folder (``runs/<name>``): its config, results and, on first use, its trained model."""
    files = RunDir(run_dir)
    if not files.results.is_file():
        raise RunError(
            f"{files.path} holds no finished run (no {files.RESULTS}); pass a folder written by "
            f"`protosphere run`, e.g. runs/<name>."
        )
    record = files.read_results()
    config = read_yaml(files.config) if files.config.is_file() else record.config
    if not config:
        raise RunError(
            f"{files.path} has neither {files.CONFIG} nor a config in {files.RESULTS}; it cannot be reloaded."
        )
    return Run(files.path, validate_config(config, source=str(files.config)), record, device=device)


class Run:
    """A finished run: ``config`` (RunConfig), ``record`` (the typed results.json), ``results`` (the same as plain
    data), ``model`` (the trained method, eval mode)."""

    def __init__(
        self,
        run_dir: str | Path,
        config: RunConfig,
        record: StoredRecord | RunRecord | dict,
        device: str | torch.device = "cpu",
    ):
        self.run_dir = Path(run_dir)
        self.files = RunDir(self.run_dir)
        self.config = config
        self.record = StoredRecord.from_data(record, source=str(self.files.results))
        self.results = self.record.to_data()
        self.device = torch.device(device)
        self._scenario = None
        self._model = None
        self._context = None
        self._fitted = False

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r}, method={self.record.method!r}, headline={self.headline_classifier!r})"

    # ---------------------------------------------------------------------------------------------------------
    @property
    def headline_classifier(self) -> str:
        return self.record.headline_classifier or next(iter(self.record.accuracy))

    @property
    def classifiers(self) -> list[str]:
        """Names of the classifiers the run evaluated; the first is the headline."""
        return list(self.record.accuracy)

    @property
    def class_names(self) -> list[str]:
        return list(self.record.scenario.class_names or [])

    @property
    def report_path(self) -> Path:
        return self.files.report

    def accuracy(self, classifier: str | None = None, setting: str = "class_il") -> list[list[float]]:
        """The accuracy matrix A[t][j] (%) of ``classifier`` (default: the headline)."""
        return self.record.accuracy[classifier or self.headline_classifier][setting]

    def _last_task(self) -> int:
        """Index of the run's last task: from the scenario record, else from the accuracy matrix (older files)."""
        if self.record.scenario.num_tasks is not None:
            return self.record.scenario.num_tasks - 1
        return len(next(iter(self.record.accuracy[self.headline_classifier].values()))) - 1

    # ---------------------------------------------------------------------------------------------------------
    @property
    def scenario(self):
        if self._scenario is None:
            from .runs.runner import build_scenario_from_config

            self._scenario = build_scenario_from_config(self.config)
        return self._scenario

    def checkpoint_path(self) -> Path:
        """The checkpoint holding the model after the last task: ``last.ckpt``, else the last task's own."""
        return self.files.final_checkpoint_path(self._last_task())

    @property
    def model(self):
        """The trained method after the last task (a :class:`~protosphere.methods.base.Method`), in eval mode."""
        if self._model is None:
            from .config import config_fingerprint
            from .methods.base import TaskContext
            from .runs.runner import build_method

            state = self.files.load_final_checkpoint(self._last_task())
            if state.get("fingerprint") != config_fingerprint(self.config):
                raise RunError(
                    f"The checkpoint in {self.run_dir} was written by a different config than its "
                    f"config.yaml; the folder was changed after the run."
                )
            scenario = self.scenario
            method = build_method(self.config, scenario)
            if self.config.fabric.precision == "64-true":
                method = method.double()  # as fabric converted it for the run
            method.load_state_dict(state["method"])
            method = method.to(self.device).eval()
            self._context = TaskContext.of(scenario, scenario.num_tasks - 1, self.device)
            method.task = self._context  # which classes the learner has met (the nearest-prototype mask)
            self._model = method
        return self._model

    # ---------------------------------------------------------------------------------------------------------
    def _images(self, images) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            images = torch.as_tensor(images)
        shape = tuple(self.scenario.image_shape)
        if images.dim() == 3 and shape[0] == 1 and tuple(images.shape[1:]) == shape[1:]:
            images = images.unsqueeze(1)  # (N, H, W) grey images
        if images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(
                f"expected images of shape (N, {', '.join(map(str, shape))}) as the dataset holds them, "
                f"got {tuple(images.shape)}"
            )
        if images.dtype == torch.uint8:
            return images
        if not images.is_floating_point():
            raise ValueError(f"expected uint8 images or floats in [0, 1], got dtype {images.dtype}")
        if not bool(torch.isfinite(images).all()):  # NaN passes every comparison with 0 and 1 below
            raise ValueError(
                f"images hold {int((~torch.isfinite(images)).sum())} NaN/inf value(s); pass finite "
                f"floats in [0, 1] or uint8 pixels"
            )
        if len(images) and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ValueError("float images must lie in [0, 1] (divide uint8 pixels by 255)")
        return images

    def _batches(self, images, fn) -> torch.Tensor:
        from .data.scenarios import model_input
        from .evaluation import extract_features
        from .runs.runner import precision_dtype

        images = self._images(images)
        channels_last = self.config.model.channels_last  # the layout the engine evaluates in

        def run(batch):
            return fn(model_input(batch.to(self.device), channels_last)).to(torch.get_default_dtype()).cpu()

        with precision_dtype(self.config.fabric.precision):
            if not len(images):  # an empty answer of the right shape: (0, d) features, (0, K) scores
                with torch.no_grad():
                    return run(torch.zeros((1, *images.shape[1:]), dtype=images.dtype))[:0]
            return extract_features(run, images, self.config.eval.batch_size)

    def encode(self, images) -> torch.Tensor:
        """Encoder features (N, d) of ``images``: uint8 (N, C, H, W) as the datasets hold them, or floats in [0, 1]."""
        model = self.model
        return self._batches(images, model.features)

    def logits(self, images, classifier: str | None = None) -> torch.Tensor:
        """Class scores (N, K) of one of the run's classifiers (default: the headline)."""
        model = self.model
        name = classifier or self.headline_classifier
        table = model.classifiers()
        if name not in table:
            raise ValueError(f"unknown classifier {name!r}; this run has {', '.join(table)}")
        if not self._fitted:
            from .runs.runner import precision_dtype

            # refit what the run fitted after its last task (probe, kNN bank, class means)
            with torch.no_grad(), precision_dtype(self.config.fabric.precision):
                model.prepare_evaluation(self._context)
            self._fitted = True
        return self._batches(images, table[name])

    def predict(self, images, classifier: str | None = None) -> torch.Tensor:
        """Predicted class ids (N,) of ``images`` with ``classifier`` (default: the run's headline classifier)."""
        return self.logits(images, classifier).argmax(1)
