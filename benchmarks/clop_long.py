"""CLOP against its partner loss at one grid cell over seeds: each classifier's accuracy, the between-/within-class
effective ranks of the test features and the untrained network's probe, mean ± std over seeds, with how many seeds
collapsed (the rule of ``summarize_clop_grid.py``: loss diverged, between-class rank < 2, or probe < 50 %).

    python benchmarks/clop_long.py RUNS clop-f0.1-lam1 clop-f0.1-lam0 clop-f1.0-lam1 clop-f1.0-lam0

Runs are ``RUNS/<prefix>-s<seed>`` (a failed run's log is ``RUNS/<prefix>-s<seed>.log``); each row is labelled with
its config's label fraction and λ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from summarize_clop_grid import cell, grid_key

from protosphere.config import read_yaml
from protosphere.report.compare import format_mean_std, mean_std

COLUMNS = (("linear probe (%)", lambda c: c["acc"].get("linear_probe")),
           ("nearest prototype (%)", lambda c: c["acc"].get("nearest_prototype")),
           ("NCM (%)", lambda c: c["acc"].get("ncm")),
           ("between-class rank", lambda c: c["between"]),
           ("within-class rank", lambda c: c["within"]),
           ("untrained probe (%)", lambda c: c["init_probe"]))


def fmt(values: list[float | None]) -> str:
    stat = mean_std(values)
    return format_mean_std(stat) if stat["n"] else "—"


def seeds_of(runs: Path, prefix: str) -> dict[int, Path]:
    return {int(path.name[len(prefix) + 2:]): path for path in sorted(runs.glob(f"{prefix}-s*"))
            if path.is_dir() and path.name[len(prefix) + 2:].isdigit() and (path / "config.yaml").is_file()}


def table(runs: Path, prefixes: list[str]) -> list[str]:
    lines = ["| labels, λ | " + " | ".join(name for name, _ in COLUMNS) + " | collapsed | seeds |",
             "|---|" + "---|" * (len(COLUMNS) + 2)]
    for prefix in prefixes:
        found = seeds_of(runs, prefix)
        if not found:
            lines.append(f"| {prefix} (no run) |" + " |" * (len(COLUMNS) + 2))
            continue
        cells = {}
        for seed, path in found.items():
            how = "finished" if (path / "results.json").is_file() else "failed"
            cells[seed] = cell(path, how, runs / f"{path.name}.log")
        fraction, lam, _, _ = grid_key(read_yaml(next(iter(found.values())) / "config.yaml"))
        scored = [c for c in cells.values() if "acc" in c]
        values = [fmt([get(c) for c in scored]) for _, get in COLUMNS]
        collapsed = sum(c["state"] != "ok" for c in cells.values())
        lines.append(f"| {100 * fraction:g} %, λ = {lam:g} | " + " | ".join(values)
                     + f" | {collapsed} of {len(cells)} | {','.join(map(str, cells))} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("prefixes", nargs="+")
    args = parser.parse_args(argv)
    print("\n".join(table(args.runs, args.prefixes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
