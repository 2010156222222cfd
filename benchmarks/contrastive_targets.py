"""The accuracy targets of FNC2 + HSD on Seq-FashionMNIST, checked from finished runs measured side by side (same
machine, same seeds, same 5-epoch schedule; `protosphere compare`, docs/results.md), each with its margin and seed spread.

    python benchmarks/contrastive_targets.py [RUNS_DIR]          (default runs/seq-fmnist)

Scored as the FNC2 paper scores it: class-IL final average accuracy of the linear probe fitted after the last task on
that task's data plus 200 classifier-only samples (memory-free runs) or plus the buffer (co2l-/fnc2-200/500), against
the baselines' own output head. A baseline with no finished run under RUNS_DIR is read from the table that published
it (``benchmarks/seq_fmnist_baselines_e5.md``, ``benchmarks/seq_fmnist_contrastive_reconstruction.md``; code of those
methods unchanged since), and named so in the row.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

from protosphere.report.compare import format_mean_std, mean_std as statistics_of
from protosphere.sweep import finished_runs as runs_of

HERE = Path(__file__).resolve().parent


def mean_std(values) -> str:
    return format_mean_std(statistics_of(list(values)))
PUBLISHED = [HERE / "seq_fmnist_baselines_e5.md", HERE / "seq_fmnist_contrastive_reconstruction.md"]


def accuracy(record, classifier: str | None = None) -> float:
    return record.summary(classifier).final_average_accuracy


def published(stem: str, classifier: str | None) -> tuple[float, float, str] | None:
    """(mean, std, seeds) of a config's class-IL row in a published table; the headline row without a classifier."""
    for table in PUBLISHED:
        if not table.exists():
            continue
        for line in table.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 7 or cells[0] != stem:
                continue
            name = cells[1].replace(" (headline)", "")
            if classifier is None and (name == "head" or "(headline)" in cells[1]) or name == classifier:
                mean, std = (float(x) for x in re.findall(r"-?\d+\.\d+", cells[2])[:2])
                return mean, std, f"{cells[6]} from {table.name}"
    return None


def side(root: Path, stem: str, classifier: str | None):
    """(mean, std, per-seed values or None, seeds label, classifier label) of one side of a comparison."""
    runs = runs_of(root, stem)
    if runs:
        values = {s: accuracy(r, classifier) for s, r in runs.items()}
        name = classifier or next(iter(runs.values())).headline_classifier
        std = statistics.stdev(values.values()) if len(values) > 1 else 0.0
        return statistics.mean(values.values()), std, values, None, name
    found = published(stem, classifier)
    if found is None:
        return None
    mean, std, label = found
    return mean, std, None, label, classifier or "head"


def compare(root: Path, left: str, right: str, left_classifier: str | None = None,
            right_classifier: str | None = None, factor: float = 1.0) -> str:
    """One Markdown row: ``left ≥ factor × right`` on the seeds both sides finished (or a published right side)."""
    a, b = side(root, left, left_classifier), side(root, right, right_classifier)
    target = f"{left}{f' ({left_classifier})' if left_classifier else ''} ≥ " \
             f"{f'{factor:g} × ' if factor != 1 else ''}{right}{f' ({right_classifier})' if right_classifier else ''}"
    if a is None or b is None or a[2] is None:
        return f"| {target} | (no shared finished seeds) | | | | |"
    if b[2] is not None:  # paired: the seeds both sides finished
        seeds = sorted(set(a[2]) & set(b[2]))
        if not seeds:
            return f"| {target} | (no shared finished seeds) | | | | |"
        x, y = [a[2][s] for s in seeds], [b[2][s] for s in seeds]
        right_text, seed_text = mean_std(y), ",".join(map(str, seeds))
        y_mean, y_std = statistics.mean(y), (statistics.stdev(y) if len(y) > 1 else 0.0)
    else:  # a published baseline
        x = list(a[2].values())
        y_mean, y_std = b[0], b[1]
        right_text, seed_text = f"{y_mean:.2f} ± {y_std:.2f} ({b[3]})", ",".join(map(str, sorted(a[2])))
    x_std = statistics.stdev(x) if len(x) > 1 else 0.0
    margin = statistics.mean(x) - factor * y_mean
    spread = x_std + factor * y_std
    verdict = ("met" if margin >= 0 else "missed") + ("" if abs(margin) > spread else " (within the spread)")
    return f"| {target} | {mean_std(x)} | {right_text} | {margin:+.2f} | {verdict} | {seed_text} |"


def main(argv) -> int:
    root = Path(argv[0]) if argv else Path("runs/seq-fmnist")
    probe = "linear_probe"
    targets = [
        ("1. FNC2 + HSD memory-free ≥ Co2L memory-free (same 200-sample probe)", [compare(root, "fnc2", "co2l", probe, probe)]),
        ("2. FNC2 + HSD memory-free ≥ 0.9 × DER++-200", [compare(root, "fnc2", "derpp-200-e5", probe, factor=0.9)]),
        ("3. FNC2 + HSD memory-free ≥ ER-200", [compare(root, "fnc2", "er-200-e5", probe)]),
        ("4. FNC2 + HSD-200 ≥ max(Co2L-200, DER++-200)", [compare(root, "fnc2-200", "co2l-200", probe, probe),
                                                           compare(root, "fnc2-200", "derpp-200-e5", probe)]),
        ("also: 500 samples", [compare(root, "fnc2-500", "co2l-500", probe, probe),
                               compare(root, "fnc2-500", "derpp-500-e5", probe)]),
        ("also: the strictly memory-free classifiers (no stored sample at all)",
         [compare(root, "fnc2", "co2l", "ncm", "ncm"), compare(root, "fnc2", "er-200-e5", "ncm"),
          compare(root, "fnc2", "er-200-e5", "nearest_prototype")]),
    ]
    print("| target | left, class-IL (%) | right, class-IL (%) | margin | verdict | seeds |")
    print("|---|---|---|---|---|---|")
    for title, rows in targets:
        print(f"| **{title}** | | | | | |")
        print("\n".join(rows))
    print("\nMean ± std over the seeds; margin = mean(left) − factor × mean(right); \"within the spread\" when |margin| "
          "is at most the sum of the two standard deviations (the seeds do not decide it). linear_probe = the probe "
          "fitted after the last task on its data + 200 classifier-only samples (memory-free) or + the buffer; the "
          "baselines (ER, DER++) use their own output head.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
