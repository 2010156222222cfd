"""Neural-collapse tables over seeds from finished non-continual runs (configs/nc/): accuracy of every classifier,
the final NC metrics, the epochs each run needs to reach the CE baseline's final NC values, each classifier's cost,
and — when the runs evaluated corruptions (``eval.corruptions``) — the mean corruption error against CE.

    python benchmarks/analysis/summarize_nc.py RUNS_DIR BASELINE_STEM STEM [STEM ...]

Runs are those ``protosphere compare configs/nc/<stem>.yaml ... --out RUNS_DIR`` wrote (``RUNS_DIR/<stem>-seed<S>``),
read with :func:`protosphere.runs.sweep.finished_runs`; every comparison with the baseline pairs runs of the same seed.
Accuracies are %, mean ± std over seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from protosphere.report.compare import format_mean_std, mean_std
from protosphere.report.summaries import corruption_rows
from protosphere.runs.record import StoredRecord
from protosphere.runs.sweep import finished_runs

METRICS = ("nc1", "equinorm", "equiangularity", "max_angle", "nc3", "nc4")


def load_runs(root: Path, stem: str) -> dict[int, dict]:
    """{seed: results.json as plain data} of the finished runs of one config."""
    return {seed: record.to_data() for seed, record in finished_runs(root, stem).items()}


def fmt(values, digits: int = 2) -> str:
    return format_mean_std(mean_std(list(values)), digits)


def final_accuracy(results: dict, classifier: str) -> float:
    return results["accuracy"][classifier]["class_il"][-1][0]


def epoch_nc(results: dict) -> list[dict]:
    """NC metrics after every evaluated epoch (``eval.per_epoch``), as the run record derives them."""
    return [e.model_dump(exclude_none=True) for e in StoredRecord.from_data(results).epoch_neural_collapse()]


def nc_history(results: dict) -> list[dict]:
    """NC metrics after every epoch (``eval.per_epoch``; its last entry is the end of training), or the final
    metrics alone when the run did not evaluate per epoch."""
    return epoch_nc(results) or [results["neural_collapse"][-1]]


def first_epoch_reaching(history: list[dict], metric: str, target: float) -> int | None:
    return next((i + 1 for i, e in enumerate(history) if e.get(metric, float("inf")) <= target), None)


def accuracy_table(runs: Path, baseline: dict[int, dict], stems: list[str]) -> list[str]:
    lines = [
        "| run | classifier | accuracy (%) | seeds | fit s | predict s | "
        + " | ".join(METRICS)
        + " | first epoch ≤ CE's final "
        + " / ".join(METRICS)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for stem in stems:
        by_seed = load_runs(runs, stem)
        if not by_seed:
            lines.append(f"| {stem} | (no finished run) |")
            continue
        seeds = sorted(by_seed)
        first = by_seed[seeds[0]]
        nc_cells = " | ".join(fmt([nc_history(r)[-1].get(m) for r in by_seed.values()], 3) for m in METRICS)
        reached = []
        per_epoch = all(epoch_nc(r) for r in by_seed.values())
        for metric in METRICS if per_epoch else ():
            per_seed = []
            for seed in seeds:
                if seed not in baseline:
                    continue
                target = nc_history(baseline[seed])[-1].get(metric)
                epoch = first_epoch_reaching(nc_history(by_seed[seed]), metric, target) if target is not None else None
                per_seed.append("—" if epoch is None else str(epoch))
            reached.append(",".join(per_seed) or "n/a")
        for i, classifier in enumerate(first["accuracy"]):
            # runs written before per-classifier timings were recorded have none: average over the runs that do
            timed = {seed: r for seed, r in by_seed.items() if all("classifiers" in t for t in r["timings"]["tasks"])}
            fit, predict = (
                [
                    sum(t["classifiers"].get(classifier, {}).get(k, 0.0) for t in r["timings"]["tasks"])
                    for r in timed.values()
                ]
                for k in ("fit_s", "predict_s")
            )
            partial = f" (seeds {','.join(map(str, timed))})" if timed and len(timed) < len(by_seed) else ""
            fit_cell = fmt(fit, 2) + partial if timed else "n/a"
            predict_cell = fmt(predict, 2) + partial if timed else "n/a"
            head = " (headline)" if classifier == first["headline_classifier"] and len(first["accuracy"]) > 1 else ""
            lines.append(
                f"| {stem} | {classifier}{head} | {fmt([final_accuracy(r, classifier) for r in by_seed.values()])} "
                f"| {','.join(map(str, seeds))} | {fit_cell} | {predict_cell} | "
                + (
                    f"{nc_cells} | {' / '.join(reached) or 'n/a (no eval.per_epoch)'} |"
                    if i == 0
                    else " |" * len(METRICS) + " |"
                )
            )
    return lines


def corruption_table(runs: Path, baseline: dict[int, dict], stems: list[str]) -> list[str]:
    return corruption_rows({stem: load_runs(runs, stem) for stem in stems}, baseline)


def epochs_table(runs: Path, stems: list[str]) -> list[str]:
    """Headline accuracy and NC metrics after every epoch (runs with ``eval.per_epoch``), mean ± std over seeds."""
    rows, epochs = [], 0
    for stem in stems:
        by_seed = {s: r for s, r in load_runs(runs, stem).items() if r.get("per_epoch")}
        if not by_seed:
            continue
        head = by_seed[min(by_seed)]["headline_classifier"]
        series = {
            "accuracy (%)": [[e["accuracy"][head]["class_il"][0] for e in r["per_epoch"]] for r in by_seed.values()]
        }
        for metric in ("nc1", "equiangularity", "max_angle", "nc3"):
            series[metric] = [
                [(e.get("neural_collapse") or {}).get(metric) for e in r["per_epoch"]] for r in by_seed.values()
            ]
        for name, per_seed in series.items():
            length = min(len(v) for v in per_seed)
            epochs = max(epochs, length)
            digits = 2 if name.startswith("accuracy") else 3
            cells = [fmt([v[i] for v in per_seed], digits) for i in range(length)]
            rows.append(f"| {stem} ({head}) | {name} | " + " | ".join(cells) + f" | {len(by_seed)} |")
    if not rows:
        return []
    return [
        "| run | metric | " + " | ".join(f"epoch {i + 1}" for i in range(epochs)) + " | seeds |",
        "|---|---|" + "---|" * epochs + "---|",
    ] + rows


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    runs, baseline_stem, stems = Path(argv[0]), argv[1], argv[1:]
    baseline = load_runs(runs, baseline_stem)
    if not baseline:
        print(f"No finished run {baseline_stem}-seed* under {runs}: run the baseline config first.")
        return 2
    print("\n".join(accuracy_table(runs, baseline, stems)))
    over_epochs = epochs_table(runs, stems)
    if over_epochs:
        print("\nOver epochs (headline classifier; test split; mean ± std over seeds):\n")
        print("\n".join(over_epochs))
    corruptions = corruption_table(runs, baseline, stems)
    if corruptions:
        print(
            "\nCorruptions (8 types × 5 severities, headline classifier; mCE = mean over corruptions of "
            "100 · Σ_s E_s / Σ_s E_s^CE, paired by seed):\n"
        )
        print("\n".join(corruptions))
    env = baseline[min(baseline)]["environment"]
    print(
        f"\nNC metrics on test-split encoder features after the last epoch (test features; nc3/nc4 use each method's "
        f"classifier weights); 'first epoch' lists, per seed, the first epoch whose value is ≤ the same seed's CE "
        f"final value (— never). fit/predict s: seconds to fit the classifier after training (class-mean EMA: kept "
        f"during training) and to classify the test set; the shared feature encoding is not included. "
        f"Machine: {env['cpu']} ({env['cpu_count']} cores; each run single-threaded, two at a time), "
        f"torch {env['torch']}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
