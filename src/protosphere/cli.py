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

    console = stdout_console(width=160)  # `| head` or a full disk switch the output off, never the run
    config = load_config(args.config, args.overrides)
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
    return 0


def cmd_datasets(args) -> int:
    from .data import dataset_status, format_dataset_status, load_dataset

    if args.ensure:
        for name in args.ensure:
            dataset = load_dataset(name, download=True)
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
    from .catalog import config_rows
    from .methods import method_class

    method_class(args.method)  # an unknown name is a ConfigError that suggests the closest
    rows = config_rows(args.method)
    width = max(len(key) for key, *_ in rows)
    dwidth = min(40, max(len(default) for _, default, *_ in rows))
    print(f"# every key of a `{args.method}` run config: key = default  [type]  description")
    section = None
    for key, default, kind, description in rows:
        top = key.split(".")[0] if "." in key else ""
        if top != section:
            section = top
            print(f"\n[{section}]" if section else "[run]")
        text = f"{key:<{width}} = {default:<{dwidth}}  [{kind}]"
        print(f"{text}  {description}" if description else text)
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
    p = sub.add_parser("run", help="train and evaluate one config")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=2 seed=1")
    p.add_argument("--resume", action="store_true", help="continue the run in runs/<name> from its last checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace runs/<name> if it holds a protosphere run (nothing else is ever removed)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("datasets", help="where each dataset is found and how to get the missing ones")
    p.add_argument(
        "--ensure",
        nargs="+",
        metavar="NAME",
        help="load and verify these datasets, downloading into the user cache when they are missing",
    )
    p.set_defaults(func=cmd_datasets)
    p = sub.add_parser("report", help="re-render runs/<name>/report.html (and plots/) from results.json")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, e.g. runs/fnc2-seed0")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("compare", help="run or reuse configs × seeds on one scenario; table of mean ± std")
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
    p = sub.add_parser("bench", help="throughput (incl. the batch-10 Mammoth protocol) and loss benchmarks")
    p.add_argument("--only", nargs="+", choices=["throughput", "losses"], help="run only these")
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="also write the reports, one after the other, to FILE (default: print them only; never a "
        "file git tracks, such as the committed benchmarks/results/*.txt)",
    )
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("methods", help="every method, one line each, with its paper")
    p.set_defaults(func=cmd_methods)
    p = sub.add_parser("config", help="every config key of a method with its default and description")
    p.add_argument("method", metavar="METHOD", help="a method name (see `protosphere methods`)")
    p.set_defaults(func=cmd_config)
    return parser


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
