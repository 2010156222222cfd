"""co2l, fnc2 and nct: each training step equals the explicit composition of the protosphere.losses functions on the
same augmented views; task-boundary hooks (past-model snapshot, Co2L memory, MoE experts); configs; an engine smoke
run."""

import copy
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protosphere.config import load_config, validate_config
from protosphere.errors import ConfigError
from protosphere.geometry import simplex_etf
from protosphere.losses import asymmetric_supcon, dr_loss, fnc2, hsd_alpha, inverse_frequency_weights, ird, prd
from protosphere.methods import method_class
from protosphere.methods.base import StepContext, TaskContext, Transforms
from protosphere.models import build_backbone

K, SIZE, TASKS = 6, 8, [(0, 1), (2, 3), (4, 5)]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def noisy(x):  # a random "augmentation" drawn from the global RNG, so reseeding replays it exactly
    return x + 0.1 * torch.randn_like(x)


def make_method(name, **settings):
    settings = {"projection_dim": 8, "projection_hidden": 16, **settings}
    cls = method_class(name)
    config = cls.resolve_config(cls.config_class(name=name, **settings), types.SimpleNamespace(num_tasks=len(TASKS)))
    backbone = build_backbone("mlp", in_channels=1, image_size=SIZE, hidden=(16,))
    return cls(config, backbone, K, Transforms(train=noisy, eval=lambda x: x))


def tiny_tasks(per_class=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = []
    for classes in TASKS:
        labels = torch.tensor(classes).repeat_interleave(per_class)
        data.append((torch.randint(0, 256, (len(labels), 1, SIZE, SIZE), generator=g, dtype=torch.uint8), labels))
    return data


def context(data, t):
    seen = sorted(c for cs in TASKS[: t + 1] for c in cs)
    return TaskContext(
        index=t,
        classes=TASKS[t],
        seen_classes=seen,
        num_tasks=len(TASKS),
        train_images=data[t][0],
        train_labels=data[t][1],
        previous_classes=seen[: -len(TASKS[t])] if t else [],
        previous=list(data[:t]),
    )


def step_ctx(task, step=0, total=10, epochs=1):
    return StepContext(
        task=task, epoch=step * epochs // total, step=step, steps_in_task=total, global_step=step, epochs_in_task=epochs
    )


def perturb(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def enter_task(method, data, t):
    """Run the hooks up to task t; returns the model as it was at the start of t (the expected past model)."""
    for s in range(t + 1):
        ctx = context(data, s)
        past = copy.deepcopy(nn.Sequential(method.backbone, method.projector)).eval()
        method.begin_task(ctx)
        if s < t:
            perturb(method, seed=s + 10)  # "training" of task s
    perturb(method, seed=99)  # the current model moves away from the snapshot
    return ctx, past


def batch(method, ctx, n=12):
    images, labels = method.training_data(ctx)
    rows = torch.cat([torch.arange(n // 2), torch.arange(len(labels) - n // 2, len(labels))])  # buffer rows last
    return images[rows].float().div(255), labels[rows]


def views_and_embed(method, x, seed):
    torch.manual_seed(seed)
    views = torch.cat([noisy(x), noisy(x)])
    return views, F.normalize(method.projector(method.backbone(views)), dim=1)


# ------------------------------------------------------------------------------------------------ co2l
@pytest.mark.parametrize("buffer_size", [0, 8])
def test_co2l_step_is_asymmetric_supcon_plus_ird(buffer_size):
    method, data = make_method("co2l", buffer_size=buffer_size, distill_weight=0.7), tiny_tasks()
    ctx, past = enter_task(method, data, 1)
    x, y = batch(method, ctx)
    assert (buffer_size > 0) == bool(torch.isin(y, torch.tensor(ctx.previous_classes)).any())
    torch.manual_seed(5)
    out = method.training_step(x, y, step_ctx(1))
    views, z = views_and_embed(method, x, 5)
    with torch.no_grad():
        z_past = F.normalize(past(views), dim=1)
    y2 = y.repeat(2)
    expected = asymmetric_supcon(z, y2, TASKS[1], 0.5, 0.07) + 0.7 * ird(z, z_past, 0.2, 0.01)
    torch.testing.assert_close(out.loss, expected)
    assert set(out.terms) == {"asym_supcon", "ird"}

    method0, data = make_method("co2l"), tiny_tasks()
    method0.begin_task(context(data, 0))
    x, y = data[0][0][:8].float() / 255, data[0][1][:8]
    torch.manual_seed(3)
    out = method0.training_step(x, y, step_ctx(0))
    _, z = views_and_embed(method0, x, 3)
    torch.testing.assert_close(out.loss, asymmetric_supcon(z, y.repeat(2), TASKS[0], 0.5, 0.07))
    assert "ird" not in out.terms and method0.snapshot("past") is None


@pytest.mark.parametrize("bn", ["eval", "train"])
def test_past_model_taken_at_task_start_and_frozen_during_task(bn):
    method, data = make_method("co2l", past_model_bn=bn), tiny_tasks()
    method.begin_task(context(data, 0))
    perturb(method)
    at_start = copy.deepcopy(nn.Sequential(method.backbone, method.projector).state_dict())
    method.begin_task(context(data, 1))
    past = method.snapshot("past")
    assert past.training == (bn == "train")
    assert all(not p.requires_grad for p in past.parameters())
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    x, y = data[1][0][:8].float() / 255, data[1][1][:8]
    for s in range(3):
        out = method.training_step(x, y, step_ctx(1, s))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert all(torch.equal(v, past.state_dict()[k]) for k, v in at_start.items())
    now = nn.Sequential(method.backbone, method.projector).state_dict()
    assert any(not torch.equal(now[k], v) for k, v in at_start.items())  # the model itself did train
    assert not any(p is q for p in past.parameters() for q in method.parameters())
    method.begin_task(context(data, 2))  # refreshed at the next task start
    now = nn.Sequential(method.backbone, method.projector).state_dict()
    assert all(torch.equal(v, method.snapshot("past").state_dict()[k]) for k, v in now.items())


def test_co2l_buffer_shrinks_evenly_and_refills_with_previous_task():
    method, data = make_method("co2l", buffer_size=12), tiny_tasks()
    method.begin_task(context(data, 0))
    assert method.memory.buffer.is_empty()
    assert method.training_data(context(data, 0))[0] is data[0][0]
    method.begin_task(context(data, 1))
    assert method.memory.buffer.class_counts() == {0: 6, 1: 6}
    kept = method.memory.buffer.all()
    method.begin_task(context(data, 2))
    assert method.memory.buffer.class_counts() == {0: 3, 1: 3, 2: 3, 3: 3}
    stored = method.memory.buffer.all()
    for c in (0, 1):  # the old rows are a subset of what was kept before
        old = {bytes(x.numpy()) for x in kept["examples"][kept["labels"] == c]}
        assert {bytes(x.numpy()) for x in stored["examples"][stored["labels"] == c]} <= old
    pool = {bytes(x.numpy()) for x in data[1][0]}
    assert all(bytes(x.numpy()) in pool for x in stored["examples"][stored["labels"] >= 2])
    images, labels = method.training_data(context(data, 2))
    assert len(labels) == len(data[2][1]) + 12 and torch.equal(labels[: len(data[2][1])], data[2][1])
    assert torch.equal(method.evaluation_data(context(data, 2))[1], labels)
    state = method.state_dict()
    fresh = make_method("co2l", buffer_size=12)
    fresh.load_state_dict(state)
    assert fresh.memory.buffer.class_counts() == method.memory.buffer.class_counts()


def test_reservoir_replay_batch_joins_the_stream():
    method, data = make_method("co2l", buffer_size=16, buffer_sampling="reservoir", replay_batch_size=4), tiny_tasks()
    method.begin_task(context(data, 0))
    x, y = data[0][0][:8].float() / 255, data[0][1][:8]
    assert method.memory.join(x, y)[0].shape[0] == 8 and len(method.memory.buffer) == 8
    x2, y2 = method.memory.join(x, y)
    assert x2.shape[0] == 12 and len(method.memory.buffer) == 16
    assert torch.allclose(x2[8:] * 255, (x2[8:] * 255).round())  # replayed rows are the stored uint8 images


# ------------------------------------------------------------------------------------------------ fnc2
@pytest.mark.parametrize("distillation", ["hsd", "ird", "prd", "none"])
@pytest.mark.parametrize("buffer_size", [0, 8])
@pytest.mark.parametrize("predictor", [None, 12])
def test_fnc2_step_is_fnc2_plus_hsd(distillation, buffer_size, predictor):
    method = make_method(
        "fnc2",
        buffer_size=buffer_size,
        distillation=distillation,
        gamma=2,
        hsd_weight=0.8,
        temperature=0.4,
        base_temperature=0.1,
        distill_predictor_hidden=predictor,
    )
    data = tiny_tasks()
    ctx, past = enter_task(method, data, 1)
    x, y = batch(method, ctx)
    torch.manual_seed(7)
    out = method.training_step(x, y, step_ctx(1, step=7, total=10, epochs=5))
    views, z = views_and_embed(method, x, 7)
    y2 = y.repeat(2)
    etf = simplex_etf(K, 8, 0)
    # the current task's classes anchor, the old prototypes are negatives
    expected = fnc2(z, y2, etf, TASKS[1], [0, 1], 0.4, 0.1, 2)
    with torch.no_grad():
        z_past = F.normalize(past(views), dim=1)
    if predictor is not None and distillation != "none":
        z = F.normalize(method.distill_predictor(z), dim=1)
    seen = etf[[0, 1, 2, 3]]  # the prototypes of every seen class, the current task's included
    if distillation == "hsd":
        alpha = 1 - (0.8 - 0.3)  # step 7 of 10 over 5 epochs is epoch 4 ≥ 0.8 · 5: α is at its floor (marks 0.3/0.8)
        expected = expected + 0.8 * (alpha * ird(z, z_past, 0.2, 0.01) + (1 - alpha) * prd(z, z_past, seen, 0.2, 0.1))
        assert float(out.terms["hsd_alpha"]) == pytest.approx(alpha)
    elif distillation == "ird":
        expected = expected + 0.8 * ird(z, z_past, 0.2, 0.01)
    elif distillation == "prd":
        expected = expected + 0.8 * prd(z, z_past, seen, 0.2, 0.1)
    torch.testing.assert_close(out.loss, expected)
    assert (method.snapshot("past") is None) == (distillation == "none")


def test_fnc2_past_model_keeps_train_mode_batch_norm_as_the_authors_code():
    method = make_method("fnc2", projection_batch_norm=True)
    data = tiny_tasks()
    enter_task(method, data, 1)
    past = method.snapshot("past")
    assert past.training and any(isinstance(m, nn.BatchNorm1d) and m.training for m in past.modules())
    assert not any(p.requires_grad for p in past.parameters())
    eval_past = make_method("fnc2", projection_batch_norm=True, past_model_bn="eval")
    enter_task(eval_past, data, 1)
    assert not eval_past.snapshot("past").training


def test_fnc2_prototypes_fixed_buffer_and_memory_free():
    method, data = make_method("fnc2"), tiny_tasks()
    assert "prototypes" in dict(method.named_buffers())
    assert not any(p is method.prototypes for p in method.parameters())
    torch.testing.assert_close(method.prototypes, simplex_etf(K, 8, 0))
    assert method.memory.buffer is None and "buffer" not in method.tracked_state()
    for t in range(3):
        ctx = context(data, t)
        method.begin_task(ctx)
        images, labels = method.training_data(ctx)
        assert images is data[t][0] and labels is data[t][1]
        assert method.evaluation_data(ctx)[1] is data[t][1]
    with pytest.raises(ConfigError, match="dim >= 5"):
        from protosphere.runs.runner import build_method

        config = validate_config(
            {
                "data": {"dataset": "digits"},
                "model": {"backbone": "mlp"},
                "method": {"name": "fnc2", "projection_dim": 4},
            }
        )
        build_method(config, types.SimpleNamespace(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), num_classes=6))


@pytest.mark.parametrize("schedule", ["official", "linear", "cosine"])
def test_fnc2_alpha_schedule_over_the_task(schedule):
    method, data = make_method("fnc2", hsd_schedule=schedule), tiny_tasks()
    ctx, _ = enter_task(method, data, 1)
    x, y = data[1][0][:6].float() / 255, data[1][1][:6]
    epochs, per_epoch = 10, 2
    total = epochs * per_epoch
    alphas = [float(method.training_step(x, y, step_ctx(1, s, total, epochs)).terms["hsd_alpha"]) for s in range(total)]
    assert alphas == pytest.approx([hsd_alpha(s, total, schedule, epochs=epochs) for s in range(total)])
    assert alphas[0] == 1.0 and all(a >= b for a, b in zip(alphas, alphas[1:]))
    if schedule == "official":  # 1 up to epoch 3 (= 0.3 · 10), then −0.1 per epoch, 0.5 from epoch 8 (= 0.8 · 10)
        assert alphas[::per_epoch] == pytest.approx([1, 1, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5])
    else:
        assert alphas[-1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("buffer_size", [0, 8])
def test_fnc2_without_old_prototypes_as_negatives(monkeypatch, buffer_size):
    import protosphere.methods.fnc2 as module

    calls = []
    real = module.fnc2
    monkeypatch.setattr(module, "fnc2", lambda *a, **k: calls.append((a[3], a[4])) or real(*a, **k))
    losses = {}
    for flag in (True, False):
        method = make_method("fnc2", buffer_size=buffer_size, old_prototypes_as_negatives=flag, distillation="none")
        ctx, _ = enter_task(method, tiny_tasks(), 2)
        x, y = batch(method, ctx)
        torch.manual_seed(0)
        losses[flag] = method.training_step(x, y, step_ctx(2)).loss
    assert [list(c) for c, _ in calls] == [[4, 5], [4, 5]]
    assert [list(p) for _, p in calls] == [[0, 1, 2, 3], []]
    assert not torch.allclose(losses[True], losses[False])


def test_fnc2_diagnostics_alignment_and_old_class_drift():
    method, data = make_method("fnc2"), tiny_tasks()
    method.begin_task(context(data, 0))
    first = method.diagnostics(context(data, 0))
    assert first["classes"] == [0, 1] and "old_mean_drift" not in first
    with torch.no_grad():
        z = F.normalize(method.projector(method.backbone(data[0][0][data[0][1] == 1].float() / 255)), dim=1)
    expected = F.cosine_similarity(z.mean(0), simplex_etf(K, 8, 0)[1], dim=0)
    assert first["prototype_alignment_per_class"][1] == pytest.approx(float(expected), abs=1e-5)
    method.begin_task(context(data, 1))
    unchanged = method.diagnostics(context(data, 1))
    assert unchanged["old_classes"] == [0, 1] and unchanged["old_mean_drift"] == pytest.approx(0.0, abs=1e-6)
    perturb(method, seed=3)
    moved = method.diagnostics(context(data, 1))
    assert moved["old_mean_drift"] > 1e-4 and len(moved["prototype_alignment_per_class"]) == 4


# ------------------------------------------------------------------------------------------------ nct
@pytest.mark.parametrize("buffer_size", [0, 8])
@pytest.mark.parametrize("class_balanced", [False, True])
def test_nct_step_is_dr_plus_dr_distillation(buffer_size, class_balanced):
    method = make_method("nct", buffer_size=buffer_size, class_balanced=class_balanced)
    ctx, past = enter_task(method, tiny_tasks(), 1)
    x, y = batch(method, ctx, n=10)
    if class_balanced:
        y = y.clone()
        y[:7] = y[0]  # an imbalanced batch (7 : 3 or 7 : 1 : 2)
    torch.manual_seed(2)
    out = method.training_step(x, y, step_ctx(1))
    torch.manual_seed(2)
    view = noisy(x)
    z = F.normalize(method.projector(method.backbone(view)), dim=1)
    etf = simplex_etf(K, 8, 0)
    weights = inverse_frequency_weights(y, K) if class_balanced else None
    if class_balanced:
        counts = torch.bincount(y, minlength=K).float()
        a = 1 / counts[y]
        manual = 0.5 * (a / a.sum() * ((z * etf[y]).sum(1) - 1) ** 2).sum()
        torch.testing.assert_close(dr_loss(z, y, etf, weights), manual)
        assert not torch.allclose(manual, dr_loss(z, y, etf))
    with torch.no_grad():
        z_past = F.normalize(past(view), dim=1)
    rows = torch.isin(y, torch.tensor([0, 1])) if buffer_size else torch.ones_like(y, dtype=torch.bool)
    assert 0 < rows.sum() <= len(y)
    distill = dr_loss(z[rows], torch.arange(int(rows.sum())), z_past[rows])  # the t−1 outputs as targets
    torch.testing.assert_close(out.loss, 10 * dr_loss(z, y, etf, weights) + 50 * distill)
    assert set(out.terms) == {"dr", "distill"}


def test_nct_ce_head_and_two_views():
    method = make_method("nct", head_loss="ce", head_weight=1.0, ce_temperature=0.2, views=2, distill_weight=0)
    method.begin_task(context(tiny_tasks(), 0))
    x, y = tiny_tasks()[0][0][:6].float() / 255, tiny_tasks()[0][1][:6]
    torch.manual_seed(4)
    out = method.training_step(x, y, step_ctx(0))
    _, z = views_and_embed(method, x, 4)
    torch.testing.assert_close(out.loss, F.cross_entropy(z @ simplex_etf(K, 8, 0).T / 0.2, y.repeat(2)))


def test_nct_learnable_classifier_is_a_trained_cosine_classifier_with_the_same_distillation():
    method = make_method("nct", classifier="learnable", head_loss="ce", head_weight=1.0, ce_temperature=0.2)
    assert isinstance(method.prototypes, nn.Parameter)
    assert any(p is method.prototypes for p in method.parameters())  # trained by the method's optimizer
    assert not torch.allclose(F.normalize(method.prototypes.detach(), dim=1), simplex_etf(K, 8, 0))
    ctx, past = enter_task(method, tiny_tasks(), 1)
    with torch.no_grad():
        method.prototypes.mul_(torch.linspace(0.5, 3, K)[:, None])  # row norms must not change the logits
    x, y = batch(method, ctx, n=10)
    torch.manual_seed(2)
    out = method.training_step(x, y, step_ctx(1))
    torch.manual_seed(2)
    view = noisy(x)
    z = F.normalize(method.projector(method.backbone(view)), dim=1)
    with torch.no_grad():
        z_past = F.normalize(past(view), dim=1)
    unit = F.normalize(method.prototypes, dim=1)
    expected = F.cross_entropy(z @ unit.T / 0.2, y) + 50 * 0.5 * ((z * z_past).sum(1) - 1).square().mean()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert method.prototypes.grad is not None and method.prototypes.grad.abs().sum() > 0


def test_nct_learnable_classifier_needs_the_ce_head():
    with pytest.raises(Exception, match="head_loss=ce"):
        make_method("nct", classifier="learnable")


def mixture(moe, h, n):
    """The first n experts of ``moe`` mixed by a softmax over their gate rows, written out."""
    gate = torch.softmax(h @ moe.gate.weight[:n].T + moe.gate.bias[:n], dim=1)
    return sum(gate[:, e : e + 1] * moe.experts[e](h) for e in range(n))


def test_nct_mixture_of_experts_one_expert_per_task():
    method, data = make_method("nct", mixture_of_experts=True, distill_weight=2.0), tiny_tasks()
    moe = method.projector
    assert method.config.num_experts == 3 and moe.num_experts == 3  # one per task of the scenario, from the start
    assert method.has_unused_parameters(method.config) and not method.has_unused_parameters(make_method("nct").config)
    params = [id(p) for p in method.parameters()]
    active, starts = [], []
    for t in range(3):
        before = copy.deepcopy(moe), copy.deepcopy(method.backbone)
        method.begin_task(ctx := context(data, t))
        active.append(moe.active)
        starts.append(copy.deepcopy(moe))
        assert [id(p) for p in method.parameters()] == params  # a fixed parameter set (what DDP registered at setup)
        # "training" of task t: two SGD steps with momentum and weight decay, as the engine runs them
        optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9, weight_decay=0.01)
        for s in range(2):
            x, y = method.training_data(ctx)
            optimizer.zero_grad(set_to_none=True)
            out = method.training_step(x[s::4].float() / 255, y[s::4], step_ctx(t, s))
            out.loss.backward()
            for e in range(3):  # inactive experts are not evaluated: no gradient at all
                assert all((p.grad is None) == (e > t) for p in moe.experts[e].parameters()), (t, e)
            assert moe.gate.weight.grad[t + 1 :].abs().sum() == 0 and moe.gate.bias.grad[t + 1 :].abs().sum() == 0
            # one active expert: its softmax weight is 1 whatever its logit; from task 1 on the gate learns
            assert (moe.gate.weight.grad[: t + 1].abs().sum() > 0) == (t > 0)
            optimizer.step()
        for e in range(t + 1, 3):  # untouched by the optimiser: experts as initialised, gate rows still zero
            for p, q in zip(moe.experts[e].parameters(), starts[0].experts[e].parameters()):
                assert torch.equal(p, q)
            assert moe.gate.weight[e].abs().sum() == 0 and moe.gate.bias[e] == 0
    assert active == [1, 2, 3] and method.class_task.tolist() == [0, 0, 1, 1, 2, 2]
    assert not torch.equal(moe.experts[2].net[0].weight, starts[0].experts[2].net[0].weight)  # trained in task 2
    x, y = data[0][0][:3].float() / 255, data[0][1][:3]
    x = torch.cat([x, data[2][0][:3].float() / 255])
    y = torch.cat([y, data[2][1][:3]])
    torch.manual_seed(1)
    out = method.training_step(x, y, step_ctx(2))
    torch.manual_seed(1)
    view = noisy(x)
    h = method.backbone(view)
    z = F.normalize(mixture(moe, h, 3), dim=1)
    own = F.normalize(torch.stack([moe.experts[e](h[i]) for i, e in enumerate([0, 0, 0, 2, 2, 2])]), dim=1)
    etf = simplex_etf(K, 8, 0)
    with torch.no_grad():  # the t−1 model (the end of task 1), mixing its first 2 experts
        old_moe, old_backbone = before
        old_h = old_backbone(view)
        z_past = F.normalize(mixture(old_moe, old_h, 2), dim=1)
        assert not torch.allclose(z_past, F.normalize(mixture(old_moe, old_h, 3), dim=1))
    expected = 10 * dr_loss(z, y, etf) + 10 * dr_loss(own, y, etf) + 2.0 * dr_loss(z, torch.arange(6), z_past)
    torch.testing.assert_close(out.loss, expected)
    assert set(out.terms) == {"dr", "expert_dr", "distill"}
    fresh = make_method("nct", mixture_of_experts=True)
    assert fresh.projector.active == 1
    fresh.load_state_dict(method.state_dict())
    assert fresh.projector.active == 3 and fresh.snapshot("past")[1].active == 2  # a checkpoint keeps both counts
    torch.testing.assert_close(fresh.projector(h.detach()), mixture(moe, h.detach(), 3))
    two = make_method("nct", mixture_of_experts=True, num_experts=2)
    two.begin_task(context(data, 1))
    with pytest.raises(ConfigError, match="num_experts is 2"):
        two.begin_task(context(data, 2))
    cls = method_class("nct")
    with pytest.raises(ValueError, match="needs num_experts"):  # built without the runner's resolve_config
        cls(
            cls.config_class(mixture_of_experts=True),
            build_backbone("mlp", in_channels=1, image_size=SIZE),
            K,
            Transforms(train=noisy, eval=lambda x: x),
        )


def test_nct_runner_gives_one_expert_per_task():
    from protosphere.runs.runner import build_method

    config = validate_config(
        {
            "data": {"dataset": "digits"},
            "model": {"backbone": "mlp"},
            "method": {"name": "nct", "projection_dim": 8, "mixture_of_experts": True},
        }
    )
    scenario = types.SimpleNamespace(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), num_classes=6, num_tasks=4)
    method = build_method(config, scenario)
    assert method.config.num_experts == 4 and method.projector.num_experts == 4
    assert config.method.num_experts is None  # the run's config (config.yaml, fingerprint) is left as written
    config.method.num_experts = 6
    assert build_method(config, scenario).projector.num_experts == 6


# ------------------------------------------------------------------------------------------------ configs, engine
YAMLS = sorted(CONFIGS.rglob("*.yaml"))
CLASSES = {"cifar100": 100, "tiny_imagenet": 200, "imagenet100": 100}
SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "tiny_imagenet": (3, 64, 64), "digits": (1, 8, 8)}


def test_method_configs_exist():
    names = {p.relative_to(CONFIGS).as_posix() for p in YAMLS}
    for m in ("co2l", "co2l-200", "co2l-500", "fnc2", "fnc2-200", "fnc2-500", "nct", "nct-200"):
        assert f"seq-fmnist/{m}.yaml" in names
    for m in ("co2l", "fnc2"):
        for d in ("seq-cifar10", "seq-cifar100", "seq-tinyimagenet"):
            for b in (0, 200, 500):
                assert f"paper/{m}-{d}-{b}.yaml" in names
    assert "paper/nct-cifar100-50+5x10.yaml" in names


@pytest.mark.parametrize("path", YAMLS, ids=[p.relative_to(CONFIGS).as_posix() for p in YAMLS])
def test_every_config_loads_and_builds(path):
    from protosphere.runs.runner import build_method

    config = load_config(path)
    assert path.read_text().lstrip().startswith("#")  # each file says where it comes from
    data = config.data.dataset
    shape = (3, config.data.image_size, config.data.image_size) if data == "imagenet100" else SHAPES.get(data)
    scenario = types.SimpleNamespace(image_shape=shape or (1, 28, 28), num_classes=CLASSES.get(data, 10))
    scenario.mean = scenario.std = (0.5,) * scenario.image_shape[0]
    method = build_method(config, scenario)
    assert method.config.name == config.method.name


def test_engine_smoke_run_two_tasks(tmp_path):
    from protosphere.runs.runner import run

    for name, extra in (("fnc2", {"buffer_size": 20}), ("nct", {}), ("co2l", {"buffer_size": 20})):
        config = validate_config(
            {
                "name": name,
                "output_dir": str(tmp_path),
                "data": {"dataset": "digits", "train_fraction": 0.5},
                "scenario": {"num_tasks": 2},
                "model": {"backbone": "mlp", "mlp_hidden": [32]},
                "eval": {"random_init_baseline": False},
                "method": {
                    "name": name,
                    "projection_dim": 16,
                    "probe_epochs": 2,
                    "classifiers": ["nearest_prototype", "ncm", "linear_probe"]
                    if name != "co2l"
                    else ["linear_probe", "ncm"],
                    **extra,
                },
                "train": {"epochs": 1, "batch_size": 32, "augmentation": "none"},
                "fabric": {"accelerator": "cpu", "threads": 1},
            }
        )
        record, run_dir = run(config, show_progress=False)
        results = record.to_data()
        expected = {"nearest_prototype", "ncm", "linear_probe"} if name != "co2l" else {"ncm", "linear_probe"}
        assert set(results["accuracy"]) == expected
        for classifier in expected:
            matrix = results["accuracy"][classifier]["class_il"]
            assert len(matrix) == 2 and all(0 <= a <= 100 for row in matrix for a in row)
        assert results["accuracy"]["ncm"]["class_il"][1][1] > 20  # better than chance on the task just learned
        assert (run_dir / "results.json").exists()
        assert set(results["classifier_data"]) == expected
        assert "training buffer (20 samples)" in results["classifier_data"]["linear_probe"] or name == "nct"
        if name == "nct":  # memory-free: the probe's 200 classifier-only samples are named
            assert "200 classifier-only samples" in results["classifier_data"]["linear_probe"]
        diagnostics = results["diagnostics"]
        assert len(diagnostics) == 2 and "old_mean_drift" not in diagnostics[0]
        assert diagnostics[1]["old_classes"] == results["scenario"]["tasks"][0]
        assert 0 <= diagnostics[1]["old_mean_drift"] <= 2
        if name != "co2l":  # prototype methods report alignment of class means to their prototypes
            assert -1 <= diagnostics[1]["prototype_alignment"] <= 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_probe_seen_uses_every_seen_task_and_the_task_probe_does_not(seed):
    data = tiny_tasks(per_class=12)
    g = torch.Generator().manual_seed(seed)  # task 0's classes made separable: dark images vs bright ones
    dark = torch.randint(0, 64, (12, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    data[0] = (torch.cat([dark, dark + 192]), data[0][1])
    torch.manual_seed(seed)  # the network's initialisation
    method = make_method("fnc2", classifiers=["linear_probe", "linear_probe_seen"], probe_epochs=30, probe_lr=0.5)
    method.configure_evaluation(types.SimpleNamespace(probe_buffer_size=0))  # strictly the last task
    ctx, _ = enter_task(method, data, 1)
    method.eval()
    method.prepare_evaluation(ctx)
    old_images, old_labels = data[0]
    x = old_images.float().div(255)
    classifiers = method.classifiers()
    seen_pred = classifiers["linear_probe_seen"](x).argmax(1)
    task_pred = classifiers["linear_probe"](x).argmax(1)
    # memory-free without classifier-only samples: the task probe only ever saw task 1's classes
    assert not torch.isin(task_pred, torch.tensor(TASKS[0])).any()
    # the seen-data probe was fitted on task 0's rows too
    assert (seen_pred == old_labels).float().mean() > 0.9


# ------------------------------------------------------------------------------------------------ probe buffer
@pytest.mark.parametrize("name", ["co2l", "fnc2", "nct"])
@pytest.mark.parametrize("sampling", ["co2l", "reservoir"])
def test_probe_buffer_is_filled_as_a_training_buffer_of_that_size(name, sampling):
    data = tiny_tasks(per_class=10)
    probe = make_method(name, buffer_sampling=sampling)
    probe.configure_evaluation(types.SimpleNamespace(probe_buffer_size=8))
    trained = make_method(name, buffer_size=8, buffer_sampling=sampling)
    assert probe.memory.buffer is None and probe.memory.probe_buffer.capacity == 8
    assert trained.memory.probe_buffer is None
    for t in range(3):
        ctx = context(data, t)
        for method in (probe, trained):
            method.begin_task(ctx)
            if sampling == "reservoir":
                for start in range(0, 20, 5):
                    rows = slice(start, start + 5)
                    method.memory.join(ctx.train_images[rows].float().div(255), ctx.train_labels[rows])
    stored, expected = probe.memory.probe_buffer.all(), trained.memory.buffer.all()
    assert torch.equal(stored["labels"], expected["labels"]) and torch.equal(stored["examples"], expected["examples"])
    assert len(stored["labels"]) == 8 and set(stored["labels"].tolist()) <= {0, 1, 2, 3, 4, 5}


def test_probe_buffer_never_enters_representation_training():
    data = tiny_tasks()
    losses = []
    for size in (0, 200):
        torch.manual_seed(0)
        method = make_method("fnc2")
        method.configure_evaluation(types.SimpleNamespace(probe_buffer_size=size))
        ctx, _ = enter_task(method, data, 2)
        images, labels = method.training_data(ctx)
        assert images is data[2][0] and labels is data[2][1]
        assert method.evaluation_data(ctx)[1] is data[2][1]  # NCM sees no stored data either
        x, y = images[:8].float().div(255), labels[:8]
        assert torch.equal(method.memory.join(x, y)[1], y)
        torch.manual_seed(1)
        losses.append(method.training_step(x, y, step_ctx(2)).loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    assert method.memory.probe_buffer is not None and len(method.memory.probe_buffer) > 0


def test_memory_free_probe_sees_the_classifier_only_samples():
    data = tiny_tasks(per_class=12)
    g = torch.Generator().manual_seed(0)  # task 0's classes made separable: dark images vs bright ones
    dark = torch.randint(0, 64, (12, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    data[0] = (torch.cat([dark, dark + 192]), data[0][1])
    torch.manual_seed(0)
    method = make_method("fnc2", classifiers=["linear_probe", "ncm"], probe_epochs=30, probe_lr=0.5)
    method.configure_evaluation(types.SimpleNamespace(probe_buffer_size=None))  # the default: 200
    assert method.memory.probe_buffer.capacity == 200
    ctx, _ = enter_task(method, data, 1)
    assert sorted(method.memory.probe_buffer.class_counts()) == [0, 1]  # task 0's rows, stored at the start of task 1
    method.eval()
    method.prepare_evaluation(ctx)
    old_images, old_labels = data[0]
    task_pred = method.classifiers()["linear_probe"](old_images.float().div(255)).argmax(1)
    assert (task_pred == old_labels).float().mean() > 0.9
    assert "up to 200 classifier-only samples" in method.classifier_data()["linear_probe"]
    assert "classifier-only" not in method.classifier_data()["ncm"]


def test_probe_buffer_size_with_a_training_buffer():
    from protosphere.runs.runner import build_method

    method = make_method("fnc2", buffer_size=50)
    method.configure_evaluation(types.SimpleNamespace(probe_buffer_size=None))
    method.configure_evaluation(types.SimpleNamespace(probe_buffer_size=50))
    assert method.memory.probe_buffer is None
    assert "training buffer (50 samples)" in method.classifier_data()["linear_probe"]
    scenario = types.SimpleNamespace(image_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), num_classes=6)

    def config(probe, buffer=200):
        return validate_config(
            {
                "data": {"dataset": "digits"},
                "model": {"backbone": "mlp"},
                "eval": {"probe_buffer_size": probe},
                "method": {"name": "fnc2", "projection_dim": 8, "buffer_size": buffer},
            }
        )

    with pytest.raises(ConfigError, match="memory-free"):
        build_method(config(100), scenario)
    # the global sizes are compared: 2 processes keep the Co2L memory whole on each rank (filled from the whole
    # previous task alike), a reservoir memory as halves
    assert build_method(config(200), scenario, world_size=2).memory.buffer.capacity == 200
    reservoir = config(None).model_copy(deep=True)
    reservoir.method.buffer_sampling = "reservoir"
    assert build_method(reservoir, scenario, world_size=2).memory.buffer.capacity == 100
    assert build_method(config(0, buffer=0), scenario).memory.probe_buffer is None
    assert build_method(config(None, buffer=0), scenario).memory.probe_buffer.capacity == 200
