"""The scripts under benchmarks/ that turn finished runs into the published tables: the command column must
reproduce each run (every override it used), and the CLOP grid must not count unfinished cells as collapsed."""

import json
import sys
from pathlib import Path

import pytest

from protosphere.config import load_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "ssl" / "moco-class-il.yaml")


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def finished(root: Path, stem: str, seed: int, overrides: list[str], accuracy: float = 80.0) -> dict:
    config = load_config(CONFIG, [*overrides, f"seed={seed}", f"name={stem}-seed{seed}", f"output_dir={root}"])
    results = {"status": "complete", "seed": seed, "headline_classifier": "linear_probe",
               "config": config.model_dump(mode="json"), "timings": {"total_s": 60.0},
               "environment": {"cpu": "cpu", "cpu_count": 2, "torch": "t", "python": "p"},
               "metrics": {"linear_probe": {"class_il": {"final_average_accuracy": accuracy}}}}
    run = root / f"{stem}-seed{seed}"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(results))
    return results


def test_overrides_of_names_exactly_what_differs_from_the_config(tmp_path):
    from finished_runs import overrides_of

    same = finished(tmp_path, "moco-class-il", 0, ["fabric.threads=1"])
    assert overrides_of(CONFIG, same) == []  # seed, name, output dir and threads are per-run, not the experiment
    shortened = finished(tmp_path, "other", 0, ["train.epochs=1", "method.queue_size=1024"])
    assert sorted(overrides_of(CONFIG, shortened)) == ["method.queue_size=1024", "train.epochs=1"]


def test_summary_table_command_reproduces_the_runs(tmp_path, capsys):
    import summarize_runs

    for seed, acc in ((0, 70.0), (1, 80.0)):
        finished(tmp_path, "moco-class-il", seed, ["train.epochs=1"], acc)
    assert summarize_runs.main([str(tmp_path), CONFIG]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| moco-class-il"))
    assert "75.00 ± 7.07" in row and "2 (0,1)" in row
    assert row.rstrip(" |").endswith("train.epochs=1`")


def test_summary_table_gives_seconds_per_run_for_short_runs(tmp_path, capsys):
    import summarize_runs

    finished(tmp_path, "moco-class-il", 0, [])
    assert summarize_runs.main([str(tmp_path), CONFIG, "--seconds"]) == 0
    out = capsys.readouterr().out
    assert "| s/run |" in out and "| 1 (0) | 60.00 ± 0.00 |" in out


def test_clop_grid_counts_unfinished_cells_apart(tmp_path, capsys):
    import summarize_clop_grid

    run = tmp_path / "clop-f0.1-lam1.0-b32-lr0.05"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "accuracy": {"linear_probe": {"class_il": [[40.0]]}},
        "neural_collapse": [{"between_class_effective_rank": 3.0, "within_class_effective_rank": 9.0}],
        "timings": {"total_s": 1.0}}))
    (tmp_path / "clop-f0.1-lam1.0-b32-lr5.log").write_text("still running")
    assert summarize_clop_grid.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "collapsed or diverged: 1 of 1 finished cells (1 not finished)" in out  # the probe below 50 %


def test_untrained_floor_names_its_overrides_and_is_reproducible(capsys):
    from untrained_floor import main

    argv = [CONFIG, "--seeds", "0", "data.dataset=digits", "model.backbone=mlp", "method.probe_epochs=1",
            "method.probe_min_steps=10"]
    main(argv)
    first = capsys.readouterr().out
    main(argv)
    assert capsys.readouterr().out == first  # same seed, same untrained network, same floor
    rows = {line.split("|")[2].strip(): line.split("|") for line in first.splitlines()[2:]}
    assert set(rows) == {"linear_probe", "knn"}
    for cells in rows.values():
        assert cells[1].strip() == ("moco-class-il (data.dataset=digits model.backbone=mlp method.probe_epochs=1 "
                                    "method.probe_min_steps=10)")
    # random features keep digits' neighbourhoods: kNN far above the 10 % of chance
    assert 50.0 < float(rows["knn"][3].split("±")[0]) <= 100.0


def test_contrastive_targets_margin_factor_spread_and_published_baseline(tmp_path, monkeypatch):
    import contrastive_targets as targets

    for seed, (left, right) in enumerate([(80.0, 70.0), (82.0, 72.0), (84.0, 74.0)]):
        finished(tmp_path, "fnc2", seed, [], left)
        finished(tmp_path, "co2l", seed, [], right)
    finished(tmp_path, "co2l", 3, [], 10.0)  # a seed the left side lacks is left out of the paired comparison
    row = targets.compare(tmp_path, "fnc2", "co2l", "linear_probe", "linear_probe")
    assert "| 82.00 ± 2.00 | 72.00 ± 2.00 | +10.00 | met | 0,1,2 |" in row
    row = targets.compare(tmp_path, "fnc2", "co2l", "linear_probe", "linear_probe", factor=1.2)
    assert "| -4.40 | missed (within the spread) |" in row  # |82 − 86.4| ≤ 2 + 1.2 · 2
    table = tmp_path / "published.md"
    table.write_text("| config | classifier | class-IL | task-IL | inc | forg | seeds | min | cmd |\n"
                     "| derpp-200-e5 | head | 76.57 ± 2.47 | 96.17 ± 0.16 | 1 | 1 | 3 (0,1,2) | 8.6 | `x` |\n")
    monkeypatch.setattr(targets, "PUBLISHED", [table])
    row = targets.compare(tmp_path, "fnc2", "derpp-200-e5", "linear_probe", factor=0.9)
    assert "76.57 ± 2.47 (3 (0,1,2) from published.md)" in row and f"{82 - 0.9 * 76.57:+.2f}" in row
    assert "no shared finished seeds" in targets.compare(tmp_path, "fnc2", "er-200-e5", "linear_probe")
