"""Turn a validated :class:`RunConfig` into a finished run directory: data, scenario, model, method, engine, results."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import torch

from .config import RunConfig
from .errors import ConfigError, RunError


def build_fabric(config: RunConfig):
    from lightning_fabric import Fabric

    from .methods import method_class

    fc = config.fabric
    if fc.threads is not None:
        torch.set_num_threads(fc.threads)
    strategy = fc.strategy
    if strategy == "ddp" and method_class(config.method.name).has_unused_parameters(config.method):
        strategy = "ddp_find_unused_parameters_true"  # e.g. a predictor idle in task 0, NCT experts of later tasks
    try:
        return Fabric(accelerator=fc.accelerator, devices=fc.devices, num_nodes=fc.num_nodes, strategy=strategy,
                      precision=fc.precision)
    except (ValueError, RuntimeError, TypeError) as exc:  # e.g. an unknown strategy, more devices than exist
        reason = " ".join(str(exc).split())
        raise ConfigError(f"Invalid fabric settings (accelerator={fc.accelerator}, devices={fc.devices}, "
                          f"strategy={fc.strategy}, precision={fc.precision}): {reason}") from None


def build_scenario_from_config(config: RunConfig):
    from .data import load_dataset
    from .data.scenarios import build_scenario

    if config.data.dataset == "domainnet":
        return _domainnet_scenario(config)
    kwargs = {"image_size": config.data.image_size} if config.data.image_size else {}
    dataset = load_dataset(config.data.dataset, root=config.data.root, download=config.data.download, **kwargs)
    sc = config.scenario
    if sc.imbalance_ratio is not None:
        from .data.imbalance import long_tail_dataset

        dataset = long_tail_dataset(dataset, sc.imbalance_ratio, seed=config.seed)
    return build_scenario(dataset, sc.kind, sc.num_tasks, classes_per_task=sc.classes_per_task,
                          class_order=sc.class_order, shuffle_classes=sc.shuffle_classes, seed=config.seed,
                          train_fraction=config.data.train_fraction, domain=sc.domain, max_rotation=sc.max_rotation)


def check_processes(config: RunConfig, world_size: int) -> None:
    """What the number of processes must divide, checked before anything is written: the global batch, and the
    global replay memory ``method.buffer_size`` (each of W ranks keeps buffer_size / W over its own shard)."""
    if world_size == 1:
        return
    if config.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size={config.train.batch_size} is the global batch and must be divisible by "
                          f"the number of processes ({world_size}); use a multiple of {world_size}.")
    size = getattr(config.method, "buffer_size", 0) or 0
    if size % world_size:
        raise ConfigError(f"method.buffer_size={size} is the global replay memory, split evenly over the "
                          f"{world_size} processes, so it must be divisible by {world_size}; use a multiple of "
                          f"{world_size}, e.g. {size - size % world_size or world_size}.")


def scenario_notes(config: RunConfig, scenario) -> list[str]:
    """What the user should know about how the scenario was built (e.g. an uneven class split)."""
    sizes = [len(task.classes) for task in scenario.tasks]
    if scenario.kind == "class_il" and config.scenario.classes_per_task is None and len(set(sizes)) > 1:
        return [f"{scenario.num_classes} classes do not split evenly into {scenario.num_tasks} tasks, so the tasks "
                f"get {'/'.join(map(str, sizes))} classes; set scenario.classes_per_task to choose the sizes."]
    return []


def _domainnet_scenario(config: RunConfig):
    """DomainNet domain-IL: one task per domain (all classes in each), as in CaSSLe / Sy-CON."""
    from .data.image_folder import DOMAINNET_DOMAINS, load_domainnet
    from .data.scenarios import scenario_from_domains

    sc = config.scenario
    domains = list(config.data.domains or DOMAINNET_DOMAINS)
    if sc.kind != "domain_il":
        raise ConfigError(f"DomainNet is a domain-incremental benchmark (one task per domain); set "
                          f"scenario.kind=domain_il instead of {sc.kind}.")
    unknown = [d for d in domains if d not in DOMAINNET_DOMAINS]
    if unknown:
        raise ConfigError(f"data.domains has {', '.join(map(repr, unknown))}, not a DomainNet domain; choose from "
                          f"{', '.join(DOMAINNET_DOMAINS)}.")
    if len(domains) != sc.num_tasks:
        raise ConfigError(f"DomainNet has one task per domain: data.domains lists {len(domains)} "
                          f"({', '.join(domains)}) but scenario.num_tasks is {sc.num_tasks}; make them agree.")
    if sc.imbalance_ratio is not None:
        raise ConfigError("scenario.imbalance_ratio is not available for DomainNet; drop it.")
    datasets = load_domainnet(config.data.root, domains, image_size=config.data.image_size or 64, seed=config.seed)
    return scenario_from_domains(datasets, train_fraction=config.data.train_fraction, seed=config.seed)


def build_method(config: RunConfig, scenario, world_size: int = 1):
    from .data.augment import build_augmentation
    from .methods import method_class
    from .methods.base import Transforms
    from .models import build_backbone, init_weights

    channels, size = scenario.image_shape[0], scenario.image_shape[1]
    kwargs = {"hidden": tuple(config.model.mlp_hidden)} if config.model.backbone == "mlp" else {}
    backbone = build_backbone(config.model.backbone, in_channels=channels, image_size=size, **kwargs)
    if config.model.channels_last and config.model.backbone != "mlp":
        backbone = backbone.to(memory_format=torch.channels_last)
    augment = build_augmentation(config.train.augmentation, image_size=size, channels=channels, mean=scenario.mean,
                                 std=scenario.std, flip=config.train.flip, normalize=config.train.normalize)
    normalize = build_augmentation("none", image_size=size, channels=channels, mean=scenario.mean, std=scenario.std,
                                   normalize=config.train.normalize)
    cls = method_class(config.method.name)
    try:
        method_config = cls.resolve_config(config.method, scenario)
        size = getattr(method_config, "buffer_size", 0)
        if size and config.eval.probe_buffer_size not in (None, size):
            raise ConfigError(f"eval.probe_buffer_size={config.eval.probe_buffer_size} is for memory-free runs; with "
                              f"a training buffer (method.buffer_size={size}) the linear probe uses that buffer, so "
                              f"leave eval.probe_buffer_size unset.")
        # per-rank share of the global memory; Co2L's memory is filled from the whole previous task on every rank
        # alike (the engine shards its rows), so there each rank keeps it all
        if world_size > 1 and size and getattr(method_config, "buffer_sampling", None) != "co2l":
            method_config = method_config.model_copy(update={"buffer_size": size // world_size})
        method = cls(method_config, backbone, scenario.num_classes, Transforms(augment, normalize))
        method.configure_evaluation(config.eval, seed=config.seed)
    except ValueError as exc:  # e.g. an ETF dimension too small for the label space
        raise ConfigError(f"method `{config.method.name}`: {exc}") from None
    return init_weights(method, config.model.init)  # whole network, heads included (Mammoth's MNISTMLP.apply(xavier))


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a folder a protosphere run wrote: a real folder (not a link) whose config.yaml or
    results.json is a mapping naming this folder. Only such a folder is ever removed (``--overwrite``)."""
    import json

    import yaml

    if run_dir.is_symlink() or not run_dir.is_dir():
        return False
    for file, parse in (("config.yaml", yaml.safe_load), ("results.json", json.loads)):
        try:
            data = parse((run_dir / file).read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("name") == run_dir.name:
            return True
    return False


def check_run_dir(config: RunConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """The checks of :func:`prepare_run_dir`, without touching anything (so a run that fails later leaves no trace)."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one of them.")
    run_dir = Path(config.output_dir) / config.name
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite and not resume:
            raise RunError(
                f"Output directory {run_dir} already exists; pass --resume to continue that run, --overwrite to "
                f"replace it, or name=<new name> for a new run."
            )
        if overwrite and not holds_run(run_dir):
            raise RunError(
                f"--overwrite removes only a protosphere run folder, and {run_dir} is not one (no config.yaml or "
                f"results.json of a run named {config.name}); choose another name=... or move its files away."
            )
    elif resume:
        raise RunError(f"Cannot resume: {run_dir} holds no run; start it without --resume.")
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(f"Cannot write to output directory {run_dir} ({existing} is not a directory); choose a "
                       f"writable output_dir=....")
    return run_dir


def check_same_config(run_dir: Path, config: RunConfig) -> None:
    """Refuse to resume a run directory whose config.yaml differs from ``config`` in anything that changes numbers."""
    from .config import read_yaml, validate_config
    from .engine import config_fingerprint

    path = run_dir / "config.yaml"
    if not path.exists():
        return
    try:
        saved = validate_config(read_yaml(path), source=str(path))
    except ConfigError:
        saved = None
    if saved is None or config_fingerprint(saved) != config_fingerprint(config):
        raise RunError(f"The run in {run_dir} was made with a different config; resume with the run's own "
                       f"{path} and no changed overrides, or start a new run with --overwrite.")


def prepare_run_dir(config: RunConfig, resume: bool = False, overwrite: bool = False) -> Path:
    run_dir = check_run_dir(config, resume=resume, overwrite=overwrite)
    if overwrite and run_dir.is_dir() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"Cannot write to output directory {run_dir} ({exc.strerror}); choose a writable "
                       f"output_dir=... or fix its permissions.") from None
    return run_dir


def load_checkpoint(run_dir: Path, config: RunConfig) -> dict:
    """The newest readable checkpoint of ``run_dir``: ``last.ckpt``, or when it is missing or unreadable (a truncated
    copy, a full disk) the ``task-<t>.ckpt`` of the latest task that reads. ``state["loaded_from"]`` names the file."""
    from .engine import CHECKPOINT_VERSION, config_fingerprint

    folder = run_dir / "checkpoints"
    tasks = sorted(folder.glob("task-*.ckpt"), reverse=True,
                   key=lambda p: int(p.stem[5:]) if p.stem[5:].isdigit() else -1)
    unreadable = []
    for path in [folder / "last.ckpt", *tasks]:
        if not path.is_file():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file
            unreadable.append(f"{path.name} ({type(exc).__name__})")
            continue
        if not isinstance(state, dict):
            unreadable.append(f"{path.name} (not a protosphere checkpoint)")
            continue
        if state.get("version") != CHECKPOINT_VERSION:
            raise RunError(f"Checkpoint {path} has format version {state.get('version')}, this protosphere reads "
                           f"{CHECKPOINT_VERSION}; rerun with --overwrite.")
        if state.get("fingerprint") != config_fingerprint(config):
            raise RunError(f"Checkpoint {path} was written by a different config; resume with the run's own "
                           f"{run_dir / 'config.yaml'} or start a new run with --overwrite.")
        state["loaded_from"] = str(path)
        return state
    if unreadable:
        raise RunError(f"Cannot resume: no checkpoint in {folder} is readable ({', '.join(unreadable)}); rerun with "
                       f"--overwrite.")
    raise RunError(f"Cannot resume: {folder} holds no checkpoint (the run stopped before its first one); rerun "
                   f"with --overwrite.")


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


def run(config: RunConfig, resume: bool = False, overwrite: bool = False, console=None,
        show_progress: bool = True, command: str | None = None) -> tuple[dict, Path]:
    """Train and evaluate ``config``; ``command``: how the run was started, for results.json (default: sys.argv)."""
    from .engine import Engine, config_fingerprint, environment
    from .protocol import summary_metrics
    from .record import RunDir, save_embedding_snapshot

    from .distributed import rank_zero_first
    from .provenance import command_line, source_revision

    started = time.time()
    # Under DDP every process runs this function (torchrun / SLURM start them all; fabric.launch() starts the others
    # on one machine), so rank 0 alone checks and creates the run directory and the others follow its verdict.
    fabric = build_fabric(config)
    fabric.launch()
    check_processes(config, fabric.world_size)
    run_dir = Path(config.output_dir) / config.name
    files = RunDir(run_dir)
    loaded: dict = {}

    def check() -> bool:
        check_run_dir(config, resume=resume, overwrite=overwrite)
        if not resume:
            return False
        check_same_config(run_dir, config)
        if (run_dir / "results.json").exists():
            return True
        loaded["state"] = load_checkpoint(run_dir, config)  # validates version and config fingerprint
        return False

    if rank_zero_first(fabric, check):
        return files.read_results().to_data(), run_dir
    state = (loaded.get("state") or load_checkpoint(run_dir, config)) if resume else None
    if state is not None and Path(state["loaded_from"]).name != "last.ckpt" and console is not None \
            and fabric.is_global_zero:
        console.print(f"note: {run_dir / 'checkpoints' / 'last.ckpt'} is missing or unreadable; resuming from "
                      f"{state['loaded_from']}")

    # everything that can still fail on bad input (data, scenario, method) fails before anything is written
    from .loggers import check_trackers

    check_trackers(config)
    fabric.seed_everything(config.seed, verbose=False)
    scenario = build_scenario_from_config(config)
    method = build_method(config, scenario, world_size=fabric.world_size)
    if console is not None and fabric.is_global_zero:
        for note in scenario_notes(config, scenario):
            console.print(f"note: {note}")
    from .threads import apply_threads

    apply_threads(config, method, scenario.image_shape)  # from the config alone: same numbers on a busy machine
    rank_zero_first(fabric, lambda: (prepare_run_dir(config, resume=resume, overwrite=overwrite),
                                     files.write_config(config)))

    def write_embeddings(features, labels, weights):
        save_embedding_snapshot(run_dir, features, labels, weights)

    engine = Engine(config, run_dir, fabric, console=console, show_progress=show_progress,
                    write_embeddings=write_embeddings)
    with precision_dtype(config.fabric.precision):
        raw = engine.fit(scenario, method, resume=state)
    random_init = raw["random_init"]
    results = {
        "name": config.name,
        "status": "complete",
        "seed": config.seed,
        "method": config.method.name,
        "headline_classifier": next(iter(raw["accuracy"])),
        "classifier_data": {name: text for name, text in method.classifier_data().items() if name in raw["accuracy"]},
        "scenario": {
            "name": scenario.name, "kind": scenario.kind, "num_tasks": scenario.num_tasks,
            "num_classes": scenario.num_classes, "class_order": scenario.class_order,
            "class_names": scenario.class_names, "tasks": [list(t.classes) for t in scenario.tasks],
            **scenario.extra,
        },
        "accuracy": raw["accuracy"],
        "metrics": summary_metrics(raw["accuracy"], random_init, scenario.kind),
        "random_init": random_init,
        "neural_collapse": raw["neural_collapse"],
        "diagnostics": raw.get("diagnostics", []),
        "per_epoch": raw.get("per_epoch", []),
        **({"corruptions": raw["corruptions"]} if "corruptions" in raw else {}),
        **({"confusion": raw["confusion"]} if "confusion" in raw else {}),
        "fingerprint": config_fingerprint(config),
        "command": command if command is not None else command_line(),
        "code": source_revision(),
        "timings": {**raw["timings"], "total_s": time.time() - started},
        "environment": {**environment(),
                        "device": str(fabric.device), "world_size": fabric.world_size,
                        "precision": config.fabric.precision},
        "config": config.model_dump(mode="json"),
    }
    if fabric.is_global_zero:
        record = files.write_results(results)
        if config.eval.report == "inline":
            from .report import try_write_report

            try_write_report(run_dir, record, console=console)  # a plotting failure is a warning, never a lost run
        elif config.eval.report == "background":
            report_in_background(run_dir)
    return results, run_dir


def report_in_background(run_dir: Path):
    """Start ``protosphere report RUN_DIR`` as a detached, low-priority process (its output goes to
    ``RUN_DIR/report.log``) and return at once: matplotlib's import and the plots (≈ 2–3 s) leave the run's wall time,
    and at ``nice`` 10 they take a core only when nothing else wants it. Returns the process."""
    import os
    import subprocess
    import sys

    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    from .record import RunDir

    with open(RunDir(run_dir).report_log, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "protosphere.cli", "report", str(run_dir)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=lambda: os.nice(10))
