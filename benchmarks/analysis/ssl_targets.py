"""The continual self-supervised target on Seq-FashionMNIST — Sy-CON ≥ CaSSLe ≥ fine-tuning in class-IL linear-probe
accuracy — checked from finished runs measured side by side (same machine, seeds and epochs), each with its margin.

    python benchmarks/analysis/ssl_targets.py [RUNS_DIR]          (default runs/ssl)

Fine-tuning is shown for both plain learners: MoCo v2+ (the base Sy-CON and CaSSLe are built on here, so the fair
reference) and SimCLR; the SimCLR-based Sy-CON and CaSSLe (``*-simclr-class-il``) are compared with SimCLR. Data-IL
and domain-IL rows are shown where those runs exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

from contrastive_targets import compare


def main(argv) -> int:
    root = Path(argv[0]) if argv else Path("runs/ssl")
    rows = []
    for scenario in ("class-il", "data-il", "domain-il"):
        sycon, cassle = f"sycon-{scenario}", f"cassle-{scenario}"
        rows += [compare(root, sycon, cassle)]
        rows += [compare(root, cassle, f"{plain}-{scenario}") for plain in ("moco", "simclr")]
        rows += [compare(root, sycon, f"{plain}-{scenario}") for plain in ("moco", "simclr")]
    # the same order with SimCLR as the base of both stability methods (class-IL only)
    rows += [
        compare(root, "sycon-simclr-class-il", "cassle-simclr-class-il"),
        compare(root, "cassle-simclr-class-il", "simclr-class-il"),
        compare(root, "sycon-simclr-class-il", "simclr-class-il"),
    ]
    print("| target | left, class-IL (%) | right, class-IL (%) | margin | verdict | seeds |")
    print("|---|---|---|---|---|---|")
    missing = [r for r in rows if "no shared finished seeds" in r]
    print("\n".join(r for r in rows if r not in missing))
    if missing:
        print(
            "\nNot compared (no seed finished on both sides): "
            + "; ".join(r.split("|")[1].strip() for r in missing)
            + "."
        )
    print(
        "\nEvery method is scored with the linear probe on frozen features over all classes seen so far, fitted "
        "after the last task (the CaSSLe protocol); a margin within one standard deviation of either side is not a "
        "difference these seeds can resolve."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
