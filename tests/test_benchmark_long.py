"""The long-schedule summaries (benchmarks/nc_long.py, benchmarks/seeds_table.py) on real tiny runs: their cells are
the runs' own numbers, averaged over seeds."""

import statistics
from pathlib import Path

import pytest
import torch

from protosphere.config import validate_config
from protosphere.runner import run

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def tiny_run(root: Path, name: str, seed: int, tasks: int, epochs: int, per_epoch: bool, **eval_options) -> dict:
    config = validate_config({
        "output_dir": str(root), "name": name, "seed": seed, "data": {"dataset": "digits"},
        "scenario": {"num_tasks": tasks}, "model": {"backbone": "mlp"}, "method": {"name": "finetune"},
        "train": {"epochs": epochs, "batch_size": 64, "augmentation": "none"},
        "eval": {"report": "off", "per_epoch": per_epoch, "embeddings": False, **eval_options},
        "fabric": {"threads": 1},
    })
    return run(config, show_progress=False)[0].to_data()


def test_seeds_table_averages_each_classifier_over_seeds(tmp_path, capsys):
    import seeds_table

    results = [tiny_run(tmp_path, f"ft-s{seed}", seed, 2, 1, False) for seed in (0, 1)]
    assert seeds_table.main([str(tmp_path), "ft", "missing"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("| ft | head"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    values = [r["metrics"]["head"]["class_il"]["final_average_accuracy"] for r in results]
    assert cells[2] == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    assert cells[-1] == "0,1"
    assert any("| missing | (no finished run)" in line for line in lines)


def test_nc_long_reads_per_epoch_curves_and_first_epochs(tmp_path):
    import nc_long

    ce = tiny_run(tmp_path, "base-s0", 0, 1, 3, True)
    other = tiny_run(tmp_path, "other-s0", 0, 1, 3, True)
    lines = nc_long.summary(tmp_path, {"base": "base", "other": "other"}, "base")
    row = next(line for line in lines if line.startswith("| other | head"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2] == f"{other['metrics']['head']['class_il']['final_average_accuracy']:.2f}"
    assert cells[4] == "3"  # epochs evaluated
    assert cells[5] == f"{other['neural_collapse'][-1]['nc1']:.3f}"
    # the first epoch at which 'other' reaches base's final nc1, computed by hand from the per-epoch entries
    target = ce["per_epoch"][-1]["neural_collapse"]["nc1"]
    curve = [e["neural_collapse"]["nc1"] for e in other["per_epoch"]]
    first = next((i + 1 for i, v in enumerate(curve) if v <= target), None)
    reach = next(line for line in lines if line.startswith("| other |") and "head" not in line
                 and line.count("|") == 8)
    assert reach.split("|")[2].strip().startswith("—" if first is None else str(first))


def test_nc_long_scores_corruptions_against_the_baseline_of_the_same_seed(tmp_path):
    import nc_long

    from protosphere.data.corruptions import mean_corruption_error

    corrupt = {"corruptions": ["gaussian_noise", "contrast"], "corruption_severities": [1, 5]}
    base = tiny_run(tmp_path, "base-s0", 0, 1, 2, True, **corrupt)
    other = tiny_run(tmp_path, "other-s0", 0, 1, 1, True, **corrupt)
    lines = nc_long.summary(tmp_path, {"base": "base", "other": "other"}, "base")
    start = next(i for i, line in enumerate(lines) if line.startswith("Corruptions after the last epoch"))
    row = next(line for line in lines[start:] if line.startswith("| other | head"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    errors = {k: v for k, v in other["corruptions"]["head"].items() if isinstance(v, list)}
    base_errors = {k: base["corruptions"]["head"][k] for k in errors}
    assert cells[2] == f"{100 - other['accuracy']['head']['class_il'][-1][0]:.2f}"
    assert cells[3] == f"{statistics.mean(e for v in errors.values() for e in v):.2f}"
    assert cells[4] == f"{mean_corruption_error(errors, base_errors):.2f}"
    assert next(line for line in lines[start:] if line.startswith("| base | head")).split("|")[5].strip() == "100.00"


def test_nc_train_features_measures_the_final_and_the_initial_network_on_training_images(tmp_path):
    import nc_train_features

    from protosphere import load_run
    from protosphere.metrics.neural_collapse import neural_collapse

    trained = tiny_run(tmp_path, "moved-s0", 0, 1, 2, False)
    run = load_run(tmp_path / "moved-s0")
    task = run.scenario.tasks[0]
    by_hand = neural_collapse(run.encode(task.train_images), task.train_labels, run.model.classifier_weights())
    assert nc_train_features.train_feature_metrics(run) == pytest.approx(by_hand, rel=1e-9)
    assert trained["neural_collapse"][-1]["split"] == "test"

    # at a learning rate too small to move a float32 weight, the final parameters are the initial ones: the rebuilt
    # untrained network must hold exactly them (and differ from a run that trained)
    config = validate_config({**run.config.model_dump(), "name": "frozen-s0",
                              "optimizer": {**run.config.optimizer.model_dump(), "lr": 1e-30}})
    from protosphere.runner import run as run_config

    run_config(config, show_progress=False)
    frozen = load_run(tmp_path / "frozen-s0")
    initial = dict(nc_train_features.untrained(frozen).model.named_parameters())
    final = dict(frozen.model.named_parameters())
    assert initial.keys() == final.keys()
    assert all(torch.equal(initial[k], final[k]) for k in final)
    assert not all(torch.equal(initial[k], p) for k, p in run.model.named_parameters())

    lines = nc_train_features.table(tmp_path, {"moved": "moved", "absent": "absent"})
    row = next(line for line in lines if line.startswith("| moved | train |"))
    assert row.split("|")[4].strip() == f"{by_hand['nc1']:.3f}"
    assert any(line.startswith("| absent | (no finished run)") for line in lines)


def test_clop_long_averages_a_cell_over_seeds_and_counts_diverged_runs(tmp_path, capsys):
    import shutil

    import clop_long

    results = []
    for seed in (0, 1):
        config = validate_config({
            "output_dir": str(tmp_path), "name": f"cell-s{seed}", "seed": seed, "data": {"dataset": "digits"},
            "scenario": {"num_tasks": 1}, "model": {"backbone": "mlp", "mlp_hidden": [32]},
            "method": {"name": "clop", "projection_dim": 16, "label_fraction": 0.5, "lam": 1.0, "probe_epochs": 1,
                       "probe_min_steps": 0},
            "train": {"epochs": 1, "batch_size": 128, "augmentation": "none"},
            "eval": {"report": "off", "embeddings": False}, "fabric": {"threads": 1},
        })
        results.append(run(config, show_progress=False)[0].to_data())
    assert clop_long.main([str(tmp_path), "cell"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 50 %, λ = 1"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    probe = [r["accuracy"]["linear_probe"]["class_il"][-1][0] for r in results]
    ranks = [r["neural_collapse"][-1]["between_class_effective_rank"] for r in results]
    assert cells[1] == f"{statistics.mean(probe):.2f} ± {statistics.stdev(probe):.2f}"
    assert cells[4] == f"{statistics.mean(ranks):.2f} ± {statistics.stdev(ranks):.2f}"
    assert cells[-1] == "0,1"

    # a diverged seed: its config was written, it has no results, and its log says why
    diverged = tmp_path / "cell-s2"
    diverged.mkdir()
    shutil.copy(tmp_path / "cell-s0" / "config.yaml", diverged / "config.yaml")
    (tmp_path / "cell-s2.log").write_text("loss is NaN/inf at step 3\n")
    row = next(line for line in clop_long.table(tmp_path, ["cell"]) if line.startswith("| 50 %"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == f"{statistics.mean(probe):.2f} ± {statistics.stdev(probe):.2f}"  # scored seeds only
    assert cells[-2].endswith("of 3") and cells[-1] == "0,1,2"
    assert int(cells[-2].split()[0]) == 1 + sum(r < 2 or p < 50 for r, p in zip(ranks, probe))
