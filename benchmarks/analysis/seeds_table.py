"""Per-classifier table over seeds of the runs one or more ``protosphere compare`` commands wrote (the long-schedule
continual runs of docs/results.md): class-IL and task-IL final average accuracy and average forgetting of every
classifier, mean ± std over seeds (compare's own table shows the headline classifier only).

    python benchmarks/analysis/seeds_table.py OUT [OUT ...] [--classifiers nearest_prototype linear_probe ...] \
        [--out FILE]

Each OUT is a compare ``--out`` folder; its rows and runs are read from its compare.json
(:func:`protosphere.report.summaries.compare_rows`), each run through the validated run record.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from protosphere.report.summaries import classifier_rows, compare_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outs", nargs="+", type=Path, metavar="OUT")
    parser.add_argument("--classifiers", nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    rows = [row for out in args.outs for row in compare_rows(out)]
    text = "\n".join(classifier_rows(rows, args.classifiers)) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
