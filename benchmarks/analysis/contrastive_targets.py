"""The accuracy targets of FNC2 + HSD on Seq-FashionMNIST, checked from finished runs measured side by side (same
machine, same seeds, same 5-epoch schedule; `protosphere compare`, docs/results.md), each with its margin and seed
spread.

    python benchmarks/analysis/contrastive_targets.py [RUNS_DIR]          (default runs/seq-fmnist)

Scored as the FNC2 paper scores it: class-IL final average accuracy of the linear probe fitted after the last task on
that task's data plus 200 classifier-only samples (memory-free runs) or plus the buffer (co2l-/fnc2-200/500), against
the baselines' own output head. Runs are those compare wrote for each config
(:func:`protosphere.runs.sweep.finished_runs`); a baseline with no finished run under RUNS_DIR is read from the table
that published it (``benchmarks/results/seq_fmnist_baselines_e5.md``,
``benchmarks/results/seq_fmnist_contrastive_reconstruction.md``; code of those methods unchanged since), and named so
in the row (:func:`protosphere.report.summaries.target_row`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from protosphere.report.summaries import published_row, target_row
from protosphere.runs.sweep import finished_runs

RESULTS = Path(__file__).resolve().parents[1] / "results"
PUBLISHED = [RESULTS / "seq_fmnist_baselines_e5.md", RESULTS / "seq_fmnist_contrastive_reconstruction.md"]


def accuracies(root: Path, stem: str, classifier: str | None) -> dict[int, float]:
    """{seed: class-IL final average accuracy} of ``classifier`` (default: the headline) in the finished runs."""
    return {
        seed: r["metrics"][classifier or r["headline_classifier"]]["class_il"]["final_average_accuracy"]
        for seed, r in ((s, record.to_data()) for s, record in finished_runs(root, stem).items())
    }


def compare(
    root: Path,
    left: str,
    right: str,
    left_classifier: str | None = None,
    right_classifier: str | None = None,
    factor: float = 1.0,
) -> str:
    """One Markdown row: ``left ≥ factor × right`` on the seeds both sides finished (or a published right side)."""
    target = (
        f"{left}{f' ({left_classifier})' if left_classifier else ''} ≥ "
        f"{f'{factor:g} × ' if factor != 1 else ''}{right}{f' ({right_classifier})' if right_classifier else ''}"
    )
    right_values = accuracies(root, right, right_classifier)
    published = None if right_values else published_row(PUBLISHED, right, right_classifier)
    return target_row(target, accuracies(root, left, left_classifier), right_values, published, factor)


def main(argv) -> int:
    root = Path(argv[0]) if argv else Path("runs/seq-fmnist")
    probe = "linear_probe"
    targets = [
        (
            "1. FNC2 + HSD memory-free ≥ Co2L memory-free (same 200-sample probe)",
            [compare(root, "fnc2", "co2l", probe, probe)],
        ),
        ("2. FNC2 + HSD memory-free ≥ 0.9 × DER++-200", [compare(root, "fnc2", "derpp-200-e5", probe, factor=0.9)]),
        ("3. FNC2 + HSD memory-free ≥ ER-200", [compare(root, "fnc2", "er-200-e5", probe)]),
        (
            "4. FNC2 + HSD-200 ≥ max(Co2L-200, DER++-200)",
            [compare(root, "fnc2-200", "co2l-200", probe, probe), compare(root, "fnc2-200", "derpp-200-e5", probe)],
        ),
        (
            "also: 500 samples",
            [compare(root, "fnc2-500", "co2l-500", probe, probe), compare(root, "fnc2-500", "derpp-500-e5", probe)],
        ),
        (
            "also: the strictly memory-free classifiers (no stored sample at all)",
            [
                compare(root, "fnc2", "co2l", "ncm", "ncm"),
                compare(root, "fnc2", "er-200-e5", "ncm"),
                compare(root, "fnc2", "er-200-e5", "nearest_prototype"),
            ],
        ),
    ]
    print("| target | left, class-IL (%) | right, class-IL (%) | margin | verdict | seeds |")
    print("|---|---|---|---|---|---|")
    for title, rows in targets:
        print(f"| **{title}** | | | | | |")
        print("\n".join(rows))
    print(
        '\nMean ± std over the seeds; margin = mean(left) − factor × mean(right); "within the spread" when '
        "|margin| is at most the sum of the two standard deviations (the seeds do not decide it). linear_probe = "
        "the probe fitted after the last task on its data + 200 classifier-only samples (memory-free) or + the "
        "buffer; the baselines (ER, DER++) use their own output head."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
