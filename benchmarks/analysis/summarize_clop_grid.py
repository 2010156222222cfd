"""Tables of the CLOP stability grid: for each label fraction and loss, rows = batch size, columns = learning rate;
each cell gives linear-probe accuracy (%), the nearest-prototype accuracy where it exists, and the between-/within-class
effective ranks of the test features; "NaN" marks a run whose loss diverged. The runs are a ``protosphere compare``
grid (docs/results.md gives the command); this script reads its ``compare.json`` and the runs it names
(:func:`protosphere.report.summaries.clop_grid_cells`).

    python benchmarks/analysis/summarize_clop_grid.py OUT

A cell is marked **collapsed** when the loss diverged, or when the between-class effective rank of the features is
below 2 (the 10 class means span fewer than two effective directions), or when the linear probe is below 50 %.
"""

from __future__ import annotations

import sys
from pathlib import Path

from protosphere.report.summaries import clop_grid_cells, clop_grid_tables


def main(argv) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    runs = Path(argv[0])
    if not (runs / "compare.json").is_file():
        print(
            f"No grid under {runs}: run the `protosphere compare configs/nc/clop-10.yaml --grid ...` command of "
            f"docs/results.md with --out {runs} first."
        )
        return 2
    print("\n".join(clop_grid_tables(clop_grid_cells(runs))))
    print(
        "\nCell: linear-probe / nearest-prototype accuracy (%) on the test set; rank: between-class / within-class "
        "effective rank of the test features (K − 1 = 9 at most between classes)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
