"""Experiments through the library: configs × grid values × seeds, run or reused, side by side
(``protosphere compare``).

    protosphere compare configs/seq-fmnist/er-200.yaml --grid method.buffer_size=200,500 --seeds 3 --jobs 2 \\
        --markdown table.md

Every run is ``<out>/<name>`` with name = the config's file stem, each grid value as ``key-value``, then
``seed<s>`` (``er-200-buffer_size-500-seed1``). A run is **reused** when its ``results.json`` is complete and was
produced by the same config (same :func:`~protosphere.config.config_fingerprint`), **resumed** when it stopped part-way
with a checkpoint of the same config, and **trained** otherwise, always through :func:`protosphere.runs.runner.run`.
With ``jobs`` > 1 the runs to train go to that many separate ``protosphere run`` processes, each logging to
``<out>/<name>.log`` and single-threaded (``fabric.threads=1``, unless the config or an override sets the threads); a
run that fails is reported with its log while the others finish. With one job the runs train in this process, with
progress bars, and the first failure stops compare.

Where a key gets its value, lowest precedence first: the config file, the key=value overrides (every row), the row's
grid value, then what compare sets per run (seed, name, output_dir, the threads of parallel jobs, and the W&B group of
runs that log to W&B without one: ``--group`` or the name of ``--out``). A key cannot be
both an override and a grid axis, and seed, name and output_dir belong to compare (use --seeds and --out).

The tables (rows = configs × grid values; mean ± std over seeds) are rendered by :mod:`protosphere.report.compare`:
printed with rich and written as ``compare.md``, ``compare.json``, ``compare.tex`` (LaTeX, booktabs) and
``compare.html`` (with plots, PNG and PDF) in ``<out>``, and, when asked, the same Markdown or LaTeX table, with the
command that produced it, to another file (``--markdown FILE``, ``--latex FILE``).
"""

from __future__ import annotations

import itertools
import json
import shlex
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..config import config_fingerprint, load_config, parse_override, plain_name, validate_config
from ..errors import ConfigError, Interrupted, RunError
from ..report.compare import (
    BEST_RULE,
    Entry,
    best_labels,
    best_test,
    build_columns,
    config_differences,
    metric_value,
    rich_table,
    summarize_rows,
    to_html,
    to_latex,
    to_markdown,
)
from . import runner
from .interrupt import handling_signals
from .record import StoredRecord
from .rundir import RunDir, atomic_write

RUN_KEYS = ("seed", "name", "output_dir")  # set by compare for every run


# ---------------------------------------------------------------------------------------------------------------
# grids
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridAxis:
    """One ``--grid KEY=V1,V2`` option: a dotted config key and its values, as typed (parsed as YAML like overrides)."""

    key: str
    values: tuple[str, ...]

    @property
    def spec(self) -> str:
        return f"{self.key}={','.join(self.values)}"


def split_values(text: str) -> list[str]:
    """``200,500`` → ``["200", "500"]``; commas inside brackets stay (``[100,100],[256]`` is two lists)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid(specs: Sequence[str]) -> list[GridAxis]:
    """The ``--grid`` options as axes, in the order given; each error names the option and how to fix it."""
    axes: list[GridAxis] = []
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"--grid {spec!r} is not KEY=V1,V2; write the dotted config key, `=`, then the values "
                f"separated by commas, e.g. --grid method.buffer_size=200,500."
            )
        if key in RUN_KEYS:
            raise ConfigError(
                f"--grid {spec}: compare sets `{key}` for every run itself; use --seeds N for seeds "
                f"and --out DIR for where the runs go."
            )
        values = split_values(text)
        if any(not v for v in values):
            raise ConfigError(
                f"--grid {spec} has an empty value; separate the values by single commas, e.g. --grid {key}=1,2."
            )
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {spec} lists a value twice; give each value once (--seeds repeats runs).")
        if any(a.key == key for a in axes):
            raise ConfigError(
                f"--grid {key} is given twice; list all its values in one option, e.g. --grid {key}={','.join(values)}."
            )
        axes.append(GridAxis(key, tuple(values)))
    return axes


def axis_names(axes: Sequence[GridAxis]) -> list[str]:
    """The short name of each axis in row labels: the key's last part (``buffer_size``), or the whole key when two
    axes share their last part."""
    last = [a.key.rsplit(".", 1)[-1] for a in axes]
    return [name if last.count(name) == 1 else a.key for name, a in zip(last, axes)]


def grid_points(axes: Sequence[GridAxis]) -> list[tuple[tuple[str, str], ...]]:
    """The cross product of the axes' values as ((key, value), ...) tuples, the first axis varying slowest; one empty
    point without a grid."""
    return list(itertools.product(*[[(a.key, v) for v in a.values] for a in axes]))


def point_label(label: str, point: Sequence[tuple[str, str]], names: Sequence[str]) -> str:
    """A row's label: the config's label, then ``name=value`` per grid axis (``er-200 buffer_size=500``)."""
    return " ".join([label, *(f"{name}={value}" for name, (_, value) in zip(names, point))])


def wandb_group(config, group: str) -> list[str]:
    """The override that puts a run logging to W&B into ``group``; none when it logs nowhere or names a group. The
    whole section is given (as JSON, which YAML reads), since ``logging.wandb`` may be a bare ``true``."""
    section = config.logging.wandb
    if section is None or section.group is not None:
        return []
    return ["logging.wandb=" + json.dumps({**section.model_dump(mode="json"), "group": group})]


def override_key(text: str) -> str:
    return ".".join(parse_override(text)[0])


@dataclass
class PlannedRun:
    """One run of a row: its config, the overrides that make it from the config file, and how it is obtained."""

    entry: Entry
    config_path: Path
    overrides: list[str]
    config: object  # RunConfig


def labels_of(paths: Sequence[Path]) -> list[str]:
    """Row labels of the config files: the file stem, with the folder name in front where two stems are equal."""
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        dup = next(p for p in paths if resolved.count(p.resolve()) > 1)
        raise ConfigError(f"Config {dup} is given twice; pass each config once (use --seeds for repeats).")
    labels = [p.stem for p in paths]
    if len(set(labels)) != len(labels):
        labels = [f"{p.parent.name}-{p.stem}" if labels.count(p.stem) > 1 else p.stem for p in paths]
    if len(set(labels)) != len(labels):
        raise ConfigError(
            "Two configs have the same file name and folder name, so their runs would share a "
            "directory; rename one of them."
        )
    return labels


def expand(
    paths: Sequence[Path],
    overrides: Sequence[str],
    axes: Sequence[GridAxis],
    seeds: int,
    out: Path,
    jobs: int = 1,
    group: str | None = None,
) -> list[PlannedRun]:
    """Every run of configs × grid points × seeds 0..seeds−1, row by row (config, then grid point, then seed). A row
    that logs to W&B without a group of its own joins ``group`` (default: the name of the ``out`` folder), so one
    compare's runs sit together in W&B."""
    overrides = list(overrides)
    clash = sorted({override_key(o) for o in overrides} & {a.key for a in axes})
    if clash:
        raise ConfigError(
            f"{', '.join(clash)} is both a key=value override and a --grid axis; keep one of them "
            f"(the grid's values are the ones the runs would use)."
        )
    labels, names = labels_of(paths), axis_names(axes)
    rows = [
        (path, point_label(label, point, names), [f"{k}={v}" for k, v in point])
        for path, label in zip(paths, labels)
        for point in grid_points(axes)
    ]
    row_configs = [load_config(path, overrides + grid) for path, _, grid in rows]
    check_same_scenario([f"{path} ({label})" if grid else str(path) for path, label, grid in rows], row_configs)
    planned, seen = [], {}
    for (path, label, grid), row_config in zip(rows, row_configs):
        entry = Entry(path, label)
        threads = ["fabric.threads=1"] if jobs > 1 and row_config.fabric.threads is None else []
        per_row = threads + wandb_group(row_config, group or Path(out).resolve().name)
        for s in range(seeds):
            name = f"{plain_name(label)}-seed{s}"  # a plain folder name, e.g. for `nct-50+5x10.yaml`
            if name in seen:
                raise ConfigError(
                    f"Rows {seen[name]!r} and {label!r} would share the run folder {name}; give grid "
                    f"values that differ in letters or digits, not only in punctuation."
                )
            seen[name] = label
            run_overrides = overrides + grid + [f"seed={s}", f"name={name}", f"output_dir={out}"] + per_row
            config = load_config(path, run_overrides)
            entry.configs.append(config)
            planned.append(PlannedRun(entry, path, run_overrides, config))
    return planned


# ---------------------------------------------------------------------------------------------------------------
# configs and runs
# ---------------------------------------------------------------------------------------------------------------
def scenario_key(config) -> tuple:
    return (config.data.dataset, config.scenario.kind, config.scenario.num_tasks)


def check_same_scenario(names: Sequence, configs: Sequence) -> None:
    keys = [scenario_key(c) for c in configs]
    if len(set(keys)) > 1:
        described = "; ".join(f"{p}: dataset {k[0]}, {k[1]}, {k[2]} tasks" for p, k in zip(names, keys))
        raise ConfigError(
            f"The configs do not share one scenario ({described}); compare configs with the same "
            f"data.dataset, scenario.kind and scenario.num_tasks (override them, e.g. "
            f"scenario.num_tasks={keys[0][2]})."
        )


def run_fingerprint(record: StoredRecord) -> str | None:
    """Fingerprint of the config a results.json was produced by (None when it cannot be told): stored since early
    files of schema version 1, else computed from the stored config."""
    if record.fingerprint:
        return record.fingerprint
    if not record.config:
        return None
    try:
        return config_fingerprint(validate_config(record.config))
    except Exception:  # noqa: BLE001 - an older or foreign schema: not reusable
        return None


def reusable_results(run_dir: Path, config) -> StoredRecord | None:
    """The record of the finished run in ``run_dir`` when ``config`` produced it; None otherwise."""
    files = RunDir(run_dir)
    if not files.results.is_file():
        return None
    try:
        record = files.read_results()
    except RunError:  # unreadable or not a results file: nothing to reuse
        return None
    if record.status != "complete":
        return None
    return record if run_fingerprint(record) == config_fingerprint(config) else None


def plan(config, overwrite: bool) -> tuple[str, StoredRecord | None]:
    """How the run of ``config`` is obtained: ``("reused", results)``, or ``("resume" | "train" | "overwrite", None)``;
    a folder holding another config's run raises RunError unless ``overwrite``."""
    files = RunDir.of(config)
    run_dir = files.path
    found = reusable_results(run_dir, config)
    if found is not None:
        return "reused", found
    occupied = run_dir.is_dir() and bool(files.entries())  # a stale run.lock alone is no run
    if occupied and not overwrite:
        if files.results.is_file():
            raise RunError(
                f"{run_dir} holds a finished run of a different config; pass --overwrite to rerun it "
                f"with this one, or choose another --out."
            )
        if files.last_checkpoint.is_file():
            try:
                files.load_checkpoint(config)
            except RunError:
                raise RunError(
                    f"{run_dir} holds an unfinished run of a different config (or an unreadable "
                    f"checkpoint); pass --overwrite to rerun it, or choose another --out."
                ) from None
            return "resume", None
        raise RunError(
            f"{run_dir} exists but holds no results or checkpoint; pass --overwrite to rerun it, or "
            f"choose another --out."
        )
    return ("overwrite" if occupied else "train"), None


def obtain(config, overwrite: bool, console=None, show_progress: bool = False) -> tuple[StoredRecord, str]:
    """Reuse, resume or train the run of ``config`` in this process; returns (results, how)."""
    how, results = plan(config, overwrite)
    if how == "reused":
        return results, "reused"
    results, _ = runner.run(
        config, resume=how == "resume", overwrite=how == "overwrite", console=console, show_progress=show_progress
    )
    return results, "resumed" if how == "resume" else "trained"


def run_command(run: PlannedRun, how: str) -> list[str]:
    """The ``protosphere run`` process that trains or resumes ``run`` (the same config: same file, same overrides)."""
    command = [sys.executable, "-m", "protosphere.cli", "run", str(run.config_path), *run.overrides, "--no-progress"]
    return command + {"resume": ["--resume"], "overwrite": ["--overwrite"]}.get(how, [])


def log_path(config) -> Path:
    return Path(config.output_dir) / f"{config.name}.log"


def last_error(log: Path) -> str:
    """The one-sentence error a failed ``protosphere run`` printed last (or the log's last line)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["empty log"])[-1]


class RunProcesses:
    """The ``protosphere run`` processes of a parallel compare. A SIGTERM/SIGINT to compare is passed on to every
    one of them (each stops at its next checkpoint), no further one starts, and compare waits for them, so no run
    is left training as an orphan. Each runs in its own session: a Ctrl-C on the terminal reaches compare alone,
    and every run gets exactly one signal (a second one would stop it at once, without a checkpoint)."""

    def __init__(self):
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.signum: int | None = None

    def run(self, run: PlannedRun, how: str) -> int | None:
        """Train or resume ``run`` and return its exit status; None when compare was stopped before it started."""
        log = log_path(run.config)
        log.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:  # a signal handled while another thread starts a process still reaches it (see forward)
            if self.signum is not None:
                return None
            with open(log, "w") as handle:
                process = subprocess.Popen(
                    run_command(run, how),
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.running.add(process)
        try:
            return process.wait()
        finally:
            with self.lock:
                self.running.discard(process)

    def forward(self, signum: int, frame=None) -> None:
        """The signal handler (main thread, which never holds the lock: it waits on the futures)."""
        self.signum = signum
        with self.lock:
            for process in list(self.running):
                if process.poll() is None:
                    process.send_signal(signum)


def obtain_parallel(runs: Sequence[PlannedRun], overwrite: bool, jobs: int, console=None) -> list[dict]:
    """Obtain every run, training up to ``jobs`` at a time in separate processes; fills each entry's results and
    status (None and "failed" for a run whose process failed) and returns the failures as {run, log, error}."""
    plans = [plan(run.config, overwrite) for run in runs]  # every refusal before anything trains
    outcome: dict[int, tuple[StoredRecord | None, str]] = {}
    total, done = len(runs), 0

    def report(run: PlannedRun, how: str, results: StoredRecord | None, detail: str = "") -> None:
        nonlocal done
        done += 1
        if console is None:
            return
        if results is None:
            console.print(
                f"[bold][{done}/{total}][/] {run.config.name}: [bold red]failed[/] ({detail}); log: "
                f"{log_path(run.config)}",
                highlight=False,
            )
            return
        fa = metric_value(results, None, "class_il", "final_average_accuracy")
        console.print(
            f"[bold][{done}/{total}][/] {run.config.name}: {how}, class-IL final avg acc "
            f"{'n/a' if fa is None else f'{fa:.2f}'}"
        )

    for i, (run, (how, results)) in enumerate(zip(runs, plans)):
        if how == "reused":
            outcome[i] = (results, "reused")
            report(run, "reused", results)
    pending = [i for i in range(len(runs)) if i not in outcome]
    if console is not None and pending:
        console.print(
            f"training {len(pending)} run(s), {min(jobs, len(pending))} at a time in separate processes; "
            f"each logs to {Path(runs[0].config.output_dir)}/<run>.log",
            highlight=False,
        )
    failures = []
    processes = RunProcesses()
    with handling_signals(processes.forward), ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(processes.run, runs[i], plans[i][0]): i for i in pending}
        for future in as_completed(futures):
            i = futures[future]
            run, how = runs[i], "resumed" if plans[i][0] == "resume" else "trained"
            code = future.result()
            if code is None or processes.signum is not None:
                continue  # stopped by the signal: the runs are resumed when the same command runs again
            results = reusable_results(Path(run.config.output_dir) / run.config.name, run.config) if code == 0 else None
            if results is None:
                error = (
                    f"exit status {code}: {last_error(log_path(run.config))}"
                    if code != 0
                    else "the process ended without a finished results.json of this config"
                )
                failures.append({"run": run.config.name, "log": str(log_path(run.config)), "error": error})
                outcome[i] = (None, "failed")
                report(run, how, None, error)
            else:
                outcome[i] = (results, how)
                report(run, how, results)
    if processes.signum is not None:
        stopped = sum(1 for i in pending if i not in outcome)
        raise Interrupted(
            processes.signum,
            f"compare interrupted by {signal.Signals(processes.signum).name}: "
            f"{stopped} run(s) stopped at their last checkpoint (see their logs in "
            f"{Path(runs[0].config.output_dir)}); run the same command again to continue (finished "
            f"runs are reused, stopped ones resumed).",
        )
    for i, run in enumerate(runs):
        results, how = outcome[i]
        run.entry.results.append(results)
        run.entry.status.append(how)
    return sorted(failures, key=lambda f: f["run"])


def finished_runs(root: str | Path, stem: str) -> dict[int, StoredRecord]:
    """``{seed: record}`` of the complete runs compare wrote under ``root`` for the config file ``stem`` without a
    grid (``<root>/<stem>-seed<S>``), for scripts that compute more than compare's table from the same runs."""
    prefix = f"{plain_name(stem)}-seed"
    found = {}
    for run_dir in sorted(Path(root).glob(f"{prefix}*")):
        files = RunDir(run_dir)
        if run_dir.name[len(prefix) :].isdigit() and files.results.is_file():
            record = files.read_results()
            if record.status == "complete":
                found[record.seed] = record
    return found


def command_line(
    paths: Sequence[Path],
    seeds: int,
    out: Path,
    overrides: Sequence[str],
    overwrite: bool,
    grid: Sequence[GridAxis] = (),
    jobs: int = 1,
    markdown: str | Path | None = None,
    group: str | None = None,
    latex: str | Path | None = None,
) -> str:
    parts = ["protosphere", "compare", *map(str, paths), "--seeds", str(seeds), "--out", str(out)]
    for axis in grid:
        parts += ["--grid", axis.spec]
    if jobs > 1:
        parts += ["--jobs", str(jobs)]
    if markdown is not None:
        parts += ["--markdown", str(markdown)]
    if latex is not None:
        parts += ["--latex", str(latex)]
    if group is not None:
        parts += ["--group", group]
    if overwrite:
        parts.append("--overwrite")
    return shlex.join(parts + list(overrides))


def default_out(configs: Sequence) -> Path:
    return Path(configs[0].output_dir) / "compare"


# ---------------------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------------------
def compare(
    config_paths: Sequence[str | Path],
    seeds: int = 3,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    console=None,
    show_progress: bool = False,
    grid: Sequence[str] = (),
    jobs: int = 1,
    markdown: str | Path | None = None,
    latex: str | Path | None = None,
    group: str | None = None,
) -> dict:
    """Run or reuse every config × grid point × seed, then write ``compare.{md,json,tex,html}`` in ``out`` (and the
    Markdown table to ``markdown``, the LaTeX table to ``latex`` when given); returns the summary, whose ``failed``
    lists runs that failed. Runs that log to W&B without a group of their own join ``group`` (default: the name of
    ``out``)."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}.")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}.")
    if not config_paths:
        raise ConfigError("compare needs at least one config file.")
    paths = [Path(p) for p in config_paths]
    overrides = list(overrides)
    axes = parse_grid(grid)
    labels_of(paths)  # a config given twice is refused before any config is read
    base = [load_config(p, overrides) for p in paths]
    out = Path(out) if out is not None else default_out(base)
    runs = expand(paths, overrides, axes, seeds, out, jobs, group)
    entries = list({id(run.entry): run.entry for run in runs}.values())
    failed: list[dict] = []
    if jobs == 1:
        for done, run in enumerate(runs, start=1):
            config = run.config
            if console is not None:
                console.print(f"[bold][{done}/{len(runs)}][/] {config.name} …")
            results, how = obtain(config, overwrite, console=console, show_progress=show_progress)
            run.entry.results.append(results)
            run.entry.status.append(how)
            if console is not None:
                fa = metric_value(results, None, "class_il", "final_average_accuracy")
                console.print(
                    f"[bold][{done}/{len(runs)}][/] {config.name}: {how}, class-IL final avg acc "
                    f"{'n/a' if fa is None else f'{fa:.2f}'}"
                )
    else:
        failed = obtain_parallel(runs, overwrite, jobs, console=console)
    columns = build_columns([e.results for e in entries])
    rows = summarize_rows(entries, columns)
    dataset, kind, num_tasks = scenario_key(entries[0].configs[0])
    summary = {
        "command": command_line(paths, seeds, out, overrides, overwrite, axes, jobs, markdown, group, latex),
        "out": str(out),
        "seeds": list(range(seeds)),
        "grid": [{"key": a.key, "values": list(a.values)} for a in axes],
        "scenario": {
            "dataset": dataset,
            "kind": kind,
            "num_tasks": num_tasks,
            "description": f"{dataset}, {kind.replace('_', '-')}, {num_tasks} tasks",
        },
        "std": "sample standard deviation over seeds (ddof=1); null for one seed",
        "columns": [c.__dict__ for c in columns],
        "rows": rows,
        "best": best_labels(rows, columns),
        "best_test": best_test(rows, columns),
        "best_rule": BEST_RULE,
        "failed": failed,
        "differences": config_differences(entries),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.json", json.dumps(summary, indent=2))
    atomic_write(out / "compare.md", to_markdown(summary))
    atomic_write(out / "compare.tex", to_latex(summary))
    atomic_write(out / "compare.html", to_html(summary, out))
    written = [out / "compare.md", out / "compare.json", out / "compare.tex", out / "compare.html"]
    for copy, render, option, what in (
        (markdown, to_markdown, "--markdown", "Markdown"),
        (latex, to_latex, "--latex", "LaTeX"),
    ):
        if copy is None:
            continue
        copy = Path(copy)
        try:
            copy.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(copy, render(summary))
        except OSError as exc:
            raise RunError(
                f"Cannot write the {what} table to {copy} ({exc.strerror}); pass a writable {option} FILE."
            ) from None
        written.append(copy)
    if console is not None:
        console.print(rich_table(summary))
        console.print(f"written: {', '.join(map(str, written))}", highlight=False)
    return summary
