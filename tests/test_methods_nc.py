"""Supervised / semi-supervised prototype methods: ce, supcon, normface, ntce, nonl, clop.

Each training step is checked against the explicit loss composition on the same views (augmentation replaced by the
identity, so both views are the input), the class-mean EMA classifier on a separable set, CLOP's labelled subset, and
two end-to-end runs through the runner.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import make_dataset
from protosphere.config import validate_config
from protosphere.evaluation import accuracy
from protosphere.geometry import orthonormal_prototypes
from protosphere.losses import clop, nonl, normface, nt_xent, ntce, supcon, supervised_ntxent
from protosphere.methods import method_class
from protosphere.methods.base import StepContext, TaskContext, Transforms
from protosphere.methods.clop import labelled_mask
from protosphere.models import build_backbone
from protosphere.runs.runner import run

IDENTITY = Transforms(train=lambda x: x, eval=lambda x: x)
STEP = StepContext(task=0, epoch=0, step=0, steps_in_task=1, global_step=0)


def build(name, num_classes=4, **settings):
    torch.manual_seed(0)
    config = method_class(name).config_class.model_validate({"name": name, **settings})
    backbone = build_backbone("mlp", in_channels=1, image_size=8, hidden=(32,))
    return method_class(name)(config, backbone, num_classes, IDENTITY)


def batch(n=12, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % num_classes


def task_context(images, labels, index=0, classes=(0, 1, 2, 3)):
    return TaskContext(
        index=index,
        classes=tuple(classes),
        seen_classes=list(classes),
        num_tasks=1,
        train_images=images,
        train_labels=labels,
    )


def test_ce_step_is_cross_entropy_of_the_linear_head():
    method = build("ce")
    x, y = batch()
    out = method.training_step(x, y, STEP)
    assert torch.allclose(out.loss, F.cross_entropy(method.classifier(method.backbone(x)), y))
    assert method.classifier_weights() is method.classifier.weight
    assert build("ce", bias=False).classifier.bias is None


def test_supcon_step_and_class_mean_ema_update():
    method = build("supcon", temperature=0.2, base_temperature=0.1, class_mean_momentum=0.9)
    x, y = batch()
    out = method.training_step(x, y, STEP)
    h = method.backbone(torch.cat([x, x]))
    z = F.normalize(method.projector(h), dim=1)
    assert torch.allclose(out.loss, supcon(z, torch.cat([y, y]), temperature=0.2, base_temperature=0.1))
    # first update: each class's accumulator is the batch mean of its normalised encoder features
    hn = F.normalize(h.detach(), dim=1)
    first = torch.stack([hn[torch.cat([y, y]) == c].mean(0) for c in range(4)])
    assert torch.allclose(method.running_means.accumulator, first, atol=1e-6)
    x2, _ = batch(seed=1)
    method.training_step(x2, y, STEP)
    h2 = F.normalize(method.backbone(torch.cat([x2, x2])).detach(), dim=1)
    second = torch.stack([h2[torch.cat([y, y]) == c].mean(0) for c in range(4)])
    assert torch.allclose(method.running_means.accumulator, 0.9 * first + 0.1 * second, atol=1e-6)
    assert torch.equal(method.classifier_weights(), method.running_means.means)
    assert list(method.classifiers()) == ["class_mean_ema", "ncm", "linear_probe"]


def test_contrastive_steps_use_gather_on_embeddings_and_labels():
    """A fake two-process gather (this rank's rows twice) must reach the loss for embeddings and labels alike."""
    x, y = batch(6)
    twice = lambda t: torch.cat([t, t])  # noqa: E731
    method = build("supcon")
    method.install_collectives(gather=twice)
    z = method.embed(torch.cat([x, x]))
    expected = supcon(twice(z), twice(torch.cat([y, y])), temperature=0.1, base_temperature=0.07)
    assert torch.allclose(method.training_step(x, y, STEP).loss, expected)
    assert int(method.running_means.counts.sum()) == 24  # the EMA saw the gathered rows
    method = build("ntce")
    method.install_collectives(gather=twice)
    u = method.embed(x)
    assert torch.allclose(method.training_step(x, y, STEP).loss, ntce(twice(u), twice(y), method.weight, 0.2))
    method = build("clop", projection_dim=8)
    method.install_collectives(gather=twice)
    z1, z2 = method.embed(torch.cat([x, x])).chunk(2)
    expected = clop(twice(z1), twice(z2), twice(y), method.prototypes) + supervised_ntxent(
        twice(z1), twice(z2), twice(y), temperature=0.5
    )
    assert torch.allclose(method.training_step(x, y, STEP).loss, expected)


@pytest.mark.parametrize("name,loss", [("normface", normface), ("ntce", ntce), ("nonl", nonl)])
def test_normalized_steps_equal_their_loss_on_normalised_features(name, loss):
    method = build(name, temperature=0.15)
    x, y = batch()
    out = method.training_step(x, y, STEP)
    u = F.normalize(method.backbone(x), dim=1)
    assert torch.allclose(out.loss, loss(u, y, method.weight, 0.15))
    assert set(out.terms) == {name}
    w_hat = F.normalize(method.weight, dim=1)
    assert torch.allclose(method.logits(x), u @ w_hat.T, atol=1e-6)
    assert torch.allclose(method.classifier_weights(), w_hat)
    out.loss.backward()
    assert method.weight.grad is not None and torch.isfinite(method.weight.grad).all()


def test_nonl_bidirectional_and_projection_embedding():
    x, y = batch()
    method = build("nonl", bidirectional=True)
    u = F.normalize(method.backbone(x), dim=1)
    both = method.training_step(x, y, STEP).loss
    assert torch.allclose(both, nonl(u, y, method.weight, 0.1, bidirectional=True))
    assert not torch.allclose(both, nonl(u, y, method.weight, 0.1))
    projected = build("ntce", embedding="projection", projection_dim=16)
    u = F.normalize(projected.projector(projected.backbone(x)), dim=1)
    assert projected.weight.shape == (4, 16)
    assert torch.allclose(projected.training_step(x, y, STEP).loss, ntce(u, y, projected.weight, 0.2))
    assert projected.classifier_weights() is None  # NC metrics live in encoder space


@pytest.mark.parametrize("partner", ["supervised_ntxent", "nt_xent"])
def test_clop_step_is_prototype_term_plus_partner(partner):
    method = build("clop", projection_dim=8, lam=0.7, temperature=0.3, partner=partner)
    x, y = batch()
    y = y.clone()
    y[::3] = -1  # unlabeled rows
    out = method.training_step(x, y, STEP)
    z1, z2 = F.normalize(method.projector(method.backbone(torch.cat([x, x]))), dim=1).chunk(2)
    prototypes = orthonormal_prototypes(4, 8, seed=0)
    term = clop(z1, z2, y, prototypes, lam=0.7)
    other = supervised_ntxent(z1, z2, y, 0.3) if partner == "supervised_ntxent" else nt_xent(z1, z2, 0.3)
    assert torch.allclose(out.loss, term + other)
    assert torch.allclose(out.terms["clop"], term) and torch.allclose(out.terms[partner], other)
    assert torch.equal(method.prototypes, prototypes) and "prototypes" in method.state_dict()
    assert not any(p is method.prototypes for p in method.parameters())
    with pytest.raises(ValueError, match="dim >= 4"):
        build("clop", projection_dim=3)


def test_class_mean_ema_classifier_is_perfect_on_a_separable_set():
    dataset = make_dataset(num_classes=4, per_class_train=40, per_class_test=20)
    images = torch.from_numpy(dataset.train_images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(dataset.train_labels)
    method = build("supcon", classifiers=["class_mean_ema"])
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        rows = torch.randperm(len(labels), generator=g)[:32]
        loss = method.training_step(images[rows].float() / 255, labels[rows], STEP).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    method.eval()
    test_x = torch.from_numpy(dataset.test_images).permute(0, 3, 1, 2).float() / 255
    test_y = torch.from_numpy(dataset.test_labels)
    with torch.no_grad():
        logits = method.classifiers()["class_mean_ema"](test_x)
    assert accuracy(logits, test_y) >= 99.0
    # the classifier is the EMA means (not the exact means of the base class, which were never fitted here)
    assert method.class_means.abs().sum() == 0 and method.running_means.seen.all()


def test_labelled_mask_counts_determinism_and_no_leak():
    labels = torch.arange(4).repeat_interleave(torch.tensor([100, 50, 7, 1]))
    mask = labelled_mask(labels, 0.1, seed=3)
    assert [int(mask[labels == c].sum()) for c in range(4)] == [10, 5, 1, 1]  # max(1, round(0.1·n_c))
    assert torch.equal(mask, labelled_mask(labels, 0.1, seed=3))
    assert not torch.equal(mask, labelled_mask(labels, 0.1, seed=4))
    assert labelled_mask(labels, 1.0).all()
    with pytest.raises(ValueError):
        labelled_mask(labels, 0.0)

    method = build("clop", projection_dim=8, label_fraction=0.1, label_seed=3)
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous()
    context = task_context(images, labels)
    train_x, train_y = method.training_data(context)
    assert torch.equal(train_x, images)
    kept = train_y != -1
    assert torch.equal(kept, labelled_mask(labels, 0.1, seed=3 * 1_000_003))  # seed: (label_seed, task index)
    assert torch.equal(train_y[kept], labels[kept]) and set(train_y[~kept].tolist()) == {-1}
    eval_x, eval_y = method.evaluation_data(context)
    assert torch.equal(eval_x, images[kept]) and torch.equal(eval_y, labels[kept])
    # another task draws another subset; a repeat of the same task the same one
    other = method.training_data(task_context(images, labels, index=1))[1] != -1
    assert not torch.equal(other, kept)
    assert torch.equal(method.training_data(context)[1], train_y)
    # with all labels nothing changes
    full = build("clop", projection_dim=8)
    assert torch.equal(full.training_data(context)[1], labels)


def test_clop_probe_sees_only_labelled_rows():
    method = build("clop", projection_dim=8, label_fraction=0.25, classifiers=["ncm", "linear_probe"], probe_epochs=1)
    labels = torch.arange(4).repeat_interleave(8)
    images = torch.randint(0, 255, (32, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    seen = []
    method.encode = lambda x, batch_size=256: (seen.append(len(x)), torch.randn(len(x), 32))[1]
    method.eval()
    method.prepare_evaluation(task_context(images, labels))
    assert seen == [8]  # 2 labelled rows per class


def _digits_run(tmp_path, method, **train):
    data = {
        "output_dir": str(tmp_path / "runs"),
        "name": f"{method['name']}-smoke",
        "data": {"dataset": "digits"},
        "scenario": {"num_tasks": 1},
        "model": {"backbone": "mlp", "mlp_hidden": [64]},
        "method": method,
        "optimizer": {"lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 2, "batch_size": 64, "augmentation": "none", **train},
        "fabric": {"threads": 1},
    }
    record, _ = run(validate_config(data), show_progress=False)
    return record.to_data()


def test_supcon_and_ntce_run_end_to_end_on_digits(tmp_path):
    results = _digits_run(tmp_path, {"name": "supcon", "probe_epochs": 2, "projection_dim": 32})
    assert results["status"] == "complete" and results["headline_classifier"] == "class_mean_ema"
    assert set(results["accuracy"]) == {"class_mean_ema", "ncm", "linear_probe"}
    final = {c: results["accuracy"][c]["class_il"][-1][0] for c in results["accuracy"]}
    assert final["class_mean_ema"] > 70 and final["ncm"] > 70, final
    nc = results["neural_collapse"][-1]
    assert nc["classes"] == 10 and "nc3" in nc and "nc4" in nc
    # each classifier's fitting and prediction time is recorded: the EMA class means cost nothing to fit (they are
    # kept during training), the probe trains on the encoded features (the shared encoding is its own entry)
    timing = results["timings"]["tasks"][-1]["classifiers"]
    assert set(timing) == {"class_mean_ema", "ncm", "linear_probe", "encode"}
    assert timing["class_mean_ema"]["fit_s"] == 0.0 and timing["linear_probe"]["fit_s"] > 0
    assert timing["encode"]["fit_s"] > 0 and all(t["predict_s"] > 0 for n, t in timing.items() if n != "encode")

    results = _digits_run(tmp_path, {"name": "ntce", "temperature": 0.2})
    assert results["status"] == "complete" and set(results["accuracy"]) == {"head"}
    assert results["accuracy"]["head"]["class_il"][-1][0] > 70
    assert "nc3" in results["neural_collapse"][-1]
    json.dumps(results)


@pytest.mark.parametrize("which", ["headline", "all"])
def test_corruption_suite_runs_after_the_last_task(tmp_path, which):
    data = {
        "output_dir": str(tmp_path / "runs"),
        "name": f"corrupt-{which}",
        "data": {"dataset": "digits"},
        "scenario": {"num_tasks": 1},
        "model": {"backbone": "mlp", "mlp_hidden": [32]},
        "method": {"name": "supcon", "probe_epochs": 1, "probe_min_steps": 0, "projection_dim": 16},
        "train": {"epochs": 1, "batch_size": 128, "augmentation": "none"},
        "fabric": {"threads": 1},
        "eval": {"corruptions": "all", "corruption_severities": [1, 5], "corruption_classifiers": which},
    }
    results = run(validate_config(data), show_progress=False)[0].to_data()
    from protosphere.data.corruptions import CORRUPTIONS

    expected = {"class_mean_ema"} if which == "headline" else {"class_mean_ema", "ncm", "linear_probe"}
    assert set(results["corruptions"]) == expected
    for errors in results["corruptions"].values():
        per_type = {k: v for k, v in errors.items() if isinstance(v, list)}
        assert set(per_type) == set(CORRUPTIONS) and all(len(v) == 2 for v in per_type.values())
        assert all(0 <= e <= 100 for v in per_type.values() for e in v)
