"""Tables of the CLOP stability grid: for each label fraction and loss, rows = batch size, columns = learning rate;
each cell gives linear-probe accuracy (%), the nearest-prototype accuracy where it exists, and the between-/within-class
effective ranks of the test features; "NaN" marks a run whose loss diverged. The runs are a ``protosphere compare``
grid (docs/results.md gives the command); this script reads its ``compare.json`` and the runs it names.

    python benchmarks/summarize_clop_grid.py RUNS_DIR

A cell is marked **collapsed** when the loss diverged, or when the between-class effective rank of the features is
below 2 (the 10 class means span fewer than two effective directions), or when the linear probe is below 50 %.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from protosphere.config import read_yaml
from protosphere.report.html import load_results


def grid_key(config: dict) -> tuple[float, float, int, float]:
    """(label fraction, λ, batch size, learning rate) of a run's config."""
    return (float(config["method"]["label_fraction"]), float(config["method"]["lam"]),
            int(config["train"]["batch_size"]), float(config["optimizer"]["lr"]))


def cell(run: Path, how: str, log: Path) -> dict:
    if how == "failed":
        text = log.read_text() if log.exists() else ""
        return {"state": "NaN" if "NaN/inf" in text else "missing"}
    r = load_results(run).to_data()
    nc = r["neural_collapse"][-1] or {}
    acc = {c: v["class_il"][-1][0] for c, v in r["accuracy"].items()}
    between, within = nc.get("between_class_effective_rank"), nc.get("within_class_effective_rank")
    collapsed = (between is not None and between < 2) or acc.get("linear_probe", 100) < 50
    return {"state": "collapsed" if collapsed else "ok", "acc": acc, "between": between, "within": within,
            "seconds": r["timings"]["total_s"],
            "init_probe": ((r.get("random_init") or {}).get("linear_probe") or {}).get("class_il", [None])[0]}


def grid_cells(runs: Path) -> dict:
    """{(fraction, λ, batch, lr): cell} of every run the grid's compare.json names (finished or failed)."""
    summary = json.loads((runs / "compare.json").read_text())
    logs = {f["run"]: Path(f["log"]) for f in summary.get("failed", [])}
    cells = {}
    for row in summary["rows"]:
        for name, how in zip(row["runs"], row["status"]):
            config = read_yaml(runs / name / "config.yaml")  # written when the run starts, so failed runs have it
            cells[grid_key(config)] = cell(runs / name, how, logs.get(name, runs / f"{name}.log"))
    return cells


def show(c: dict) -> str:
    if c["state"] in ("NaN", "missing"):
        return "**NaN** (diverged)" if c["state"] == "NaN" else "—"
    acc = c["acc"]
    text = f"{acc.get('linear_probe', float('nan')):.1f}"
    if "nearest_prototype" in acc:
        text += f" / {acc['nearest_prototype']:.1f}"
    text += f"<br>rank {c['between']:.1f} / {c['within']:.1f}"
    return f"**{text}** collapsed" if c["state"] == "collapsed" else text


def main(argv) -> int:
    runs = Path(argv[0])
    if not (runs / "compare.json").is_file():
        print(f"No grid under {runs}: run the `protosphere compare configs/nc/clop-10.yaml --grid ...` command of "
              f"docs/results.md with --out {runs} first.")
        return 2
    cells = grid_cells(runs)
    lrs = sorted({k[3] for k in cells})
    for fraction in sorted({k[0] for k in cells}):
        for lam in sorted({k[1] for k in cells}, reverse=True):
            loss = "CLOP (λ = 1) + supervised NT-Xent" if lam > 0 else "supervised NT-Xent alone (λ = 0, SupCon)"
            print(f"\n### {loss}, {fraction:.0%} labels\n")
            print("| batch \\ lr | " + " | ".join(f"{lr:g}" for lr in lrs) + " |")
            print("|---|" + "---|" * len(lrs))
            for batch in sorted({k[2] for k in cells if k[0] == fraction and k[1] == lam}):
                row = [show(cells.get((fraction, lam, batch, lr), {"state": "missing"})) for lr in lrs]
                print(f"| {batch} | " + " | ".join(row) + " |")
            states = [c["state"] for k, c in cells.items() if k[0] == fraction and k[1] == lam]
            bad, unfinished = sum(s in ("collapsed", "NaN") for s in states), states.count("missing")
            print(f"\ncollapsed or diverged: {bad} of {len(states) - unfinished} finished cells"
                  + (f" ({unfinished} not finished)" if unfinished else ""))
    init = {k[0]: c["init_probe"] for k, c in sorted(cells.items()) if c.get("init_probe") is not None}
    if init:
        print("\nThe same linear probe on the untrained network (random initialisation, seed as above), the floor a "
              "cell must beat: " + ", ".join(f"{v:.1f} % with {f:.0%} labels" for f, v in init.items()) + ".")
    print("\nCell: linear-probe / nearest-prototype accuracy (%) on the test set; rank: between-class / within-class "
          "effective rank of the test features (K − 1 = 9 at most between classes).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
