"""End-to-end runs on real (tiny) data and the engine's evaluation against hand-computed accuracies."""

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import make_dataset
from protosphere.buffer import ReplayBuffer
from protosphere.config import load_config, validate_config
from protosphere.data.scenarios import build_scenario
from protosphere.methods.base import Method, Transforms
from protosphere.metrics.continual import summarize
from protosphere.runs.protocol import Protocol
from protosphere.runs.runner import run


def digits_config(tmp_path, method, **extra):
    data = {
        "output_dir": str(tmp_path / "runs"),
        "name": f"{method['name'].replace('+', 'p')}-test",
        "data": {"dataset": "digits"},
        "scenario": {"num_tasks": 5},
        "model": {"backbone": "mlp"},
        "method": method,
        "train": {"epochs": 2, "batch_size": 16, "augmentation": "none"},
        "optimizer": {"lr": 0.05, "momentum": 0.0},
        "fabric": {"threads": 1},
    }
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    return validate_config(data)


@pytest.mark.parametrize(
    "method",
    [
        {"name": "finetune"},
        {"name": "er", "buffer_size": 50},
        {"name": "der++", "buffer_size": 50},
        {"name": "lwf"},
        {"name": "joint"},
    ],
)
def test_baselines_run_end_to_end_on_digits(tmp_path, method):
    config = digits_config(tmp_path, method)
    results, run_dir = run(config, show_progress=False)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["status"] == "complete" and saved["method"] == method["name"]
    matrix = saved["accuracy"]["head"]["class_il"]
    assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
    # FWT is not defined in class-IL (n/a); task-IL has it against the random-init baseline
    assert saved["metrics"]["head"]["class_il"] == summarize(matrix)
    assert saved["metrics"]["head"]["task_il"] == summarize(
        saved["accuracy"]["head"]["task_il"], saved["random_init"]["head"]["task_il"]
    )
    # every task is learnt when it is trained (diagonal), and task-IL is at least as good as class-IL
    task_il = saved["accuracy"]["head"]["task_il"]
    assert min(matrix[t][t] for t in range(5)) > 80
    assert all(task_il[t][j] >= matrix[t][j] - 1e-9 for t in range(5) for j in range(t + 1))
    # by default last.ckpt and the latest task checkpoint (train.keep_checkpoints=false)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "task-4.ckpt"]
    assert load_config(run_dir / "config.yaml").model_dump() == {**config.model_dump()}
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert {r["split"] for r in rows} == {"train", "test"}
    assert any(r["name"] == "head/class_il/task0" for r in rows)
    nc = saved["neural_collapse"][-1]
    assert nc["classes"] == 10 and nc["nc1"] > 0 and "nc3" in nc


def test_mammoth_init_and_inputs_are_selected_by_config(tmp_path):
    """model.init: xavier and train.normalize: false (the Mammoth-protocol configs) reach the built method: Linear
    biases start at zero, and the training and evaluation transforms give [0, 1] pixels."""
    from protosphere.runs.runner import build_method, build_scenario_from_config

    config = digits_config(
        tmp_path, {"name": "er", "buffer_size": 50}, model={"init": "xavier"}, train={"normalize": False}
    )
    scenario = build_scenario_from_config(config)
    torch.manual_seed(0)
    method = build_method(config, scenario)
    linears = [m for m in method.modules() if type(m) is torch.nn.Linear]
    assert len(linears) == 3 and all(torch.count_nonzero(m.bias) == 0 for m in linears)
    x = scenario.tasks[0].train_images[:8]
    assert torch.equal(method.transforms.train(x), x.float() / 255)
    assert torch.equal(method.transforms.eval(x), x.float() / 255)
    torch.manual_seed(0)
    default = build_method(digits_config(tmp_path, {"name": "er", "buffer_size": 50}), scenario)
    assert all(torch.count_nonzero(m.bias) > 0 for m in default.modules() if type(m) is torch.nn.Linear)
    assert not torch.equal(default.transforms.eval(x), x.float() / 255)
    configs = sorted((Path(__file__).parents[1] / "configs" / "mammoth-protocol").glob("*.yaml"))
    assert len(configs) == 7
    for path in configs:
        mammoth = load_config(path)
        assert mammoth.model.init == "xavier" and mammoth.train.normalize is False, path.name


def test_finetune_forgets_and_joint_does_not(tmp_path):
    finetune, _ = run(digits_config(tmp_path, {"name": "finetune"}), show_progress=False)
    joint, _ = run(digits_config(tmp_path, {"name": "joint"}), show_progress=False)
    final = lambda record: record.summary("head").final_average_accuracy  # noqa: E731
    assert final(finetune) < 40  # class-IL fine-tuning keeps little more than the last task (20 % of the classes)
    assert final(joint) > 85


class FixedLogits(Method):
    """Predicts class (label + shift) % K from a label encoded in the first pixel, to check the accuracy bookkeeping."""

    def __init__(self, num_classes, shift_for):
        super().__init__(
            validate_config({}).method, torch.nn.Identity(), num_classes, Transforms(lambda x: x, lambda x: x)
        )
        self.shift_for = shift_for
        self.backbone.out_dim = 1

    def logits(self, images):
        labels = (images[:, 0, 0, 0] * 255).round().long()
        shifted = torch.where(self.shift_for(labels), (labels + 1) % self.num_classes, labels)
        return (
            torch.nn.functional.one_hot(shifted, self.num_classes).float()
            + 0.5 * torch.nn.functional.one_hot(labels, self.num_classes).float()
        )


def test_evaluate_matches_hand_computed_class_and_task_il():
    dataset = make_dataset(num_classes=4, per_class_train=2, per_class_test=5)
    scenario = build_scenario(dataset, "class_il", 2)
    for task in scenario.tasks:  # encode the label in the first pixel
        task.test_images[:, 0, 0, 0] = task.test_labels.to(torch.uint8)
    # wrong (shifted) predictions for classes 1 and 2 only
    method = FixedLogits(4, lambda y: (y == 1) | (y == 2))
    protocol = Protocol(validate_config({"model": {"channels_last": False}}), scenario)
    row = protocol.accuracy_row(method, up_to=1)[0]["head"]
    # task 0 = classes {0,1}: class 0 right, class 1 predicted as 2 → class-IL 50 %; within the task the runner-up
    # logit (its own label, 0.5) wins → task-IL 100 %. Task 1 = {2,3}: class 2 → 3 (wrong in both), class 3 right.
    assert row["class_il"] == [50.0, 50.0]
    assert row["task_il"] == [100.0, 50.0]


def test_der_plus_plus_step_is_the_written_loss():
    from protosphere.methods.derpp import DERpp, DERppConfig

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 6))
    backbone.out_dim = 6
    method = DERpp(DERppConfig(buffer_size=8, alpha=0.3, beta=0.7), backbone, 3, Transforms(lambda x: x, lambda x: x))

    def batch(n):  # as the engine makes batches: uint8 images / 255
        return torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8).float().div(255)

    x1, y1 = batch(8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    method.training_step(x1, y1, None)  # fills the buffer (8 rows, capacity 8)
    stored = method.buffer.all()
    assert stored["examples"].dtype == torch.uint8  # kept as the datasets hold images
    assert torch.equal(stored["examples"].float().div(255), x1)
    x2, y2 = batch(4), torch.tensor([2, 2, 1, 0])
    before = ReplayBuffer(8)
    before.load_state_dict(method.buffer.state_dict())
    out = method.training_step(x2, y2, None)
    first, second = before.sample(4), before.sample(4)  # the draws the step made, before it stored x2
    for drawn in (first, second):
        drawn["examples"] = drawn["examples"].float().div(255)
    f = lambda x: method.classifier(backbone(x))  # noqa: E731
    expected = (
        torch.nn.functional.cross_entropy(f(x2), y2)
        + 0.3 * torch.nn.functional.mse_loss(f(first["examples"]), first["logits"])
        + 0.7 * torch.nn.functional.cross_entropy(f(second["examples"]), second["labels"])
    )
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_lwf_snapshot_is_frozen_and_taken_at_task_start(tmp_path):
    config = digits_config(
        tmp_path, {"name": "lwf"}, scenario={"num_tasks": 2}, train={"epochs": 1, "keep_checkpoints": True}
    )  # task-0.ckpt is read below
    results, run_dir = run(config, show_progress=False)
    state = torch.load(run_dir / "checkpoints" / "task-1.ckpt", weights_only=True)["method"]
    snapshot = state["_extra_state"]["snapshots"]["past"]
    first = torch.load(run_dir / "checkpoints" / "task-0.ckpt", weights_only=True)["method"]
    # the past model used during task 1 is exactly the model at the end of task 0
    assert torch.equal(snapshot["0.net.0.weight"], first["backbone.net.0.weight"])
    assert not torch.equal(state["backbone.net.0.weight"], first["backbone.net.0.weight"])
