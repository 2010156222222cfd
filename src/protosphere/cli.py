"""Command line: ``protosphere run | report | compare | datasets`` (and more as the library grows).

Every error a user can cause is printed as one sentence on stderr with exit status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import sys

from .errors import Interrupted, ProtosphereError


def _accuracy_table(record):
    from rich.table import Table

    tables = []
    headline = record.headline_classifier
    for setting, matrix in record.accuracy[headline].items():
        num_tasks = len(matrix[0])
        table = Table(
            title=f"{record.method} — {setting.replace('_', '-')} accuracy (%) [{headline}] "
            f"row = after task t, column = test task j"
        )
        table.add_column("after", justify="right")
        for j in range(num_tasks):
            table.add_column(f"T{j + 1}", justify="right")
        table.add_column("avg seen", justify="right")
        for t, row in enumerate(matrix):
            seen = row[: t + 1]
            table.add_row(
                f"T{t + 1}",
                *[f"{a:.1f}" if j <= t else f"[dim]{a:.1f}[/]" for j, a in enumerate(row)],
                f"[bold]{sum(seen) / len(seen):.2f}[/]",
            )
        tables.append(table)
    return tables


def _summary_lines(record) -> list[str]:
    lines = []
    for classifier, settings in record.metrics.items():
        for setting, m in settings.items():

            def fmt(key, m=m):
                value = getattr(m, key)
                return "n/a" if value is None else f"{value:.2f}"

            lines.append(
                f"{classifier:>18} {setting:>8}: final avg acc {fmt('final_average_accuracy')}  "
                f"avg incremental {fmt('average_incremental_accuracy')}  forgetting "
                f"{fmt('average_forgetting')}  BWT {fmt('backward_transfer')}  FWT {fmt('forward_transfer')}"
            )
    for classifier, data in record.classifier_data.items():
        lines.append(f"{classifier:>18} fitted on {data}")
    nc = next((n for n in reversed(record.neural_collapse) if n is not None), None)
    if nc is not None:
        values = nc.model_dump(exclude_none=True)
        keys = [k for k in ("nc1", "equinorm", "equiangularity", "max_angle", "nc3", "nc4") if k in values]
        lines.append(
            "neural collapse (test features, seen classes): " + "  ".join(f"{k} {values[k]:.4f}" for k in keys)
        )
    return lines


def cmd_run(args) -> int:
    from .config import load_config
    from .runs.progress import stdout_console
    from .runs.rundir import RunDir
    from .runs.runner import run

    config = load_config(args.config, args.overrides)
    if args.dry_run:
        print(_merged_config_text(args.config, args.overrides, config), end="")
        return 0
    console = stdout_console(width=160)  # `| head` or a full disk switch the output off, never the run
    from .provenance import command_line

    record, run_dir = run(
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        console=console,
        show_progress=not args.no_progress and console.is_terminal,
        command=command_line(getattr(args, "argv", None)),
    )
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:  # under DDP only the first process reports
        return 0
    for table in _accuracy_table(record):
        console.print(table)
    for line in _summary_lines(record):
        console.print(line)
    files = RunDir(run_dir)
    console.print(f"results: {files.results}  ({record.timings.total_s:.1f} s)")
    if files.report.is_file():
        console.print(f"report:  {files.report}", highlight=False, soft_wrap=True)
    elif config.eval.report == "background":
        console.print(
            f"report:  {files.report} (being written in the background, ready in a few seconds; its log: "
            f"{files.report_log})",
            highlight=False,
            soft_wrap=True,
        )
    return 0


def cmd_datasets(args) -> int:
    from .data import dataset_status, format_dataset_status, load_dataset

    if args.ensure:
        for name in args.ensure:
            dataset = load_dataset(name, download=not args.no_download)
            print(
                f"{dataset.name}: {len(dataset.train_labels)} train / {len(dataset.test_labels)} test images, "
                f"{dataset.num_classes} classes, verified, from {dataset.source}"
            )
        return 0
    print(format_dataset_status(dataset_status()))
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from .report import write_report
    from .report.html import load_results
    from .runs.rundir import RunDir, RunLock

    for run_dir in args.run_dirs:
        if not Path(run_dir).is_dir():  # load_results says what is wrong; nothing to lock
            load_results(run_dir)
        RunDir(run_dir).check_no_links()  # report.html and plots/ are written there
        with RunLock(run_dir, purpose="report"):  # never beside a run (or another report) writing the folder
            path = write_report(run_dir, load_results(run_dir))
        print(f"report: {path}")
    return 0


def cmd_compare(args) -> int:
    """Exit status 1 when a run failed (each named with its log on stderr); the table holds the runs that finished."""
    from .runs.progress import stdout_console
    from .runs.sweep import compare

    console = stdout_console(width=200)
    summary = compare(
        args.configs,
        seeds=args.seeds,
        out=args.out,
        overrides=args.overrides,
        overwrite=args.overwrite,
        console=console,
        show_progress=not args.no_progress and console.is_terminal,
        grid=args.grid or (),
        jobs=args.jobs,
        markdown=args.markdown,
        latex=args.latex,
        group=args.group,
    )
    for failure in summary["failed"]:
        print(f"failed: {failure['run']} ({failure['error']}); log: {failure['log']}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _split_configs_and_overrides(args) -> None:
    """`compare a.yaml b.yaml key=value ...`: positional words with `=` are overrides, the rest configs."""
    words = list(args.configs)
    args.configs = [w for w in words if "=" not in w]
    args.overrides = [w for w in words if "=" in w]


def cmd_bench(args) -> int:
    """Run the packaged benchmarks; reports are printed and, with --out FILE, written there (never over a file git
    tracks); exit status 1 when a benchmark misses a target."""
    from .bench import run_benchmarks

    failed = run_benchmarks(only=args.only, out=args.out)
    if args.out:
        print(f"bench: {args.out}")
    if failed:
        print(f"bench: targets missed in {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_methods(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .catalog import method_summaries

    table = Table(
        title="methods (method.name); `protosphere config METHOD` lists a method's settings", show_lines=False
    )
    table.add_column("method", style="bold", no_wrap=True)
    table.add_column("what it is, paper")
    for name, summary in method_summaries():
        table.add_row(name, summary)
    console = Console()
    if not console.is_terminal:
        for name, summary in method_summaries():  # one line a method for grep and pipes
            print(f"{name:<9} {summary}")
        return 0
    console.print(table)
    return 0


def cmd_config(args) -> int:
    """``config METHOD``: every key of a run of that method, with the default it gets (its recipe over the generic
    defaults); ``config FILE|RECIPE [key=value ...]``: the fully merged, validated config that ``run`` would train."""
    import difflib
    from pathlib import Path

    from .config import load_config, shipped_configs
    from .methods import method_class
    from .registry import METHODS

    target, overrides = args.target, list(args.overrides)
    if not Path(target).exists() and target not in shipped_configs():
        if target in METHODS and not overrides:
            return _print_method_keys(target)
        if "/" not in target and difflib.get_close_matches(target, METHODS.names(), n=1, cutoff=0.6):
            method_class(target)  # a misspelt method: the error names the closest one
    print(_merged_config_text(target, overrides, load_config(target, overrides)), end="")
    return 0


def _merged_config_text(target: str, overrides: list[str], config) -> str:
    from .config import dump_config, locate_config

    source = locate_config(target)
    applied = f" with {' '.join(overrides)}" if overrides else ""
    return (
        f"# {source}{applied}: the fully merged, validated config (bases, the method's recipe and overrides "
        f"applied); `protosphere run` trains exactly this\n" + dump_config(config)
    )


def _print_method_keys(method: str) -> int:
    from .catalog import config_rows
    from .config import SHIPPED_CONFIGS, locate_config
    from .methods import method_class

    recipe = method_class(method).recipe
    rows = config_rows(method)
    width = max(len(key) for key, *_ in rows)
    dwidth = min(40, max(len(default) for _, default, *_ in rows))
    origin = (
        f"its recipe ({locate_config(recipe).relative_to(SHIPPED_CONFIGS.parent).as_posix()}: optimizer, train, eval "
        f"and method) over the generic defaults"
        if recipe
        else "the generic defaults (this method has no recipe)"
    )
    print(f"# every key of a `{method}` run config: key = default  [type]  description; the defaults are {origin}")
    section = None
    for key, default, kind, description in rows:
        top = key.split(".")[0] if "." in key else ""
        if top != section:
            section = top
            print(f"\n[{section}]" if section else "[run]")
        text = f"{key:<{width}} = {default:<{dwidth}}  [{kind}]"
        print(f"{text}  {description}" if description else text)
    return 0


def cmd_configs(args) -> int:
    """List the shipped configs, or copy one out (bases resolved) as a starting file."""
    from .config import SHIPPED_CONFIGS, shipped_configs

    if args.copy:
        return _copy_config(args.copy, args.dest)
    print(f"# configs shipped with protosphere ({SHIPPED_CONFIGS}); run one by name: protosphere run NAME")
    shipped = shipped_configs()
    width = max(len(name) for name in shipped)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {_first_comment(path)}")
    return 0


def _first_comment(path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _copy_config(name: str, dest: str | None) -> int:
    """Write the shipped config ``name`` to ``dest`` (default ``./<name>.yaml``) as one standalone file: its header
    comments, then its keys with every ``base:`` merged in. Never over an existing file."""
    from pathlib import Path

    import yaml

    from .config import locate_config, read_yaml
    from .errors import ConfigError
    from .runs.rundir import atomic_write

    source = locate_config(name)
    target = Path(dest) if dest else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise ConfigError(f"{target} already exists; pass another destination or remove it first.")
    header = []
    for line in source.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    header.append(f"# Copied from protosphere's shipped config `{name}` (bases merged in); edit freely.")
    body = yaml.safe_dump(read_yaml(source), sort_keys=False, default_flow_style=None, width=120)
    atomic_write(target, ("\n".join(header) + "\n" + body).encode())
    print(f"wrote {target}; run it with: protosphere run {target}")
    return 0


COMMANDS_WITHOUT_PLUGINS = ("methods", "datasets")  # they still work, with a warning, when an installed one is broken


def _load_plugins(modules: list[str], command: str | None = None) -> None:
    """Import the ``--import`` modules and the installed ``protosphere.plugins`` entry points, so that what they
    register is known before a config is read. A plugin that fails is one sentence: an error, or a warning for an
    installed one when ``command`` does not need plugins."""
    import os

    from .errors import ConfigError
    from .registry import PluginLoadError, load_plugins

    if modules and os.getcwd() not in sys.path:  # as `python -m` does: a module beside the config is found
        sys.path.insert(0, os.getcwd())
    try:
        load_plugins(modules)
    except PluginLoadError as exc:
        if exc.installed and command in COMMANDS_WITHOUT_PLUGINS:
            print("warning: " + " ".join(str(exc).split()), file=sys.stderr)
            return
        raise ConfigError(str(exc)) from None
    except ModuleNotFoundError as exc:  # the --import module itself (a missing dependency is a PluginLoadError)
        wanted = next((m for m in modules if exc.name and (m == exc.name or m.startswith(exc.name + "."))), exc.name)
        raise ConfigError(
            f"--import {wanted}: no module named `{exc.name}` on the Python path; give a dotted module "
            f"name importable from the current folder or an installed package, or the path of a .py "
            f"file."
        ) from None


# each subcommand: the line `protosphere --help` gives it, the description its own --help opens with, examples to copy
COMMAND_HELP: dict[str, tuple[str, str, list[str]]] = {
    "run": (
        "train and evaluate one config",
        "Train a config task after task, evaluate every classifier after each task, and write runs/<name>/ "
        "(config.yaml, results.json, metrics.csv, checkpoints, plots/, report.html). CONFIG is a YAML file or the "
        "name of a shipped config (`protosphere configs` lists them).",
        [
            "protosphere run default",
            "protosphere run seq-fmnist/co2l seed=1 train.epochs=2",
            "protosphere run my.yaml --dry-run      # print the merged config and stop",
            "protosphere run runs/co2l-seed0/config.yaml --resume",
        ],
    ),
    "datasets": (
        "where each dataset is found and how to get the missing ones",
        "Show where protosphere finds each dataset and how to get a missing one, or load, verify and if needed "
        "download some.",
        [
            "protosphere datasets",
            "protosphere datasets --ensure fashion_mnist",
            "protosphere datasets --ensure fashion_mnist --no-download   # exit 2 when it is not here",
        ],
    ),
    "report": (
        "re-render runs/<name>/report.html (and plots/) from results.json",
        "Render report.html and plots/ of finished runs again from their results.json (a run writes its own).",
        ["protosphere report runs/default-seed0"],
    ),
    "compare": (
        "run or reuse configs × seeds on one scenario; table of mean ± std",
        "Train (or reuse, by config fingerprint) configs × --grid values × seeds, then print and write the table of "
        "mean ± std (compare.md, .json and .html in --out).",
        [
            "protosphere compare seq-fmnist/co2l seq-fmnist/fnc2 --seeds 3 --out runs/co2l-vs-fnc2",
            "protosphere compare seq-fmnist/er-200 --grid method.buffer_size=200,500 --jobs 2 --markdown er.md",
        ],
    ),
    "bench": (
        "throughput (incl. the batch-10 Mammoth protocol) and loss benchmarks",
        "Measure training throughput (batch 256 and the batch-10 Mammoth protocol) and the losses against "
        "pytorch-metric-learning; exit 1 when a target is missed.",
        ["protosphere bench", "protosphere bench --only losses --out runs/bench.txt"],
    ),
    "methods": (
        "every method, one line each, with its paper",
        "List every method with its paper.",
        ["protosphere methods"],
    ),
    "config": (
        "a method's keys and defaults, or the merged config a run would train",
        "With a METHOD: every key of its run config, with the default it gets (the method's recipe over the generic "
        "defaults) and a description. With a config FILE or shipped NAME (and overrides): the fully merged, "
        "validated config that `protosphere run` would train, then exit.",
        [
            "protosphere config fnc2",
            "protosphere config paper/fnc2-seq-cifar10-200",
            "protosphere config my.yaml seed=2 train.epochs=1",
        ],
    ),
    "configs": (
        "the configs shipped with protosphere; copy one out",
        "List the configs shipped with the package (run any by name), or copy one out as a standalone starting file "
        "(bases merged in).",
        ["protosphere configs", "protosphere configs --copy seq-fmnist/fnc2 my-fnc2.yaml"],
    ),
}


def _command(sub, name: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` gives what it does and examples to copy (:data:`COMMAND_HELP`)."""
    summary, description, examples = COMMAND_HELP[name]
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="protosphere",
        description="Prototype contrast on the unit hypersphere: continual learning with neural-collapse prototypes.",
    )
    parser.add_argument("--version", action="version", version=f"protosphere {__version__}")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (repeatable), e.g. one that registers a dataset, backbone, "
        "augmentation or method; the current folder is searched too",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = _command(sub, "run")
    p.add_argument("config", help="a YAML config file or a shipped config's name (see `protosphere configs`)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=2 seed=1")
    p.add_argument("--resume", action="store_true", help="continue the run in runs/<name> from its last checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace runs/<name> if it holds a protosphere run (nothing else is ever removed)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--dry-run", action="store_true", help="print the fully merged, validated config and exit without training"
    )
    p.set_defaults(func=cmd_run)
    p = _command(sub, "datasets")
    p.add_argument(
        "--ensure",
        nargs="+",
        metavar="NAME",
        help="load and verify these datasets, downloading into the user cache when they are missing",
    )
    p.add_argument(
        "--no-download", action="store_true", help="with --ensure: only look for the datasets, never download"
    )
    p.set_defaults(func=cmd_datasets)
    p = _command(sub, "report")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, e.g. runs/fnc2-seed0")
    p.set_defaults(func=cmd_report)
    p = _command(sub, "compare")
    p.add_argument(
        "configs",
        nargs="+",
        metavar="CONFIG.yaml | key=value",
        help="YAML configs sharing dataset, scenario kind and number of tasks, then dotted key=value "
        "overrides applied to all of them",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per config (default 3)")
    p.add_argument(
        "--out",
        default=None,
        help="directory for the runs and compare.{md,json,html} (default: <output_dir of the first config>/compare)",
    )
    p.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="also vary a dotted config key over these values (repeatable: the cross product of all "
        "grids x configs x seeds; run names add each key and value, e.g. er-200-buffer_size-500-seed0)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="train N runs at a time, each a separate single-threaded process logging to <out>/<run>.log "
        "(default 1: in this process, with progress bars)",
    )
    p.add_argument(
        "--markdown",
        metavar="FILE",
        default=None,
        help="also write the Markdown table, with the command that produced it, to FILE",
    )
    p.add_argument(
        "--latex",
        metavar="FILE",
        default=None,
        help="also write the LaTeX table (booktabs; compare.tex in --out holds the same), with the command, to FILE",
    )
    p.add_argument(
        "--group",
        metavar="NAME",
        default=None,
        help="W&B group of the runs that log to W&B without one (default: the name of the --out folder)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="rerun runs in --out that belong to a different config instead of stopping",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare)
    p = _command(sub, "bench")
    p.add_argument("--only", nargs="+", choices=["throughput", "losses"], help="run only these")
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="also write the reports, one after the other, to FILE (default: print them only; never a "
        "file git tracks, such as the committed benchmarks/results/*.txt)",
    )
    p.set_defaults(func=cmd_bench)
    p = _command(sub, "methods")
    p.set_defaults(func=cmd_methods)
    p = _command(sub, "config")
    p.add_argument(
        "target",
        metavar="METHOD | CONFIG",
        help="a method name (see `protosphere methods`), a YAML file or a shipped name",
    )
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides applied to CONFIG")
    p.set_defaults(func=cmd_config)
    p = _command(sub, "configs")
    p.add_argument("--copy", metavar="NAME", help="copy this shipped config out as a standalone file")
    p.add_argument("dest", nargs="?", metavar="DEST", help="where --copy writes (default: ./<name>.yaml)")
    p.set_defaults(func=cmd_configs)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of a closed pipe raises nothing more."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = ["protosphere", *(sys.argv[1:] if argv is None else argv)]
    # overrides may come after options (`run cfg.yaml --overwrite seed=1`), which argparse leaves unparsed
    leftover = [e for e in extra if not (args.command in ("run", "compare") and "=" in e and not e.startswith("-"))]
    if leftover:
        parser.error(f"unrecognized arguments: {' '.join(leftover)}")
    if args.command == "run":
        args.overrides = list(args.overrides) + [e for e in extra if e not in leftover]
    if args.command == "compare":
        _split_configs_and_overrides(args)
        args.overrides += [e for e in extra if e not in leftover]
    try:
        _load_plugins(args.imports, args.command)
        code = args.func(args)
        if argv is None:  # a command-line process about to exit: skip the garbage collector's passes over every
            import gc  # object of torch & co. at interpreter shut-down (~0.3 s of a short run; benchmarks/

            gc.freeze()  # results/run_overhead.txt); atexit handlers and file flushing run as usual
        return code
    except Interrupted as exc:  # SIGTERM/SIGINT: stopped at a checkpoint; how to continue, in one line
        print(exc.describe(args.imports), file=sys.stderr)
        return exc.exit_status
    except ProtosphereError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, even for wrapped library text
        return 2
    except BrokenPipeError:  # `protosphere config fnc2 | head`: the reader has what it wanted
        _silence_stdout()
        return 0
    except OSError as exc:  # a full disk, a read-only folder, an unreadable data folder, a name too long
        from .errors import describe_os_error

        print("error: " + " ".join(describe_os_error(exc).split()), file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "home directory" not in str(exc):  # pathlib's Path.home() without $HOME or a passwd entry; others are bugs
            raise
        print(
            "error: there is no home directory for the download cache ($HOME is unset and the user has none); "
            "set HOME, or XDG_CACHE_HOME and PROTOSPHERE_DATA, to a writable folder.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
