"""The evaluation protocol against slow per-sample references, and the results a run records after epochs and tasks."""

import csv
import subprocess
import sys

import pytest
import torch

from conftest import make_dataset
from protosphere.config import validate_config
from protosphere.data.scenarios import build_scenario, model_input
from protosphere.methods.base import Method, StepContext, TaskContext, Transforms
from protosphere.metrics.continual import forward_transfer, summarize
from protosphere.runs.engine import train_step
from protosphere.runs.protocol import Protocol, summary_metrics
from protosphere.runs.runner import build_method, run


def tiny_setup(method: dict, num_tasks=2, seed=0):
    config = validate_config(
        {
            "model": {"backbone": "mlp", "mlp_hidden": [16], "channels_last": False},
            "method": method,
            "train": {"augmentation": "none"},
            "eval": {"batch_size": 7},
        }
    )
    scenario = build_scenario(
        make_dataset(num_classes=4, per_class_train=10, per_class_test=9, seed=seed), "class_il", num_tasks
    )
    torch.manual_seed(seed)
    return config, scenario, build_method(config, scenario)


def per_sample_row(method, scenario, up_to):
    """Accuracy (%) of every classifier, one test image at a time: class-IL argmax over all classes, task-IL the
    task class with the largest score (the first on ties)."""
    method.eval()
    row = {}
    with torch.no_grad():
        for name, classify in method.classifiers().items():
            class_il, task_il = [], []
            for task in scenario.tasks[: up_to + 1]:
                right = right_in_task = 0
                for image, label in zip(task.test_images, task.test_labels.tolist()):
                    scores = classify(image[None].float() / 255)[0].tolist()
                    right += max(range(len(scores)), key=lambda c: (scores[c], -c)) == label
                    best = max(task.classes, key=lambda c: (scores[c], -c))
                    right_in_task += best == label
                class_il.append(100.0 * right / len(task.test_labels))
                task_il.append(100.0 * right_in_task / len(task.test_labels))
            row[name] = {"class_il": class_il, "task_il": task_il}
    return row


def test_accuracy_row_equals_a_per_sample_reference():
    config, scenario, method = tiny_setup({"name": "finetune"})
    row, seconds = Protocol(config, scenario).accuracy_row(method, up_to=1)
    assert row == per_sample_row(method, scenario, up_to=1)
    assert set(seconds) == {"head"} and seconds["head"] >= 0


def test_fitted_classifiers_are_scored_like_the_per_sample_reference():
    """ncm and the linear probe, fitted on task 1 by the protocol, scored on both tasks (a batch size that does not
    divide the test sets)."""
    config, scenario, method = tiny_setup(
        {
            "name": "supcon",
            "classifiers": ["ncm", "linear_probe"],
            "probe_epochs": 2,
            "probe_min_steps": 0,
            "projection_dim": 4,
        }
    )
    protocol = Protocol(config, scenario)
    row, _ = protocol.accuracy_row(method, up_to=1, prepare=TaskContext.of(scenario, 1))
    assert list(row) == ["ncm", "linear_probe"]
    assert row == per_sample_row(method, scenario, up_to=1)


class UnseenTaskScores(Method):
    """Scores every class of task 1 as -inf (a class mean never fitted) and predicts the label elsewhere."""

    def __init__(self):
        super().__init__(validate_config({}).method, torch.nn.Identity(), 4, Transforms(lambda x: x, lambda x: x))

    def logits(self, images):
        labels = (images[:, 0, 0, 0] * 255).round().long()
        scores = torch.nn.functional.one_hot(labels, 4).float()
        scores[:, 2:] = float("-inf")
        return scores


def test_task_il_is_the_argmax_over_the_tasks_own_columns_even_when_all_are_minus_infinity():
    scenario = build_scenario(make_dataset(num_classes=4, per_class_train=2, per_class_test=5), "class_il", 2)
    for task in scenario.tasks:
        task.test_images[:, 0, 0, 0] = task.test_labels.to(torch.uint8)
    protocol = Protocol(validate_config({"model": {"channels_last": False}}), scenario)
    row = protocol.accuracy_row(UnseenTaskScores(), 1)[0]
    # task 1 = classes {2, 3}, both -inf: class-IL predicts class 0 (never right); within the task the first of its
    # classes wins the tie, so its images (half of the task) count as right, as when the masked columns are argmaxed
    assert row["head"] == {"class_il": [100.0, 0.0], "task_il": [100.0, 50.0]}


def test_confusion_matrix_counts_per_sample_predictions():
    config, scenario, method = tiny_setup({"name": "finetune"})
    images = torch.cat([t.test_images for t in scenario.tasks])
    labels = torch.cat([t.test_labels for t in scenario.tasks])
    method.eval()
    confusion = Protocol(config, scenario).confusion(method, images, labels).model_dump()
    expected = [[0] * 4 for _ in range(4)]
    with torch.no_grad():
        for image, label in zip(images, labels.tolist()):
            expected[label][int(method.logits(image[None].float() / 255).argmax())] += 1
    assert confusion == {"classifier": "head", "classes": [0, 1, 2, 3], "matrix": expected, "other": [0] * 4}


def test_neural_collapse_is_measured_on_the_seen_classes_test_features():
    from protosphere.metrics.neural_collapse import neural_collapse

    config, scenario, method = tiny_setup({"name": "finetune"})
    protocol = Protocol(config, scenario)
    assert protocol.neural_collapse(method, 0).classes == 2
    nc = protocol.neural_collapse(method, 1).model_dump(exclude_unset=True)
    images = torch.cat([t.test_images for t in scenario.tasks])
    labels = torch.cat([t.test_labels for t in scenario.tasks])
    method.eval()
    with torch.no_grad():
        features = torch.cat([method.features(image[None].float() / 255) for image in images])
    reference = neural_collapse(features, labels, method.classifier_weights().detach())
    assert nc["split"] == "test" and nc["classes"] == 4
    assert nc.keys() - {"split", "classes"} == reference.keys()
    for key, value in reference.items():
        assert nc[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_random_init_baseline_is_the_untrained_row_once():
    config, scenario, method = tiny_setup({"name": "finetune"})
    protocol = Protocol(config, scenario)
    protocol.random_init_baseline(method, TaskContext.of(scenario, 0))
    assert protocol.evaluation.random_init == per_sample_row(method, scenario, up_to=1)
    kept = {"head": {"class_il": [1.0, 2.0]}}
    protocol.evaluation.random_init = kept
    protocol.random_init_baseline(method, TaskContext.of(scenario, 0))  # a resumed run keeps its baseline
    assert protocol.evaluation.random_init == kept


def test_summary_metrics_leave_fwt_out_of_class_il_only():
    matrix = [[90.0, 20.0], [70.0, 80.0]]
    baseline = {"head": {"class_il": [10.0, 15.0], "task_il": [50.0, 40.0]}}
    metrics = summary_metrics({"head": {"class_il": matrix, "task_il": matrix}}, baseline, "class_il")
    assert metrics["head"]["class_il"].model_dump() == summarize(matrix)
    assert metrics["head"]["task_il"].forward_transfer == forward_transfer(matrix, [50.0, 40.0])
    data_il = summary_metrics({"head": {"class_il": matrix}}, {"head": {"class_il": [50.0, 40.0]}}, "data_il")
    assert data_il["head"]["class_il"].forward_transfer == forward_transfer(matrix, [50.0, 40.0])


def test_model_input_converts_uint8_once_and_passes_floats():
    pixels = torch.arange(2 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 4, 4)
    x = model_input(pixels)
    assert x.dtype == torch.float32 and torch.equal(x, pixels.float() / 255)
    assert torch.equal((x * 255).round().to(torch.uint8), pixels) and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert x.is_contiguous() and model_input(pixels, channels_last=True).is_contiguous(
        memory_format=torch.channels_last
    )
    assert model_input(x) is x


def test_task_context_of_a_scenario():
    scenario = build_scenario(make_dataset(num_classes=6), "class_il", 3)
    context = TaskContext.of(scenario, 2)
    assert context.classes == (4, 5) and context.seen_classes == list(range(6)) and context.num_tasks == 3
    assert context.previous_classes == [0, 1, 2, 3]
    assert torch.equal(context.train_images, scenario.tasks[2].train_images)
    assert [torch.equal(x, t.train_images) for (x, _), t in zip(context.previous, scenario.tasks)] == [True, True]
    first = TaskContext.of(scenario, 0)
    assert first.previous_classes == [] and first.previous == []


def test_train_step_is_forward_backward_and_one_optimiser_step():
    config, scenario, method = tiny_setup({"name": "finetune"})
    reference = build_method(config, scenario)
    reference.load_state_dict(method.state_dict())
    x = model_input(scenario.tasks[0].train_images[:8])
    y = scenario.tasks[0].train_labels[:8]
    step = StepContext(task=0, epoch=0, step=0, steps_in_task=1, global_step=0)
    no_grads_yet = []
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    out = train_step(
        method,
        optimizer,
        x,
        y,
        step,
        inspect=lambda output: no_grads_yet.append(all(p.grad is None for p in method.parameters())),
    )
    expected = reference.training_step(x, y, step)
    expected.loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.5 * p.grad
    assert no_grads_yet == [True]  # inspected once, before the backward pass
    assert all(p.grad is not None for p in method.parameters())
    assert torch.equal(out.loss, expected.loss)
    for a, b in zip(method.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_per_epoch_and_task_entries_of_a_run(tmp_path):
    """eval.per_epoch: an entry per epoch; the last epoch of a task repeats that task's accuracy row (all tasks), the
    others score the tasks seen so far; nc_epochs repeats their NC metrics; metrics.csv logs the inner epochs."""
    config = validate_config(
        {
            "output_dir": str(tmp_path),
            "name": "per-epoch",
            "data": {"dataset": "digits"},
            "scenario": {"num_tasks": 2},
            "model": {"backbone": "mlp"},
            "method": {"name": "finetune"},
            "train": {"epochs": 3, "batch_size": 64, "augmentation": "none"},
            "eval": {"per_epoch": True, "report": "off"},
            "fabric": {"threads": 1},
        }
    )
    record, run_dir = run(config, show_progress=False)
    results = record.to_data()
    entries = results["per_epoch"]
    assert [(e["task"], e["epoch"]) for e in entries] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    matrix = results["accuracy"]["head"]
    for entry in entries:
        t, row = entry["task"], entry["accuracy"]["head"]
        if entry["epoch"] == 2:
            assert row == {setting: matrix[setting][t] for setting in matrix}
            assert entry["neural_collapse"] == results["neural_collapse"][t]
        else:
            assert set(row) == {"class_il", "task_il"} and all(len(v) == t + 1 for v in row.values())
            assert entry["neural_collapse"]["classes"] == 5 * (t + 1)  # digits: 10 classes in 2 tasks
    from protosphere.runs.rundir import read_record

    assert "nc_epochs" not in results  # derived from per_epoch by the record, not written twice
    assert [e.model_dump(exclude_none=True) for e in read_record(run_dir).epoch_neural_collapse()] == [
        {"task": e["task"], "epoch": e["epoch"], **e["neural_collapse"]} for e in entries
    ]
    assert [len(row) for row in matrix["class_il"]] == [2, 2]
    assert [x["task"] for x in results["timings"]["tasks"]] == [0, 1]
    assert set(results["timings"]["tasks"][0]["classifiers"]) == {"head"}
    logged = {(r["task"], r["epoch"]) for r in csv.DictReader(open(run_dir / "metrics.csv")) if r["split"] == "epoch"}
    assert logged == {("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")}


def test_the_engine_does_not_import_the_report():
    import os
    from pathlib import Path

    import protosphere

    code = (
        "import sys, protosphere.runs.engine, protosphere.runs.protocol; "
        "print(sorted(m for m in sys.modules if m.startswith('protosphere.report')))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(protosphere.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"
