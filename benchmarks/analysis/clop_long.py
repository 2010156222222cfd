"""CLOP against its partner loss at one grid cell over seeds: each classifier's accuracy, the between-/within-class
effective ranks of the test features and the untrained network's probe, mean ± std over seeds, with how many seeds
collapsed (the rule of ``summarize_clop_grid.py``: loss diverged, between-class rank < 2, or probe < 50 %).

    python benchmarks/analysis/clop_long.py OUT

OUT is the ``--out`` folder of a ``protosphere compare configs/nc/clop-10.yaml --grid method.label_fraction=...
--grid method.lam=... --seeds N`` command (docs/results.md); each row of its compare.json (a grid cell) is a line,
labelled with its label fraction and λ, and a run that failed counts as diverged when its log says so
(:func:`protosphere.report.summaries.clop_seed_rows`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from protosphere.report.summaries import clop_seed_rows, compare_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, metavar="OUT")
    args = parser.parse_args(argv)
    print("\n".join(clop_seed_rows(compare_rows(args.runs))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
