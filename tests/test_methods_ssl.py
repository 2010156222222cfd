"""Self-supervised continual methods: simclr, moco (v2+), cassle, sycon (PNR).

Each training step is checked against the loss written out by hand from the functional losses on the same views
(deterministic transforms: view 1 = the images, view 2 = the images mirrored), plus the momentum schedule, the queues
(FIFO order, wrap, clamp, past-model queue), the frozen past model, checkpoints and a 2-task run on digits.
"""

import copy
import io
import logging

import pytest
import torch
import torch.nn.functional as F

from protosphere.config import validate_config
from protosphere.losses import cassle_distill, moco_infonce, nt_xent, pnr_moco, pnr_simclr
from protosphere.methods import method_class, method_config_class
from protosphere.methods.base import StepContext, TaskContext, Transforms
from protosphere.methods.moco import momentum_at
from protosphere.models import build_backbone

B, SIDE, CLASSES = 6, 4, 4


class MirrorEveryOther:
    """Odd calls return the batch, even calls its mirror image: views = [x, x.flip(-1)]."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return x if self.calls % 2 else x.flip(-1)


def make(name, seed=0, **settings):
    torch.manual_seed(seed)
    options = {"projection_dim": 8, "projection_hidden": 16, **settings}
    if name in ("moco", "cassle", "sycon"):
        options.setdefault("queue_size", 12)
    if name in ("cassle", "sycon"):
        options.setdefault("predictor_hidden", 16)
    config = method_config_class(name).model_validate({"name": name, **options})
    backbone = build_backbone("mlp", in_channels=1, image_size=SIDE, hidden=(10,))
    return method_class(name)(config, backbone, CLASSES, Transforms(MirrorEveryOther(), lambda x: x))


def task_data(index, n):
    g = torch.Generator().manual_seed(100 + index)
    return (
        torch.randint(0, 256, (n, 1, SIDE, SIDE), generator=g, dtype=torch.uint8),
        torch.randint(0, CLASSES, (n,), generator=g),
    )


def task(index, n=24):
    images, labels = task_data(index, n)
    return TaskContext(
        index=index,
        classes=tuple(range(CLASSES)),
        seen_classes=list(range(CLASSES)),
        num_tasks=3,
        train_images=images,
        train_labels=labels,
        previous=[task_data(j, n) for j in range(index)],
    )


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, SIDE, SIDE, generator=g), torch.randint(0, CLASSES, (B,), generator=g)


def ctx(step=0, steps=10, task_index=0):
    return StepContext(task=task_index, epoch=0, step=step, steps_in_task=steps, global_step=step)


def project(method, x, backbone=None, projector=None):
    return (projector or method.projector)((backbone or method.backbone)(x))


def norm(x):
    return F.normalize(x, dim=1)


def ema_keys(method, x1, x2, m):
    """The momentum encoder after this step's EMA update (on copies) and its keys of both views."""
    mb, mp = copy.deepcopy(method.momentum_encoder.backbone), copy.deepcopy(method.momentum_encoder.projector)
    online = [*method.backbone.parameters(), *method.projector.parameters()]
    with torch.no_grad():
        for t, o in zip([*mb.parameters(), *mp.parameters()], online):
            t.copy_(m * t + (1 - m) * o)
        return norm(project(method, x1, mb, mp)), norm(project(method, x2, mb, mp)), mb


def advance(method, steps, first=0, task_index=0, total=10):
    for s in range(first, first + steps):
        x, y = batch(seed=1000 + s)
        method.training_step(x, y, ctx(s, total, task_index)).loss.backward()


def start(method, index):
    method.begin_task(task(index))


# --- losses equal the written composition ------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["local", "global"])
def test_simclr_step_is_nt_xent_of_the_two_views(scope):
    method = make("simclr", contrast_scope=scope, temperature=0.3)
    method.install_collectives(gather=lambda t: torch.cat([t, -t.flip(0)]))  # a stand-in for rows from other processes
    start(method, 0)
    x, y = batch()
    out = method.training_step(x, y, ctx())
    z1, z2 = norm(project(method, x)), norm(project(method, x.flip(-1)))
    if scope == "global":
        z1, z2 = method.gather(z1), method.gather(z2)
    torch.testing.assert_close(out.loss, nt_xent(z1, z2, 0.3))


def test_moco_step_is_symmetric_infonce_then_enqueue():
    method = make("moco", temperature=0.3)
    start(method, 0)
    advance(method, 2)  # momentum encoder now differs from the online one
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.01 * torch.randn_like(p))  # as after an optimiser step
    queue_before, ptr_before = method.queue.keys.clone(), int(method.queue.ptr)
    x, y = batch(7)
    m = momentum_at(2, 10)
    k1, k2, mb = ema_keys(method, x, x.flip(-1), m)
    out = method.training_step(x, y, ctx(2))
    q1, q2 = norm(project(method, x)), norm(project(method, x.flip(-1)))
    expected = (moco_infonce(q1, k2, queue_before[1], 0.3) + moco_infonce(q2, k1, queue_before[0], 0.3)) / 2
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(method.momentum_encoder.backbone.state_dict(), mb.state_dict())
    rows = [(ptr_before + i) % 12 for i in range(B)]
    torch.testing.assert_close(method.queue.keys[0, rows], k1)
    torch.testing.assert_close(method.queue.keys[1, rows], k2)
    assert int(method.queue.ptr) == (ptr_before + B) % 12
    out.loss.backward()  # the queue written after the loss must not break backward


@pytest.mark.parametrize("base", ["simclr", "moco"])
def test_cassle_step_is_base_plus_distillation_from_task_1(base):
    method = make("cassle", base=base, distill_weight=0.7, distill_temperature=0.4, temperature=0.3)
    start(method, 0)
    advance(method, 1)
    start(method, 1)
    advance(method, 1, task_index=1)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the current model moved away from the past one
    x, y = batch(3)
    x2 = x.flip(-1)
    if base == "moco":
        queue = method.queue.keys.clone()
        k1, k2, _ = ema_keys(method, x, x2, momentum_at(1, 10))
    out = method.training_step(x, y, ctx(1, task_index=1))
    z1, z2 = project(method, x), project(method, x2)
    q1, q2 = norm(z1), norm(z2)
    past = method.snapshot("past")
    f = torch.cat([norm(past(x)), norm(past(x2))])
    if base == "moco":
        base_loss = (moco_infonce(q1, k2, queue[1], 0.3) + moco_infonce(q2, k1, queue[0], 0.3)) / 2
        p = torch.cat([norm(method.predictor(q1)), norm(method.predictor(q2))])
    else:
        base_loss = nt_xent(q1, q2, 0.3)
        p = torch.cat([norm(method.predictor(z1)), norm(method.predictor(z2))])
    torch.testing.assert_close(out.loss, base_loss + 0.7 * cassle_distill(p, f, 0.4))
    assert set(out.terms) == {base, "distill"}


def test_sycon_moco_step_from_task_1_is_pnr_on_both_views():
    method = make("sycon", temperature=0.3, distill_temperature=0.4)
    start(method, 0)
    advance(method, 2)
    start(method, 1)
    advance(method, 1, task_index=1)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    queue, past_queue = method.queue.keys.clone(), method.past_queue.keys.clone()
    x, y = batch(5)
    x2 = x.flip(-1)
    k1, k2, _ = ema_keys(method, x, x2, momentum_at(1, 10))
    out = method.training_step(x, y, ctx(1, task_index=1))
    q1, q2 = norm(project(method, x)), norm(project(method, x2))
    p1, p2 = norm(method.predictor(q1)), norm(method.predictor(q2))
    past = method.snapshot("past")
    f1, f2 = norm(past(x)), norm(past(x2))
    expected = 0.5 * (
        pnr_moco(q1, k2, p1, f1, torch.cat([queue[1], past_queue[1]]), 0.3, 0.4)
        + pnr_moco(q2, k1, p2, f2, torch.cat([queue[0], past_queue[0]]), 0.3, 0.4)
    )
    torch.testing.assert_close(out.loss, expected)
    # and not the official argument order read literally (the past model of the other view as f)
    swapped = 0.5 * (
        pnr_moco(q1, k2, p1, f2, torch.cat([queue[1], past_queue[1]]), 0.3, 0.4)
        + pnr_moco(q2, k1, p2, f1, torch.cat([queue[0], past_queue[0]]), 0.3, 0.4)
    )
    assert not torch.allclose(out.loss, swapped)
    assert set(out.terms) == {"pnr"}


def test_sycon_simclr_base_is_nt_xent_then_pnr_simclr():
    method = make("sycon", base="simclr", temperature=0.3, distill_temperature=0.4)
    assert not hasattr(method, "queue") and not hasattr(method, "momentum_encoder")
    start(method, 0)
    x, y = batch(2)
    x2 = x.flip(-1)
    out = method.training_step(x, y, ctx())
    torch.testing.assert_close(out.loss, nt_xent(norm(project(method, x)), norm(project(method, x2)), 0.3))
    out.loss.backward()
    start(method, 1)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = method.training_step(x, y, ctx(0, task_index=1))
    z1, z2 = project(method, x), project(method, x2)
    past = method.snapshot("past")
    expected = pnr_simclr(
        norm(z1), norm(z2), norm(method.predictor(z1)), norm(method.predictor(z2)), norm(past(x)), norm(past(x2)), 0.4
    )
    torch.testing.assert_close(out.loss, expected)


@pytest.fixture
def alignment_base():
    """A new self-supervised base, registered the way a new file would register it: q1·q2 alignment, no negatives."""
    from protosphere.methods.self_supervised import SSL_BASES, SelfSupervisedBase

    @SSL_BASES.register("toy_alignment")
    class Alignment(SelfSupervisedBase):
        term = "alignment"

        def loss(self, views, q, z, step):
            return 2 - 2 * (q[0] * q[1]).sum(1).mean()

    yield Alignment
    SSL_BASES.unregister("toy_alignment")


def test_cassle_wraps_a_new_base_unchanged(alignment_base):
    method = make("cassle", base="toy_alignment", distill_weight=0.7, distill_temperature=0.4)
    assert isinstance(method.base, alignment_base) and not hasattr(method, "queue")
    start(method, 0)
    x, y = batch(3)
    out = method.training_step(x, y, ctx())
    q1, q2 = norm(project(method, x)), norm(project(method, x.flip(-1)))
    torch.testing.assert_close(out.loss, 2 - 2 * (q1 * q2).sum(1).mean())
    start(method, 1)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = method.training_step(x, y, ctx(0, task_index=1))
    q1, q2 = norm(project(method, x)), norm(project(method, x.flip(-1)))
    past = method.snapshot("past")
    p = torch.cat([norm(method.predictor(q1)), norm(method.predictor(q2))])  # the default hand-over: q
    f = torch.cat([norm(past(x)), norm(past(x.flip(-1)))])
    torch.testing.assert_close(out.loss, 2 - 2 * (q1 * q2).sum(1).mean() + 0.7 * cassle_distill(p, f, 0.4))
    assert set(out.terms) == {"toy_alignment", "distill"}


def test_sycon_refuses_a_base_without_a_pseudo_negative_form(alignment_base):
    from protosphere.errors import ConfigError

    with pytest.raises(ConfigError, match="base `toy_alignment` has no pseudo-negative form"):
        make("sycon", base="toy_alignment")


def test_an_unknown_base_is_refused_with_the_closest_name():
    with pytest.raises(ValueError, match="unknown self-supervised base `mocco`; did you mean `moco`"):
        method_config_class("cassle").model_validate({"name": "cassle", "base": "mocco"})


def test_sycon_task_0_is_moco():
    moco, sycon = make("moco", seed=3), make("sycon", seed=3)
    for method in (moco, sycon):
        start(method, 0)
    for s in range(3):
        x, y = batch(20 + s)
        outs = [m.training_step(x, y, ctx(s)) for m in (moco, sycon)]
        torch.testing.assert_close(outs[0].loss, outs[1].loss)
        for out in outs:
            out.loss.backward()
        torch.testing.assert_close(
            [p.grad for p in moco.backbone.parameters()], [p.grad for p in sycon.backbone.parameters()]
        )
        torch.testing.assert_close(moco.queue.keys, sycon.queue.keys)
    assert sycon.predictor.net[0].weight.grad is None  # the predictor is idle in task 0


# --- momentum encoder and queues ---------------------------------------------------------------------------------


def test_momentum_schedule_is_cosine_from_099_to_0999_and_restarts_each_task():
    assert momentum_at(0, 100) == pytest.approx(0.99)
    assert momentum_at(50, 100) == pytest.approx(0.9945)
    assert momentum_at(100, 100) == pytest.approx(0.999)
    method = make("moco")
    start(method, 0)
    seen = []
    for s in (0, 5, 9):
        x, y = batch(s)
        method.training_step(x, y, ctx(s, 10))
        seen.append(method.momentum_encoder.momentum)
    start(method, 1)
    method.training_step(*batch(), ctx(0, 10, task_index=1))
    seen.append(method.momentum_encoder.momentum)
    assert seen == pytest.approx([0.99, momentum_at(5, 10), momentum_at(9, 10), 0.99])
    assert 0.9985 < momentum_at(9, 10) < 0.999


def test_momentum_encoder_starts_as_a_copy_and_follows_the_ema():
    method = make("moco")
    online = [*method.backbone.parameters(), *method.projector.parameters()]
    target = [*method.momentum_encoder.backbone.parameters(), *method.momentum_encoder.projector.parameters()]
    torch.testing.assert_close(online, target)
    assert all(not p.requires_grad for p in target)
    start(method, 0)
    with torch.no_grad():
        for p in online:
            p.add_(1.0)
    before = [t.clone() for t in target]
    method.training_step(*batch(), ctx(4, 10))
    m = momentum_at(4, 10)
    torch.testing.assert_close(target, [m * b + (1 - m) * o for b, o in zip(before, online)])


def test_queue_is_fifo_and_the_pointer_wraps():
    method = make("moco", queue_size=12)
    values = torch.arange(2 * 15 * 8, dtype=torch.float).reshape(2, 15, 8)
    for chunk in values.split(5, dim=1):  # 5 does not divide 12: the third write wraps around
        method.queue.enqueue(chunk)
    assert int(method.queue.ptr) == 15 % 12
    torch.testing.assert_close(method.queue.keys[:, :3], values[:, 12:15])  # oldest overwritten first
    torch.testing.assert_close(method.queue.keys[:, 3:12], values[:, 3:12])


def test_queue_starts_as_random_unit_vectors_and_is_a_buffer():
    method = make("moco", queue_size=12)
    assert method.queue.keys.shape == (2, 12, 8) and method.queue.ptr.dtype == torch.long
    torch.testing.assert_close(method.queue.keys.norm(dim=2), torch.ones(2, 12))
    assert "queue.keys" in dict(method.named_buffers()) and not any("queue" in n for n, _ in method.named_parameters())


def test_queue_larger_than_the_task_is_clamped_with_a_message(caplog):
    method = make("sycon", queue_size=64)
    angle = 0.05 * torch.arange(64.0)
    marked = torch.zeros(2, 64, 8)
    marked[..., 0], marked[..., 1] = angle.cos(), angle.sin()  # unit rows that tell their index
    method.queue.keys.copy_(marked)
    method.queue.ptr.fill_(5)  # most recent rows: 61, 62, 63, 0..4
    method.begin_task(task(0, n=27))  # 27 images, batch 6 → 24 usable
    with caplog.at_level(logging.WARNING):
        method.training_step(*batch(), ctx())
    assert "queue_size 64 exceeds the 27 training images" in caplog.text and "24" in caplog.text
    assert method.queue.keys.shape == method.past_queue.keys.shape == (2, 24, 8)
    kept = marked[:, [i % 64 for i in range(5 - 24, 5)]]
    torch.testing.assert_close(method.queue.keys[:, B:], kept[:, B:])  # first B rows: this step's keys
    assert int(method.queue.ptr) == B
    caplog.clear()
    method.begin_task(task(1, n=27))
    method.training_step(*batch(), ctx(0, task_index=1))
    assert "exceeds" not in caplog.text  # already small enough: no second message


def test_past_queue_starts_random_at_task_1_and_is_filled_with_past_projections():
    method = make("sycon", queue_size=12)
    start(method, 0)
    initial = method.past_queue.keys.clone()
    advance(method, 2)
    torch.testing.assert_close(method.past_queue.keys, initial)  # untouched in task 0
    start(method, 1)
    torch.testing.assert_close(method.past_queue.keys.norm(dim=2), torch.ones(2, 12))
    x, y = batch(9)
    method.training_step(x, y, ctx(0, task_index=1))
    past = method.snapshot("past")
    torch.testing.assert_close(method.past_queue.keys[0, :B], norm(past(x)))
    torch.testing.assert_close(method.past_queue.keys[1, :B], norm(past(x.flip(-1))))
    torch.testing.assert_close(method.past_queue.keys[:, B:], initial[:, B:])
    assert int(method.past_queue.ptr) == B


# --- past model, checkpoints, online classifier ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cassle", "sycon"])
def test_past_model_is_frozen_eval_copy_taken_at_task_start(name):
    method = make(name)
    start(method, 0)
    assert method.snapshot("past") is None
    advance(method, 2)
    start(method, 1)
    past = method.snapshot("past")
    torch.testing.assert_close(
        past.state_dict(),
        {
            **{f"0.{k}": v for k, v in method.backbone.state_dict().items()},
            **{f"1.{k}": v for k, v in method.projector.state_dict().items()},
        },
    )
    frozen = copy.deepcopy(past.state_dict())
    assert not past.training and all(not p.requires_grad for p in past.parameters())
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    for s in range(3):
        out = method.training_step(*batch(40 + s), ctx(s, task_index=1))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in past.parameters())
    torch.testing.assert_close(past.state_dict(), frozen)
    first, weight = next(iter(method.backbone.named_parameters()))
    assert not torch.allclose(weight, frozen[f"0.{first}"])  # the current model did move


@pytest.mark.parametrize("name", ["moco", "sycon"])
def test_state_dict_round_trip_keeps_queues_momentum_encoder_and_past_model(name):
    method = make(name, queue_size=64)
    method.begin_task(task(0, n=27))  # clamps the queues to 24 rows at the first step
    advance(method, 3)
    if name == "sycon":
        start(method, 1)
        advance(method, 2, task_index=1)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = make(name, seed=11, queue_size=64)
    fresh.load_state_dict(state)
    assert fresh.queue.keys.shape == (2, 24, 8)
    for key, value in method.state_dict().items():
        if key != "_extra_state":
            torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)
    torch.testing.assert_close(
        fresh.momentum_encoder.backbone.state_dict(), method.momentum_encoder.backbone.state_dict()
    )
    if name == "sycon":
        torch.testing.assert_close(fresh.snapshot("past").state_dict(), method.snapshot("past").state_dict())
        assert int(fresh.past_queue.ptr) == 2 * B
    x, y = batch(77)
    torch.testing.assert_close(
        fresh.training_step(x, y, ctx(2, task_index=1)).loss, method.training_step(x, y, ctx(2, task_index=1)).loss
    )


@pytest.mark.parametrize("name", ["simclr", "moco", "sycon"])
def test_online_classifier_leaves_encoder_gradients_unchanged(name):
    plain, online = make(name), make(name, online_classifier=True)
    online.load_state_dict(plain.state_dict(), strict=False)
    for method in (plain, online):
        start(method, 0)
        advance(method, 1)
        start(method, 1)
        method.zero_grad()
    x, y = batch(8)
    outs = [m.training_step(x, y, ctx(1, task_index=1)) for m in (plain, online)]
    for out in outs:
        out.loss.backward()
    for module in ("backbone", "projector"):
        torch.testing.assert_close(
            [p.grad for p in getattr(plain, module).parameters()],
            [p.grad for p in getattr(online, module).parameters()],
        )
    assert outs[1].loss > outs[0].loss and "online_ce" in outs[1].terms
    torch.testing.assert_close(outs[1].loss - outs[0].loss, outs[1].terms["online_ce"])
    assert online.online.weight.grad is not None


def test_labels_do_not_enter_the_ssl_loss():
    losses = []
    for seed in (0, 1):
        method = make("sycon", seed=5)
        start(method, 0)
        advance(method, 1)
        start(method, 1)
        x, _ = batch(4)
        labels = torch.randint(0, CLASSES, (B,), generator=torch.Generator().manual_seed(seed))
        losses.append(method.training_step(x, labels, ctx(1, task_index=1)).loss)
    torch.testing.assert_close(losses[0], losses[1])


def test_evaluation_data_covers_every_seen_task():
    method = make("simclr")
    t2 = task(2)
    images, labels = method.evaluation_data(t2)
    assert len(images) == 3 * 24 and torch.equal(images[-24:], t2.train_images)
    method.config.probe_data = "current"
    assert len(method.evaluation_data(t2)[0]) == 24


# --- end to end ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        {"name": "simclr"},
        {"name": "moco", "queue_size": 256},
        {"name": "cassle", "base": "moco", "queue_size": 256},
        {"name": "sycon", "queue_size": 256},
    ],
)
def test_two_task_run_on_digits_reports_linear_probe_and_knn(tmp_path, method):
    from protosphere.runs.runner import run

    config = validate_config(
        {
            "output_dir": str(tmp_path / "runs"),
            "name": f"{method['name']}-ssl",
            "data": {"dataset": "digits"},
            "scenario": {"num_tasks": 2},
            "model": {"backbone": "mlp", "mlp_hidden": [64]},
            "method": {
                **method,
                "projection_hidden": 64,
                "projection_dim": 32,
                "probe_epochs": 5,
                **({"predictor_hidden": 64} if method["name"] in ("cassle", "sycon") else {}),
            },
            "train": {"epochs": 1, "batch_size": 64, "augmentation": "contrastive", "flip": False},
            "optimizer": {"name": "lars", "lr": 0.3, "weight_decay": 1e-4},
            "eval": {"neural_collapse": False},
            "fabric": {"threads": 1},
        }
    )
    record, run_dir = run(config, show_progress=False)
    accuracy = record.accuracy
    assert list(accuracy) == ["linear_probe", "knn"]
    for classifier in ("linear_probe", "knn"):
        rows = accuracy[classifier]["class_il"]
        assert len(rows) == 2
        seen = rows[1]
        assert all(0 <= a <= 100 for a in seen) and sum(seen) / 2 > 25  # ten classes: chance is 10 %
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    if method["name"] != "simclr":
        assert "queue.keys" in state["method"]
        assert any(k.startswith("momentum_encoder.backbone.") for k in state["method"])
