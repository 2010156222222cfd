"""The long-schedule summaries (protosphere.report.summaries, protosphere.bench.features; printed by the scripts of
benchmarks/analysis/) on real tiny runs obtained through `protosphere compare`: they find the runs through compare's
output, and their cells are the runs' own numbers, averaged over seeds."""

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from protosphere.config import validate_config
from protosphere.report.summaries import classifier_rows, clop_seed_rows, compare_rows, finished, nc_long_summary
from protosphere.runs.runner import run
from protosphere.runs.sweep import compare


def tiny_config(
    root: Path, stem: str, tasks: int, epochs: int, per_epoch: bool, method: dict | None = None, **eval_options
) -> Path:
    path = root / "configs" / f"{stem}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"dataset": "digits"},
                "scenario": {"num_tasks": tasks},
                "model": {"backbone": "mlp"},
                "method": method or {"name": "finetune"},
                "train": {"epochs": epochs, "batch_size": 64, "augmentation": "none"},
                "eval": {"report": "off", "per_epoch": per_epoch, "embeddings": False, **eval_options},
                "fabric": {"threads": 1},
            }
        )
    )
    return path


def results(out: Path, label: str) -> dict[int, dict]:
    return {
        seed: json.loads((out / f"{label}-seed{seed}" / "results.json").read_text())
        for seed in (0, 1, 2)
        if (out / f"{label}-seed{seed}" / "results.json").is_file()
    }


def test_compare_rows_are_the_rows_and_seeds_compare_wrote(tmp_path):
    out = tmp_path / "out"
    compare([tiny_config(tmp_path, "ft", 2, 1, False)], seeds=2, out=out)
    rows = compare_rows(out)
    assert [r.label for r in rows] == ["ft"]
    assert rows[0].runs == {0: out / "ft-seed0", 1: out / "ft-seed1"}
    assert set(rows[0].status.values()) == {"trained"} and rows[0].logs == {}
    assert {s: r["seed"] for s, r in finished(rows[0]).items()} == {0: 0, 1: 1}
    with pytest.raises(Exception, match="compare.json"):
        compare_rows(tmp_path / "nothing")


def test_classifier_rows_average_each_classifier_over_seeds(tmp_path):
    out = tmp_path / "out"
    compare([tiny_config(tmp_path, "ft", 2, 1, False)], seeds=2, out=out)
    runs = results(out, "ft")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "compare.json").write_text(json.dumps({"rows": [{"label": "missing", "runs": []}]}))
    lines = classifier_rows(compare_rows(out) + compare_rows(tmp_path / "other"))
    row = next(line for line in lines if line.startswith("| ft | head"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    values = [r["metrics"]["head"]["class_il"]["final_average_accuracy"] for r in runs.values()]
    assert cells[2] == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    assert cells[-1] == "0,1"
    assert any("| missing | (no finished run)" in line for line in lines)

    # one seed has no spread: the value alone
    one = tmp_path / "one"
    compare([tiny_config(tmp_path, "ft", 2, 1, False)], seeds=1, out=one)
    row = next(line for line in classifier_rows(compare_rows(one)) if line.startswith("| ft | head"))
    value = results(one, "ft")[0]["metrics"]["head"]["class_il"]["final_average_accuracy"]
    assert row.split("|")[3].strip() == f"{value:.2f}"


def test_nc_long_reads_per_epoch_curves_and_first_epochs(tmp_path):
    out = tmp_path / "out"
    compare([tiny_config(tmp_path, "base", 1, 3, True), tiny_config(tmp_path, "other", 1, 3, True)], seeds=1, out=out)
    data = {row.label: finished(row) for row in compare_rows(out)}
    assert list(data) == ["base", "other"]
    ce, other = data["base"][0], data["other"][0]
    lines = nc_long_summary(data, "base")
    row = next(line for line in lines if line.startswith("| other | head"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2] == f"{other['metrics']['head']['class_il']['final_average_accuracy']:.2f}"
    assert cells[4] == "3"  # epochs evaluated
    assert cells[5] == f"{other['neural_collapse'][-1]['nc1']:.3f}"
    # the first epoch at which 'other' reaches base's final nc1, computed by hand from the per-epoch entries
    target = ce["per_epoch"][-1]["neural_collapse"]["nc1"]
    curve = [e["neural_collapse"]["nc1"] for e in other["per_epoch"]]
    first = next((i + 1 for i, v in enumerate(curve) if v <= target), None)
    reach = next(line for line in lines if line.startswith("| other |") and "head" not in line and line.count("|") == 8)
    assert reach.split("|")[2].strip().startswith("—" if first is None else str(first))


def test_nc_long_scores_corruptions_against_the_baseline_of_the_same_seed(tmp_path):
    from protosphere.data.corruptions import mean_corruption_error

    corrupt = {"corruptions": ["gaussian_noise", "contrast"], "corruption_severities": [1, 5]}
    out = tmp_path / "out"
    compare(
        [tiny_config(tmp_path, "base", 1, 2, True, **corrupt), tiny_config(tmp_path, "other", 1, 1, True, **corrupt)],
        seeds=1,
        out=out,
    )
    data = {row.label: finished(row) for row in compare_rows(out)}
    base, other = data["base"][0], data["other"][0]
    lines = nc_long_summary(data, "base")
    start = next(i for i, line in enumerate(lines) if line.startswith("Corruptions after the last epoch"))
    row = next(line for line in lines[start:] if line.startswith("| other | head"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    errors = {k: v for k, v in other["corruptions"]["head"].items() if isinstance(v, list)}
    base_errors = {k: base["corruptions"]["head"][k] for k in errors}
    assert cells[2] == f"{100 - other['accuracy']['head']['class_il'][-1][0]:.2f}"
    assert cells[3] == f"{statistics.mean(e for v in errors.values() for e in v):.2f}"
    assert cells[4] == f"{mean_corruption_error(errors, base_errors):.2f}"
    assert next(line for line in lines[start:] if line.startswith("| base | head")).split("|")[5].strip() == "100.00"


def test_train_feature_metrics_measure_the_final_and_the_initial_network_on_training_images(tmp_path):
    from protosphere import load_run
    from protosphere.bench.features import train_feature_metrics, untrained_run
    from protosphere.metrics.neural_collapse import neural_collapse

    out = tmp_path / "out"
    compare([tiny_config(tmp_path, "moved", 1, 2, False)], seeds=1, out=out)
    trained = load_run(compare_rows(out)[0].runs[0])
    task = trained.scenario.tasks[0]
    by_hand = neural_collapse(trained.encode(task.train_images), task.train_labels, trained.model.classifier_weights())
    assert train_feature_metrics(trained) == pytest.approx(by_hand, rel=1e-9)
    assert trained.results["neural_collapse"][-1]["split"] == "test"

    # at a learning rate too small to move a float32 weight, the final parameters are the initial ones: the rebuilt
    # untrained network must hold exactly them (and differ from a run that trained)
    config = validate_config(
        {
            **trained.config.model_dump(),
            "name": "frozen-seed0",
            "optimizer": {**trained.config.optimizer.model_dump(), "lr": 1e-30},
        }
    )
    run(config, show_progress=False)
    frozen = load_run(out / "frozen-seed0")
    initial = dict(untrained_run(frozen.config).model.named_parameters())
    final = dict(frozen.model.named_parameters())
    assert initial.keys() == final.keys()
    assert all(torch.equal(initial[k], final[k]) for k in final)
    assert not all(torch.equal(initial[k], p) for k, p in trained.model.named_parameters())


def test_clop_seed_rows_average_a_cell_over_seeds_and_count_diverged_runs(tmp_path):
    method = {
        "name": "clop",
        "projection_dim": 16,
        "label_fraction": 0.5,
        "lam": 1.0,
        "probe_epochs": 1,
        "probe_min_steps": 0,
    }
    config = tiny_config(tmp_path, "cell", 1, 1, False, method=method)
    out = tmp_path / "out"
    compare([config], seeds=2, out=out, overrides=["model.mlp_hidden=[32]", "train.batch_size=128"])
    runs = results(out, "cell")
    row = next(line for line in clop_seed_rows(compare_rows(out)) if line.startswith("| 50 %, λ = 1"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    probe = [r["accuracy"]["linear_probe"]["class_il"][-1][0] for r in runs.values()]
    ranks = [r["neural_collapse"][-1]["between_class_effective_rank"] for r in runs.values()]
    assert cells[1] == f"{statistics.mean(probe):.2f} ± {statistics.stdev(probe):.2f}"
    assert cells[4] == f"{statistics.mean(ranks):.2f} ± {statistics.stdev(ranks):.2f}"
    assert cells[-1] == "0,1"

    # a diverged seed, as a parallel compare records it: failed, its config written, and its log says why
    (out / "cell-seed2").mkdir()
    shutil.copy(out / "cell-seed0" / "config.yaml", out / "cell-seed2" / "config.yaml")
    (out / "cell-seed2.log").write_text("error: The loss became NaN/inf at task 0, step 3\n")
    summary = json.loads((out / "compare.json").read_text())
    summary["rows"][0]["runs"].append("cell-seed2")
    summary["rows"][0]["seeds"].append(2)
    summary["rows"][0]["status"].append("failed")
    summary["failed"] = [{"run": "cell-seed2", "log": str(out / "cell-seed2.log"), "error": "exit status 1"}]
    (out / "compare.json").write_text(json.dumps(summary))
    row = next(line for line in clop_seed_rows(compare_rows(out)) if line.startswith("| 50 %"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == f"{statistics.mean(probe):.2f} ± {statistics.stdev(probe):.2f}"  # scored seeds only
    assert cells[-2].endswith("of 3") and cells[-1] == "0,1,2"
    assert int(cells[-2].split()[0]) == 1 + sum(r < 2 or p < 50 for r, p in zip(ranks, probe))
