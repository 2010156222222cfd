"""protosphere beside the authors' own code: per seed and mean ± std, the difference, Welch's p and wall time per run.

Reads protosphere's runs (``<runs>/<config>-seed<S>/results.json``, e.g. from ``protosphere compare ... --out``) and
the authors' runs written by the drivers in this folder (``<authors>/<code>-...-seed<S>.json`` with ``class_il`` /
``task_il`` accuracy rows and a wall time), and prints a Markdown table per pair: final average class-IL and task-IL
accuracy (the mean over the test tasks after the last task). Parity, as docs/reproduction.md states it: |Δ mean| ≤ 1.5
points and Welch p > 0.05.

    python benchmarks/authors/side_by_side.py --runs runs/mammoth-protocol --authors runs/authors \\
        --pair er-200=mammoth-er-200 --pair derpp-200=mammoth-derpp-200 --classifier head
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from protosphere.report.compare import format_mean_std, mean_std, welch_p

PARITY_POINTS, PARITY_P = 1.5, 0.05
VERDICT = {True: "met", False: "missed", None: "not decided (fewer than 2 seeds on a side)"}


def final_average(rows: list[list[float]]) -> float:
    last = rows[-1]
    return sum(last) / len(last)


def ours(runs: Path, config: str, classifier: str | None, refit: bool = False) -> dict[int, dict]:
    """Final class-IL / task-IL per seed of protosphere's runs; with ``refit``, from each run's ``refit.json``
    (``refit_probe.py``: the last task's classifiers refitted by the current code) instead of its results.json."""
    out = {}
    for path in sorted(runs.glob(f"{config}-seed*/results.json")):
        seed = int(re.search(r"-seed(\d+)$", path.parent.name).group(1))
        record = json.loads(path.read_text())
        if record.get("status") != "complete":
            continue
        name = classifier or record["headline_classifier"]
        accuracy = record["accuracy"][name]
        if refit:
            refitted = path.parent / "refit.json"
            if not refitted.is_file():
                continue
            accuracy = json.loads(refitted.read_text())["accuracy"][name]
        out[seed] = {
            "class_il": final_average(accuracy["class_il"]),
            "task_il": final_average(accuracy["task_il"]),
            "wall_s": record["timings"]["total_s"],
        }
    return out


def theirs(authors: Path, stem: str) -> dict[int, dict]:
    out = {}
    for path in sorted(authors.glob(f"{stem}-seed*.json")):
        record = json.loads(path.read_text())
        wall = record.get("wall_s")
        if wall is None:
            wall = sum(v for k, v in record.items() if k.endswith("_s") and isinstance(v, (int, float)))
        out[int(record["seed"])] = {
            "class_il": final_average(record["class_il"]),
            "task_il": final_average(record["task_il"]),
            "wall_s": wall,
        }
    return out


def speed(ours_s: float, theirs_s: float) -> str:
    """protosphere's wall time against the authors' code's, as a ratio above 1 either way."""
    return f"×{theirs_s / ours_s:.2f} faster" if ours_s <= theirs_s else f"×{ours_s / theirs_s:.2f} slower"


def table(label: str, a: dict[int, dict], b: dict[int, dict]) -> tuple[str, list[str]]:
    """The Markdown rows of one pair and the verdict lines."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return f"| {label} | no seed run by both codes |||||||\n", []
    lines, verdicts = [], []
    for setting in ("class_il", "task_il"):
        x, y = [a[s][setting] for s in seeds], [b[s][setting] for s in seeds]
        mx, my = mean_std(x), mean_std(y)
        delta = mx["mean"] - my["mean"]
        p = welch_p(x, y)
        parity = None if p is None else abs(delta) <= PARITY_POINTS and p > PARITY_P  # None: too few seeds
        per_seed = " / ".join(f"{u:.2f} vs {v:.2f}" for u, v in zip(x, y))
        lines.append(
            f"| {label} | {setting.replace('_', '-').replace('il', 'IL')} | {per_seed} | "
            f"{format_mean_std(mx)} | {format_mean_std(my)} | {delta:+.2f} | "
            f"{'—' if p is None else f'{p:.2f}'} | {VERDICT[parity]} |"
        )
        verdicts.append(parity)
    wall_a = mean_std([a[s]["wall_s"] for s in seeds])["mean"]
    wall_b = mean_std([b[s]["wall_s"] for s in seeds])["mean"]
    lines.append(
        f"| {label} | wall time per run | "
        + " / ".join(f"{a[s]['wall_s']:.0f} vs {b[s]['wall_s']:.0f} s" for s in seeds)
        + f" | {wall_a:.0f} s | {wall_b:.0f} s | {speed(wall_a, wall_b)} | | |"
    )
    overall = None if None in verdicts else all(verdicts)
    return "\n".join(lines) + "\n", [f"{label}: seeds {', '.join(map(str, seeds))}; parity {VERDICT[overall]}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of protosphere run folders")
    parser.add_argument("--authors", type=Path, required=True, help="folder of the authors' run JSONs")
    parser.add_argument(
        "--pair",
        action="append",
        required=True,
        metavar="CONFIG=STEM",
        help="protosphere config name = the authors' file stem (before -seed<S>.json)",
    )
    parser.add_argument("--classifier", help="protosphere's classifier (default: each run's headline)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument(
        "--refit",
        action="store_true",
        help="protosphere's last row from each run's refit.json (refit_probe.py), not results.json",
    )
    args = parser.parse_args(argv)
    text = (
        "| pair | setting | per seed: protosphere vs authors (%) | protosphere | authors | Δ (points) | Welch p | "
        "parity |\n|---|---|---|---|---|---|---|---|\n"
    )
    notes = []
    for pair in args.pair:
        config, _, stem = pair.partition("=")
        rows, verdicts = table(config, ours(args.runs, config, args.classifier, args.refit), theirs(args.authors, stem))
        text += rows
        notes += verdicts
    text += "\nCommand: `python " + " ".join(["benchmarks/authors/side_by_side.py", *sys.argv[1:]]) + "`\n"
    print(text + "\n".join(notes))
    if args.out:
        args.out.write_text(text + "\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
