"""The scripts under benchmarks/ that compute more than `protosphere compare`'s table from the runs it wrote: they read
the runs through the library, and the CLOP grid must not count unfinished cells as collapsed."""

import json
import sys
from pathlib import Path

import pytest

from protosphere.config import load_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "ssl" / "moco-class-il.yaml")
CLOP = Path(__file__).resolve().parents[1] / "configs" / "nc" / "clop-10.yaml"


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def finished(root: Path, stem: str, seed: int, overrides: list[str], accuracy: float = 80.0) -> dict:
    config = load_config(CONFIG, [*overrides, f"seed={seed}", f"name={stem}-seed{seed}", f"output_dir={root}"])
    results = {"status": "complete", "seed": seed, "headline_classifier": "linear_probe",
               "config": config.model_dump(mode="json"), "timings": {"total_s": 60.0},
               "environment": {"cpu": "cpu", "cpu_count": 2, "torch": "t", "python": "p"},
               "accuracy": {"linear_probe": {"class_il": [[accuracy]]}},
               "metrics": {"linear_probe": {"class_il": {"final_average_accuracy": accuracy}}}}
    run = root / f"{stem}-seed{seed}"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(results))
    return results


def test_finished_runs_reads_complete_runs_of_one_config(tmp_path):
    from protosphere.sweep import finished_runs

    finished(tmp_path, "moco-class-il", 0, [], 70.0)
    finished(tmp_path, "moco-class-il", 2, [], 80.0)
    finished(tmp_path, "moco-class-il-long", 0, [], 90.0)  # another config whose stem starts the same
    unfinished = finished(tmp_path, "moco-class-il", 1, [])
    (tmp_path / "moco-class-il-seed1" / "results.json").write_text(json.dumps({**unfinished, "status": "running"}))
    runs = finished_runs(tmp_path, "moco-class-il")
    assert sorted(runs) == [0, 2] and [r.summary().final_average_accuracy for _, r in sorted(runs.items())] == [
        70.0, 80.0]


def clop_run(root: Path, name: str, overrides: list[str], linear_probe: float | None) -> dict:
    """A run of the CLOP grid: its config.yaml (written when a run starts) and, when it finished, its results."""
    from protosphere.config import dump_config

    config = load_config(str(CLOP), [*overrides, f"name={name}", f"output_dir={root}"])
    (root / name).mkdir(parents=True)
    (root / name / "config.yaml").write_text(dump_config(config))
    if linear_probe is None:
        return {"run": name, "log": str(root / f"{name}.log"), "error": "exit status 2"}
    (root / name / "results.json").write_text(json.dumps({
        "status": "complete", "accuracy": {"linear_probe": {"class_il": [[linear_probe]]}},
        "neural_collapse": [{"between_class_effective_rank": 3.0, "within_class_effective_rank": 9.0}],
        "timings": {"total_s": 1.0}}))
    return {}


def test_clop_grid_reads_the_compare_grid_and_counts_unfinished_cells_apart(tmp_path, capsys):
    import summarize_clop_grid

    grid = ["method.label_fraction=0.1", "method.lam=1.0", "train.batch_size=32"]
    finished_cell = clop_run(tmp_path, "a", [*grid, "optimizer.lr=0.05"], 40.0)
    diverged = clop_run(tmp_path, "b", [*grid, "optimizer.lr=5"], None)
    (tmp_path / "b.log").write_text("error: The loss became NaN/inf at task 0, step 3")
    unfinished = clop_run(tmp_path, "c", [*grid, "optimizer.lr=0.5"], None)
    (tmp_path / "c.log").write_text("error: interrupted")
    (tmp_path / "compare.json").write_text(json.dumps({
        "rows": [{"runs": ["a"], "status": ["trained"]}, {"runs": ["b"], "status": ["failed"]},
                 {"runs": ["c"], "status": ["failed"]}],
        "failed": [f for f in (finished_cell, diverged, unfinished) if f]}))
    assert summarize_clop_grid.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # the probe below 50 % and the diverged run: 2 of 2 finished cells; the interrupted one is not counted
    assert "collapsed or diverged: 2 of 2 finished cells (1 not finished)" in out
    assert "| 32 | **40.0<br>rank 3.0 / 9.0** collapsed | — | **NaN** (diverged) |" in out


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
