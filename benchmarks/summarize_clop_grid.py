"""Tables of the CLOP stability grid written by benchmarks/clop_grid.sh: for each label fraction and loss, rows =
batch size, columns = learning rate; each cell gives linear-probe accuracy (%), the nearest-prototype accuracy where
it exists, and the between-/within-class effective ranks of the test features; "NaN" marks a run whose loss diverged.

    python benchmarks/summarize_clop_grid.py RUNS_DIR

A cell is marked **collapsed** when the loss diverged, or when the between-class effective rank of the features is
below 2 (the 10 class means span fewer than two effective directions), or when the linear probe is below 50 %.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

NAME = re.compile(r"clop-f(?P<fraction>[\d.]+)-lam(?P<lam>[\d.]+)-b(?P<batch>\d+)-lr(?P<lr>[\d.]+)$")


def cell(run: Path) -> dict:
    results = run / "results.json"
    log = run.parent / f"{run.name}.log"
    if not results.exists():
        text = log.read_text() if log.exists() else ""
        return {"state": "NaN" if "NaN/inf" in text else "missing"}
    r = json.loads(results.read_text())
    nc = r["neural_collapse"][-1] or {}
    acc = {c: v["class_il"][-1][0] for c, v in r["accuracy"].items()}
    between, within = nc.get("between_class_effective_rank"), nc.get("within_class_effective_rank")
    collapsed = (between is not None and between < 2) or acc.get("linear_probe", 100) < 50
    return {"state": "collapsed" if collapsed else "ok", "acc": acc, "between": between, "within": within,
            "seconds": r["timings"]["total_s"],
            "init_probe": ((r.get("random_init") or {}).get("linear_probe") or {}).get("class_il", [None])[0]}


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
    names = {p.name.removesuffix(".log") for p in runs.iterdir()} if runs.is_dir() else set()
    cells = {}
    for name in sorted(names):
        if match := NAME.match(name):
            key = (float(match["fraction"]), float(match["lam"]), int(match["batch"]), float(match["lr"]))
            cells[key] = cell(runs / name)
    if not cells:
        print(f"No grid runs under {runs}: run benchmarks/clop_grid.sh first.")
        return 2
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
