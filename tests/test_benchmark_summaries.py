"""What the scripts of benchmarks/analysis/ compute beyond `protosphere compare`'s table from the runs it wrote
(protosphere.report.summaries, protosphere.bench.features): they read the runs through the library, the CLOP grid does
not count unfinished cells as collapsed, and a target's margin and spread are the runs' own."""

import json
from pathlib import Path

from protosphere.config import load_config

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "ssl" / "moco-class-il.yaml")
CLOP = Path(__file__).resolve().parents[1] / "configs" / "nc" / "clop-10.yaml"


def finished(root: Path, stem: str, seed: int, overrides: list[str], accuracy: float = 80.0) -> dict:
    config = load_config(CONFIG, [*overrides, f"seed={seed}", f"name={stem}-seed{seed}", f"output_dir={root}"])
    results = {
        "status": "complete",
        "seed": seed,
        "headline_classifier": "linear_probe",
        "config": config.model_dump(mode="json"),
        "timings": {"total_s": 60.0},
        "environment": {"cpu": "cpu", "cpu_count": 2, "torch": "t", "python": "p"},
        "accuracy": {"linear_probe": {"class_il": [[accuracy]]}},
        "metrics": {"linear_probe": {"class_il": {"final_average_accuracy": accuracy}}},
    }
    run = root / f"{stem}-seed{seed}"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(results))
    return results


def test_finished_runs_reads_complete_runs_of_one_config(tmp_path):
    from protosphere.runs.sweep import finished_runs

    finished(tmp_path, "moco-class-il", 0, [], 70.0)
    finished(tmp_path, "moco-class-il", 2, [], 80.0)
    finished(tmp_path, "moco-class-il-long", 0, [], 90.0)  # another config whose stem starts the same
    unfinished = finished(tmp_path, "moco-class-il", 1, [])
    (tmp_path / "moco-class-il-seed1" / "results.json").write_text(json.dumps({**unfinished, "status": "running"}))
    runs = finished_runs(tmp_path, "moco-class-il")
    assert sorted(runs) == [0, 2] and [r.summary().final_average_accuracy for _, r in sorted(runs.items())] == [
        70.0,
        80.0,
    ]


def clop_run(root: Path, name: str, overrides: list[str], linear_probe: float | None) -> dict:
    """A run of the CLOP grid: its config.yaml (written when a run starts) and, when it finished, its results."""
    from protosphere.config import dump_config

    config = load_config(str(CLOP), [*overrides, f"name={name}", f"output_dir={root}"])
    (root / name).mkdir(parents=True)
    (root / name / "config.yaml").write_text(dump_config(config))
    if linear_probe is None:
        return {"run": name, "log": str(root / f"{name}.log"), "error": "exit status 2"}
    (root / name / "results.json").write_text(
        json.dumps(
            {
                "status": "complete",
                "accuracy": {"linear_probe": {"class_il": [[linear_probe]]}},
                "neural_collapse": [{"between_class_effective_rank": 3.0, "within_class_effective_rank": 9.0}],
                "timings": {"total_s": 1.0},
            }
        )
    )
    return {}


def test_clop_grid_reads_the_compare_grid_and_counts_unfinished_cells_apart(tmp_path):
    from protosphere.report.summaries import clop_grid_cells, clop_grid_tables

    grid = ["method.label_fraction=0.1", "method.lam=1.0", "train.batch_size=32"]
    finished_cell = clop_run(tmp_path, "a", [*grid, "optimizer.lr=0.05"], 40.0)
    diverged = clop_run(tmp_path, "b", [*grid, "optimizer.lr=5"], None)
    (tmp_path / "b.log").write_text("error: The loss became NaN/inf at task 0, step 3")
    unfinished = clop_run(tmp_path, "c", [*grid, "optimizer.lr=0.5"], None)
    (tmp_path / "c.log").write_text("error: interrupted")
    (tmp_path / "compare.json").write_text(
        json.dumps(
            {
                "rows": [
                    {"label": "a", "runs": ["a"], "seeds": [0], "status": ["trained"]},
                    {"label": "b", "runs": ["b"], "seeds": [0], "status": ["failed"]},
                    {"label": "c", "runs": ["c"], "seeds": [0], "status": ["failed"]},
                ],
                "failed": [f for f in (finished_cell, diverged, unfinished) if f],
            }
        )
    )
    out = "\n".join(clop_grid_tables(clop_grid_cells(tmp_path)))
    # the probe below 50 % and the diverged run: 2 of 2 finished cells; the interrupted one is not counted
    assert "collapsed or diverged: 2 of 2 finished cells (1 not finished)" in out
    assert "| 32 | **40.0<br>rank 3.0 / 9.0** collapsed | — | **NaN** (diverged) |" in out


def test_untrained_floor_is_reproducible_and_above_chance():
    from protosphere.bench.features import untrained_floor

    config = load_config(
        CONFIG,
        ["seed=0", "data.dataset=digits", "model.backbone=mlp", "method.probe_epochs=1", "method.probe_min_steps=10"],
    )
    first = untrained_floor(config)
    assert untrained_floor(config) == first  # same seed, same untrained network, same floor
    assert set(first) == {"linear_probe", "knn"}
    # random features keep digits' neighbourhoods: kNN far above the 10 % of chance
    assert 50.0 < first["knn"] <= 100.0


def test_targets_margin_factor_spread_and_published_baseline(tmp_path):
    from protosphere.report.summaries import published_row, target_row

    left, right = {0: 80.0, 1: 82.0, 2: 84.0}, {0: 70.0, 1: 72.0, 2: 74.0, 3: 10.0}
    # a seed the left side lacks is left out of the paired comparison
    assert "| 82.00 ± 2.00 | 72.00 ± 2.00 | +10.00 | met | 0,1,2 |" in target_row("t", left, right)
    assert "| -4.40 | missed (within the spread) |" in target_row("t", left, right, factor=1.2)  # |82 − 86.4| ≤ 2 + 2.4
    table = tmp_path / "published.md"
    table.write_text(
        "| config | classifier | class-IL | task-IL | inc | forg | seeds | min | cmd |\n"
        "| derpp-200-e5 | head | 76.57 ± 2.47 | 96.17 ± 0.16 | 1 | 1 | 3 (0,1,2) | 8.6 | `x` |\n"
        "| one-seed | head | 77.33 | 98.39 | 1 | 1 | n=1 (seed 0) | 3.6 | `x` |\n"
    )
    published = published_row([tmp_path / "absent.md", table], "derpp-200-e5", None)
    assert published == (76.57, 2.47, "3 (0,1,2) from published.md")
    row = target_row("t", left, None, published, factor=0.9)
    assert "76.57 ± 2.47 (3 (0,1,2) from published.md)" in row and f"{82 - 0.9 * 76.57:+.2f}" in row
    assert published_row([table], "one-seed", None) == (77.33, 0.0, "n=1 (seed 0) from published.md")
    assert published_row([table], "er-200-e5", None) is None
    assert "no shared finished seeds" in target_row("t", left, {}, None)
    assert "no shared finished seeds" in target_row("t", left, {5: 1.0})
