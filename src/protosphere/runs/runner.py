"""Turn a validated :class:`RunConfig` into a finished run directory: data, scenario, model, method, engine, results."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric

from ..config import RunConfig, config_fingerprint
from ..data import load_dataset
from ..data.augment import build_augmentation
from ..data.image_folder import DOMAINNET_DOMAINS, load_domainnet
from ..data.imbalance import long_tail_dataset
from ..data.scenarios import build_scenario, scenario_from_domains
from ..distributed import check_processes, rank_zero_first
from ..errors import ConfigError, shorten
from ..methods import method_class
from ..methods.base import Transforms
from ..models import build_backbone, init_weights
from ..provenance import command_line, environment, source_revision
from ..threads import apply_threads, usable_cores
from .engine import Engine
from .interrupt import stop_on_signals
from .loggers import check_trackers
from .record import CodeRevision, Environment, Provenance, RunRecord, StoredRecord
from .rundir import LOCK_FD_VARIABLE, RunDir, RunLock, save_embedding_snapshot


def build_fabric(config: RunConfig):

    fc = config.fabric
    if fc.threads is not None:
        torch.set_num_threads(fc.threads)
    strategy = fc.strategy
    if strategy == "ddp" and method_class(config.method.name).has_unused_parameters(config.method):
        strategy = "ddp_find_unused_parameters_true"  # e.g. a predictor idle in task 0, NCT experts of later tasks
    try:
        return Fabric(
            accelerator=fc.accelerator,
            devices=fc.devices,
            num_nodes=fc.num_nodes,
            strategy=strategy,
            precision=fc.precision,
        )
    except (ValueError, RuntimeError, TypeError) as exc:  # e.g. an unknown strategy, more devices than exist
        reason = " ".join(str(exc).split())
        raise ConfigError(
            f"Invalid fabric settings (accelerator={fc.accelerator}, devices={fc.devices}, "
            f"strategy={fc.strategy}, precision={fc.precision}): {reason}"
        ) from None


def build_scenario_from_config(config: RunConfig, dataset=None):
    """The config's scenario over ``data.dataset``, or over ``dataset`` (an ImageDataset, e.g. synthetic images of
    the dataset's shape) when given."""
    if dataset is None and config.data.dataset == "domainnet":
        return _domainnet_scenario(config)
    if dataset is None:
        kwargs = {"image_size": config.data.image_size} if config.data.image_size else {}
        if config.data.workers is not None:
            kwargs["workers"] = config.data.workers
        dataset = load_dataset(config.data.dataset, root=config.data.root, download=config.data.download, **kwargs)
    sc = config.scenario
    if sc.imbalance_ratio is not None:
        dataset = long_tail_dataset(dataset, sc.imbalance_ratio, seed=config.seed)
    return build_scenario(
        dataset,
        sc.kind,
        sc.num_tasks,
        classes_per_task=sc.classes_per_task,
        class_order=sc.class_order,
        shuffle_classes=sc.shuffle_classes,
        seed=config.seed,
        train_fraction=config.data.train_fraction,
        domain=sc.domain,
        max_rotation=sc.max_rotation,
    )


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_threads(config: RunConfig) -> None:
    """Far more threads than cores only makes each thread wait for a core (4 x cores leaves room for hyper-threads
    and a deliberate oversubscription); refused before torch is told."""
    threads, cores = config.fabric.threads, usable_cores()
    if threads is not None and threads > 4 * cores:
        raise ConfigError(
            f"fabric.threads={shorten(threads)} is more than 4 x the {cores} CPU core(s) this process "
            f"may use; use at most {4 * cores} (or leave it unset for torch's choice)."
        )


def check_memory(config: RunConfig, image_shape) -> None:
    """A replay buffer whose images alone (uint8) would fill more than half of the RAM is refused before anything
    is written (or allocated), instead of the machine swapping or the process being killed hours in."""
    size = getattr(config.method, "buffer_size", 0) or 0
    memory = physical_memory()
    image_bytes = int(np.prod(image_shape))
    if memory and size * image_bytes > memory // 2:
        fits = max(1, memory // 2 // image_bytes)
        raise ConfigError(
            f"method.buffer_size={shorten(size)} keeps {size * image_bytes / 1e9:,.1f} GB of "
            f"{'x'.join(map(str, image_shape))} uint8 images, more than half of this machine's "
            f"{memory / 1e9:,.1f} GB of RAM; use a buffer_size below {fits:,}."
        )


ONE_VIEW_AUGMENTATIONS = ("none", "supervised")  # no colour change, at most a crop and a flip


def scenario_notes(config: RunConfig, scenario) -> list[str]:
    """What the user should know about how the run was set up: an uneven class split, a contrastive method on an
    augmentation too weak for two views to differ much."""
    notes = []
    sizes = [len(task.classes) for task in scenario.tasks]
    if scenario.kind == "class_il" and config.scenario.classes_per_task is None and len(set(sizes)) > 1:
        notes.append(
            f"{scenario.num_classes} classes do not split evenly into {scenario.num_tasks} tasks, so the tasks "
            f"get {'/'.join(map(str, sizes))} classes; set scenario.classes_per_task to choose the sizes."
        )
    name, augmentation = config.method.name, config.train.augmentation
    if method_class(name).training_views(config.method) > 1 and augmentation in ONE_VIEW_AUGMENTATIONS:
        notes.append(
            f"{name} contrasts two augmented views of each image, but train.augmentation={augmentation} makes "
            f"them {'identical' if augmentation == 'none' else 'differ only by a crop and a flip'}; its recipe "
            f"uses train.augmentation=contrastive."
        )
    return notes


def _domainnet_scenario(config: RunConfig):
    """DomainNet domain-IL: one task per domain (all classes in each), as in CaSSLe / Sy-CON."""

    sc = config.scenario
    domains = list(config.data.domains or DOMAINNET_DOMAINS)
    if sc.kind != "domain_il":
        raise ConfigError(
            f"DomainNet is a domain-incremental benchmark (one task per domain); set "
            f"scenario.kind=domain_il instead of {sc.kind}."
        )
    unknown = [d for d in domains if d not in DOMAINNET_DOMAINS]
    if unknown:
        raise ConfigError(
            f"data.domains has {', '.join(map(repr, unknown))}, not a DomainNet domain; choose from "
            f"{', '.join(DOMAINNET_DOMAINS)}."
        )
    if len(domains) != sc.num_tasks:
        raise ConfigError(
            f"DomainNet has one task per domain: data.domains lists {len(domains)} "
            f"({', '.join(domains)}) but scenario.num_tasks is {sc.num_tasks}; make them agree."
        )
    if sc.imbalance_ratio is not None:
        raise ConfigError("scenario.imbalance_ratio is not available for DomainNet; drop it.")
    datasets = load_domainnet(
        config.data.root,
        domains,
        image_size=config.data.image_size or 64,
        seed=config.seed,
        workers=config.data.workers,
    )
    return scenario_from_domains(datasets, train_fraction=config.data.train_fraction, seed=config.seed)


def build_method(config: RunConfig, scenario, world_size: int = 1):

    channels, size = scenario.image_shape[0], scenario.image_shape[1]
    kwargs = {"hidden": tuple(config.model.mlp_hidden)} if config.model.backbone == "mlp" else {}
    if config.model.stem != "cifar":  # only then: a registered backbone without stems keeps working
        kwargs["stem"] = config.model.stem
    backbone = build_backbone(config.model.backbone, in_channels=channels, image_size=size, **kwargs)
    if config.model.channels_last and config.model.backbone != "mlp":
        backbone = backbone.to(memory_format=torch.channels_last)
    augment = build_augmentation(
        config.train.augmentation,
        image_size=size,
        channels=channels,
        mean=scenario.mean,
        std=scenario.std,
        flip=config.train.flip,
        normalize=config.train.normalize,
        views=config.train.augment.view_options(),
        **config.train.augment.options(),  # what differs from the defaults, so a registered recipe sees only that
    )
    normalize = build_augmentation(
        "none",
        image_size=size,
        channels=channels,
        mean=scenario.mean,
        std=scenario.std,
        normalize=config.train.normalize,
    )
    cls = method_class(config.method.name)
    try:
        method_config = cls.resolve_config(config.method, scenario)
        size = getattr(method_config, "buffer_size", 0)
        if size and config.eval.probe_buffer_size not in (None, size):
            raise ConfigError(
                f"eval.probe_buffer_size={config.eval.probe_buffer_size} is for memory-free runs; with "
                f"a training buffer (method.buffer_size={size}) the linear probe uses that buffer, so "
                f"leave eval.probe_buffer_size unset."
            )
        # per-rank share of the global memory; Co2L's memory is filled from the whole previous task on every rank
        # alike (the engine shards its rows), so there each rank keeps it all
        if world_size > 1 and size and getattr(method_config, "buffer_sampling", None) != "co2l":
            method_config = method_config.model_copy(update={"buffer_size": size // world_size})
        method = cls(method_config, backbone, scenario.num_classes, Transforms(augment, normalize))
        method.configure_evaluation(config.eval, seed=config.seed)
    except ValueError as exc:  # e.g. an ETF dimension too small for the label space
        raise ConfigError(f"method `{config.method.name}`: {exc}") from None
    return init_weights(method, config.model.init)  # whole network, heads included (Mammoth's MNISTMLP.apply(xavier))


@contextlib.contextmanager
def precision_dtype(precision: str):
    """A float64 run (``fabric.precision=64-true``) trains and evaluates in float64 throughout: batches and replayed
    images are converted to it (``model_input`` uses the default dtype) and every tensor a method or a loss creates
    is made in it, so no float32 tensor meets a float64 one. The network is built before, in float32, and converted
    by fabric (``module.double()``), so a float64 run starts from the float32 run's initial weights. The previous
    default returns afterwards."""
    previous = torch.get_default_dtype()
    if precision == "64-true":
        torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def run(
    config: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    console=None,
    show_progress: bool = True,
    command: str | None = None,
) -> tuple[StoredRecord, Path]:
    """Train and evaluate ``config``; returns the run's record (as a reader of its results.json gets it) and its
    folder. ``command``: how the run was started, for results.json (default: sys.argv).

    The run folder is locked (``run.lock``) from the first look at it until results.json and the report are
    written, so a second process on the same folder (a --resume, --overwrite or report) is refused, naming this one."""

    lock = RunLock(RunDir.of(config).path)
    try:
        return _run(_Session(config, lock, resume, overwrite, console, show_progress), command)
    finally:
        lock.release()


def _run(session: _Session, command: str | None) -> tuple[StoredRecord, Path]:
    started = time.time()
    config = session.config
    check_threads(config)
    # Under DDP every process runs this function (torchrun / SLURM start them all; fabric.launch() starts the others
    # on one machine), so rank 0 alone checks and creates the run directory and the others follow its verdict.
    session.fabric = build_fabric(config)
    session.fabric.launch()
    check_processes(config, session.fabric.world_size)
    finished, state = session.check()
    if finished is not None:
        return finished, session.files.path
    scenario, method = session.build()
    results = session.train(scenario, method, state)
    origin = _provenance(config, command)
    record = RunRecord.assemble(results, origin, _environment(config, session.fabric), time.time() - started)
    return session.finish(record), session.files.path


@dataclass
class _Session:
    """One call of :func:`run`: its config, folder and lock, what it was asked (resume / overwrite) and where it
    reports; its steps are the methods, in the order :func:`_run` calls them."""

    config: RunConfig
    lock: object  # the run's RunLock
    resume: bool
    overwrite: bool
    console: object
    show_progress: bool
    fabric: object = None

    def __post_init__(self):
        self.files = RunDir.of(self.config)

    @property
    def speaks(self) -> bool:
        return self.console is not None and self.fabric.is_global_zero

    def check(self) -> tuple[StoredRecord | None, dict | None]:
        """Check the run folder (rank 0; the others follow its verdict): the finished record when a --resume finds
        the run done, else the checkpoint to continue from (None for a new run)."""

        config, files, fabric = self.config, self.files, self.fabric
        loaded: dict = {}

        def check() -> bool:
            files.check_no_links()  # run.lock is opened in the folder: never through a link
            if files.path.is_dir():
                self.lock.acquire()  # before the folder is read, and long before --overwrite empties it
            files.check(resume=self.resume, overwrite=self.overwrite)
            if not self.resume:
                return False
            files.check_same_config(config)
            if files.results.exists():
                return True
            loaded["state"] = files.load_checkpoint(config)  # validates version and config fingerprint
            files.check_world_size(loaded["state"], fabric.world_size)
            return False

        if rank_zero_first(fabric, check):
            return files.read_results(), None
        state = (loaded.get("state") or files.load_checkpoint(config)) if self.resume else None
        if state is not None and Path(state["loaded_from"]) != files.last_checkpoint and self.speaks:
            self.console.print(
                f"note: {files.last_checkpoint} is missing or unreadable; resuming from {state['loaded_from']}"
            )
        return None, state

    def build(self):
        """The scenario and the method: everything that can still fail on bad input (trackers, data, scenario,
        method) fails here, before anything is written."""

        config, fabric = self.config, self.fabric
        check_trackers(config)
        fabric.seed_everything(config.seed, verbose=False)
        scenario = build_scenario_from_config(config)
        check_memory(config, scenario.image_shape)
        method = build_method(config, scenario, world_size=fabric.world_size)
        if self.speaks:
            for note in scenario_notes(config, scenario):
                self.console.print(f"note: {note}")
        apply_threads(config, method, scenario.image_shape)  # from the config alone: same numbers on a busy machine
        if self.resume and self.speaks and not self.files.metrics.exists():
            # a log, not the record (results.json and the checkpoints are): refusing would leave --overwrite as the
            # only way to finish the run, so it is started afresh and the user is told what it lacks
            self.console.print(
                f"note: {self.files.metrics} is missing; it is started afresh and holds only what the "
                f"run logs from now on (earlier rows are lost; results.json is not affected)."
            )
        return scenario, method

    def train(self, scenario, method, state: dict | None):
        """Prepare the folder, write config.yaml and run the engine; returns the protocol's results."""

        config, files, fabric = self.config, self.files, self.fabric

        def write_embeddings(features, labels, weights):
            save_embedding_snapshot(files.path, features, labels, weights)

        # from the moment the folder is written until training ends, SIGTERM/SIGINT stop the run at its next
        # checkpoint (RunInterrupted after the step under way), so a signalled run never leaves a folder without one
        with files.errors_name_checkpoint(), stop_on_signals() as stop, precision_dtype(config.fabric.precision):
            rank_zero_first(
                fabric,
                lambda: (
                    files.prepare(resume=self.resume, overwrite=self.overwrite, lock=self.lock),
                    files.write_config(config),
                ),
            )
            engine = Engine(
                config,
                files.path,
                fabric,
                console=self.console,
                show_progress=self.show_progress,
                write_embeddings=write_embeddings,
                stop=stop,
            )
            return engine.fit(scenario, method, resume=state)

    def finish(self, record) -> StoredRecord:
        """Write results.json (rank 0) and the report as the config asks; returns the record as read."""
        read = StoredRecord.from_data(record)
        if not self.fabric.is_global_zero:
            return read
        files = self.files
        with files.errors_name_checkpoint():
            files.write_results(record)
            if self.config.eval.report == "inline":
                from ..report import try_write_report  # matplotlib: imported only when the report is written inline

                try_write_report(files.path, read, console=self.console)  # a plotting failure is a warning only
            elif self.config.eval.report == "background":
                report_in_background(files.path, self.lock)
        return read


def _provenance(config: RunConfig, command: str | None):
    """Where the run came from: its config's fingerprint, the command and the code that ran it."""

    command = command if command is not None else command_line()
    return Provenance(fingerprint=config_fingerprint(config), command=command, code=CodeRevision(**source_revision()))


def _environment(config: RunConfig, fabric):
    """What the run ran on: software versions, the machine, and fabric's device, processes and precision."""

    return Environment(
        **environment(), device=str(fabric.device), world_size=fabric.world_size, precision=config.fabric.precision
    )


def report_in_background(run_dir: Path, lock=None):
    """Start ``protosphere report RUN_DIR`` as a detached, low-priority process (its output goes to
    ``RUN_DIR/report.log``) and return at once: matplotlib's import and the plots (≈ 2–3 s) leave the run's wall time,
    and at ``nice`` 10 they take a core only when nothing else wants it. The run's ``lock``, when held, passes to the
    report process, so the folder stays locked until the report is written. Returns the process."""

    package_root = str(Path(__file__).resolve().parents[2])  # the folder that holds the protosphere package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    inherited = (lock.inheritable(),) if lock is not None and lock.held else ()
    if inherited:
        env[LOCK_FD_VARIABLE] = str(inherited[0])
    with open(RunDir(run_dir).report_log, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "protosphere.cli", "report", str(run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            pass_fds=inherited,
            preexec_fn=lambda: os.nice(10),
        )
    if inherited:
        lock.hand_over()
    return process
