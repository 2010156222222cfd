"""The method parts (protosphere.methods.parts) and the Method hooks the engine uses, each against a plain reference."""

import logging
import types

import pytest
import torch
from torch import nn

from protosphere.buffer import ReplayBuffer
from protosphere.geometry import orthonormal_prototypes, simplex_etf
from protosphere.methods import method_class, method_config_class
from protosphere.methods.base import Method, StepContext, Transforms
from protosphere.methods.parts import (
    ClassMeanDrift,
    FixedPrototypes,
    KeyQueue,
    MomentumEncoder,
    PastModel,
    Replay,
    RepresentationMemory,
    clamp_to_task,
    momentum_at,
)
from protosphere.models import build_backbone


def engine_batch(n, seed):
    """Images as the engine hands them to a method: uint8 / 255 in float32."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 3, 3), generator=g, dtype=torch.uint8).float().div_(255)


# --- Replay ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_replay_keeps_uint8_and_gives_back_the_streamed_floats_bit_for_bit(dtype):
    every_value = torch.arange(256, dtype=torch.uint8).reshape(256, 1, 1, 1)
    streamed = every_value.float().div(255).to(dtype)  # the engine's batch, cast by the precision plugin
    replay = Replay(256)
    replay.store(streamed, torch.zeros(256, dtype=torch.long))
    stored = replay.all()["examples"]
    assert stored.dtype == torch.uint8 and torch.equal(stored, every_value)
    drawn = replay.draw(256, dtype)["examples"]
    assert drawn.dtype == dtype and torch.equal(drawn.sort(0).values, streamed)


def test_replay_draws_the_rows_a_float_buffer_would_draw():
    """Same decisions and the same floats as a ReplayBuffer that stored the float images (the old convention)."""
    replay, reference = Replay(10, seed=3), ReplayBuffer(10, seed=3)
    for step in range(6):
        x, y = engine_batch(4, step), torch.arange(4) + step
        logits = torch.randn(4, 5)
        replay.store(x, y, logits=logits)
        reference.add(y, examples=x, logits=logits)
        mine, theirs = replay.draw(3), reference.sample(3)
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(mine[key], theirs[key]), key
    assert replay.data["examples"].element_size() == 1  # a quarter of float32's memory


def test_replay_loads_a_checkpoint_written_with_float_images():
    reference = ReplayBuffer(8, seed=1)
    for step in range(4):
        reference.add(torch.arange(3), examples=engine_batch(3, step))
    replay = Replay(8, seed=1)
    replay.load_state_dict(reference.state_dict())
    assert replay.data["examples"].dtype == torch.uint8
    assert torch.equal(replay.draw(8)["examples"], reference.sample(8)["examples"])


def test_representation_memory_joins_a_replay_batch_and_tracks_its_buffers():
    tracked = {}
    memory = RepresentationMemory(lambda name, obj: tracked.__setitem__(name, obj), 6, "reservoir", 2)
    assert tracked == {"buffer": memory.buffer, "probe_buffer": None} and memory.probe_buffer is None
    x, y = engine_batch(4, 0), torch.tensor([0, 1, 0, 1])
    assert memory.join(x, y)[0] is x  # nothing stored yet: the stream batch alone
    x2, y2 = engine_batch(4, 1), torch.tensor([2, 3, 2, 3])
    joined, labels = memory.join(x2, y2)
    assert joined.shape[0] == 6 and torch.equal(joined[:4], x2) and torch.equal(labels[:4], y2)
    stored = {tuple(row.flatten().tolist()) for row in x}
    assert all(tuple(row.flatten().tolist()) in stored for row in joined[4:])  # replayed rows: the first batch
    assert "training buffer (6 samples)" in memory.describe()["linear_probe"]
    free = RepresentationMemory(lambda name, obj: None, 0)
    assert free.buffer is None and free.probe_buffer.capacity == 200 and free.join(x, y)[0] is x
    free.configure_evaluation(types.SimpleNamespace(probe_buffer_size=0))
    assert free.probe_buffer is None and free.describe() == {}


# --- past model and class-mean drift ----------------------------------------------------------------------------


class TinyEncoder(Method):
    """Just what the parts read: backbone, projector, the snapshot hooks, transforms, a forward to projections."""

    def __init__(self, bn=True):
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(9, 6), *([nn.BatchNorm1d(6)] if bn else []))
        super().__init__(None, backbone, 4, Transforms(lambda x: x, lambda x: x))
        self.projector = nn.Linear(6, 3)
        self.register_buffer("prototypes", None)

    def forward(self, x):
        return nn.functional.normalize(self.projector(self.backbone(x)), dim=1)


def test_past_model_is_a_frozen_copy_from_task_1_checkpointed_with_the_method():
    method = TinyEncoder()
    past = PastModel(method, train_mode_bn=False)
    past.begin_task(types.SimpleNamespace(index=0))
    assert past.model is None
    past.begin_task(types.SimpleNamespace(index=1), needed=False)  # distillation off: no copy
    assert past.model is None
    past.begin_task(types.SimpleNamespace(index=1))
    assert past.model is method.snapshot("past") and not past.model.training
    assert all(not p.requires_grad for p in past.model.parameters())
    x = engine_batch(5, 0)
    method.eval()
    expected = method(x)
    with torch.no_grad():
        method.projector.weight.add_(1.0)  # the current model moves on; the copy does not
    torch.testing.assert_close(past.embed(x), expected)
    assert not past.embed(x).requires_grad
    fresh = TinyEncoder()
    PastModel(fresh)
    fresh.load_state_dict(method.state_dict())
    torch.testing.assert_close(fresh.snapshot("past").state_dict(), past.model.state_dict())


def test_past_model_in_train_mode_normalises_with_batch_statistics():
    method = TinyEncoder()
    past = PastModel(method, train_mode_bn=True)
    past.begin_task(types.SimpleNamespace(index=1))
    assert past.model.training
    x = engine_batch(5, 1)
    method.train()
    torch.testing.assert_close(past.embed(x), method(x).detach())


def test_class_mean_drift_keeps_each_class_mean_from_its_own_task():
    method = TinyEncoder(bn=False)
    drift = ClassMeanDrift(method, 4, 3)
    assert "learned_means" in method.state_dict() and method.learned_means.shape == (4, 3)
    images = torch.randint(0, 256, (8, 1, 3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 4)
    first = types.SimpleNamespace(
        classes=(0, 1), seen_classes=[0, 1], previous_classes=[], previous=[], train_images=images, train_labels=labels
    )
    out = drift(first)
    means = torch.stack(
        [nn.functional.normalize(method(images[labels == c].float() / 255).mean(0), dim=0) for c in (0, 1)]
    )
    torch.testing.assert_close(method.learned_means[:2], means.detach())
    assert out == {"classes": [0, 1]}
    with torch.no_grad():
        method.projector.weight.add_(0.5)
    second = types.SimpleNamespace(
        classes=(2, 3),
        seen_classes=[0, 1, 2, 3],
        previous_classes=[0, 1],
        previous=[(images, labels)],
        train_images=images,
        train_labels=labels + 2,
    )
    out = drift(second)
    now = torch.stack(
        [nn.functional.normalize(method(images[labels == c].float() / 255).mean(0), dim=0) for c in (0, 1)]
    )
    torch.testing.assert_close(torch.tensor(out["old_mean_drift_per_class"]), 1 - (now * means).sum(1).detach())
    torch.testing.assert_close(method.learned_means[:2], means.detach())  # old classes keep their first means


# --- fixed prototypes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,builder", [("simplex_etf", simplex_etf), ("orthonormal", orthonormal_prototypes)])
def test_fixed_prototypes_are_one_buffer_that_moves_and_is_never_trained(kind, builder):
    module = nn.Linear(2, 2)
    FixedPrototypes(kind, seed=4).attach(module, 5, 8)
    assert torch.equal(module.prototypes, builder(5, 8, seed=4))
    assert "prototypes" in module.state_dict() and all(p is not module.prototypes for p in module.parameters())
    assert module.double().prototypes.dtype == torch.float64


def test_fixed_prototypes_unknown_kind():
    with pytest.raises(ValueError, match="Unknown prototype kind 'etf'"):
        FixedPrototypes("etf")


def test_methods_with_fixed_prototypes_use_the_part():
    backbone = build_backbone("mlp", in_channels=1, image_size=3, hidden=(6,))
    identity = Transforms(lambda x: x, lambda x: x)
    for name, kind, seed_key in (
        ("fnc2", "simplex_etf", "etf_seed"),
        ("nct", "simplex_etf", "etf_seed"),
        ("clop", "orthonormal", "prototype_seed"),
    ):
        config = method_config_class(name).model_validate({"name": name, "projection_dim": 8, seed_key: 2})
        method = method_class(name)(config, backbone, 4, identity)
        assert torch.equal(method.prototypes, FixedPrototypes(kind, 2).build(4, 8)), name
    simclr = method_class("simclr")(method_config_class("simclr")(), backbone, 4, identity)
    assert simclr.prototypes is None and "prototypes" not in simclr.state_dict()


# --- momentum encoder and key queue ------------------------------------------------------------------------------


def test_momentum_encoder_is_an_ema_with_the_cosine_schedule():
    torch.manual_seed(0)
    backbone, projector = nn.Linear(4, 5), nn.Linear(5, 3)
    encoder = MomentumEncoder(backbone, projector, 0.9, 0.99)
    assert all(not p.requires_grad for p in encoder.parameters())
    with torch.no_grad():
        for p in [*backbone.parameters(), *projector.parameters()]:
            p.add_(1.0)
    before = [p.clone() for p in encoder.parameters()]
    m = encoder.update(StepContext(task=0, epoch=0, step=3, steps_in_task=8, global_step=3), backbone, projector)
    assert m == encoder.momentum == pytest.approx(0.99 - 0.09 * (1 + torch.cos(torch.tensor(torch.pi * 3 / 8))) / 2)
    assert m == momentum_at(3, 8, 0.9, 0.99)
    online = [*backbone.parameters(), *projector.parameters()]
    for target, old, new in zip(encoder.parameters(), before, online):
        torch.testing.assert_close(target, m * old + (1 - m) * new)
    keys = encoder(torch.randn(6, 4))
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(6))
    assert not keys.requires_grad


def test_key_queue_is_fifo_against_a_list():
    queue = KeyQueue(size=5, dim=2, views=1)
    reference = [tuple(row) for row in queue.keys[0].tolist()]
    pointer = 0
    for n in (2, 4, 1, 7):
        values = torch.randn(1, n, 2)
        queue.enqueue(values)
        for row in values[0, -5:].tolist():  # more values than slots: the last ones win
            reference[pointer] = tuple(row)
            pointer = (pointer + 1) % 5
        assert int(queue.ptr) == pointer
        torch.testing.assert_close(queue.keys[0], torch.tensor(reference))
    read = queue.read()
    queue.enqueue(torch.zeros(1, 1, 2))
    assert not torch.equal(read, queue.keys)  # read is a copy


def test_clamp_shrinks_every_queue_once_with_one_message(caplog):
    queues = [KeyQueue(size=10, dim=2), KeyQueue(size=10, dim=2), KeyQueue(size=10, dim=2, clamp=False)]
    queues[0].ptr.fill_(3)
    newest_first = [(3 - 1 - i) % 10 for i in range(4)][::-1]  # the 4 most recent rows, oldest first
    expected = queues[0].keys[:, newest_first].clone()
    for queue in queues:
        queue.begin_task(9)  # 9 images, global batch 2 → 8 keep
    with caplog.at_level(logging.WARNING):
        clamp_to_task(queues[:2], 4, "sycon", None)
    assert caplog.text.count("queue_size 10 exceeds the 9 training images of task 0") == 1
    assert [q.keys.shape[1] for q in queues[:2]] == [8, 8] and int(queues[0].ptr) == 0
    torch.testing.assert_close(queues[0].keys[:, -4:], expected)
    clamp_to_task(queues[2:], 4, "moco", None)
    assert queues[2].keys.shape[1] == 10  # clamp off: M stays
    caplog.clear()
    clamp_to_task(queues[:2], 4, "sycon", None)  # once per task
    assert not caplog.text


def test_key_queue_loads_a_clamped_checkpoint():
    queue = KeyQueue(size=10, dim=2)
    queue.begin_task(5)
    clamp_to_task([queue], 2, "moco", None)
    fresh = KeyQueue(size=10, dim=2)
    fresh.load_state_dict(queue.state_dict())
    assert torch.equal(fresh.keys, queue.keys) and fresh.keys.shape == (2, 4, 2)


# --- Method hooks ------------------------------------------------------------------------------------------------


def make(name, **settings):
    options = {} if name == "er" else {"projection_dim": 8, "projection_hidden": 16, "queue_size": 12}
    options.update(settings)
    if name in ("cassle", "sycon"):
        options.setdefault("predictor_hidden", 16)
    config = method_config_class(name).model_validate({"name": name, **options})
    backbone = build_backbone("mlp", in_channels=1, image_size=3, hidden=(6,))
    return method_class(name)(config, backbone, 4, Transforms(lambda x: x, lambda x: x))


def test_install_collectives_and_tracked_state():
    method = make("er", buffer_size=4)
    assert torch.equal(method.gather(torch.ones(2)), torch.ones(2))  # one process: the identity
    calls = []
    method.install_collectives(gather=lambda t: torch.cat([t, t]), synchronize=lambda: calls.append(1))
    assert method.gather(torch.ones(2)).shape == (4,)
    method.install_collectives(synchronize=lambda: calls.append(2))  # gather left as installed
    assert method.gather(torch.ones(2)).shape == (4,)
    with method.fit_timer("probe"):
        pass
    assert calls == [2, 2]
    tracked = method.tracked_state()
    assert tracked == {"buffer": method.buffer}
    tracked.clear()  # a copy: the method's own list is untouched
    assert method.tracked_state() == {"buffer": method.buffer}
    method.track_state("buffer", None)
    assert method.tracked_state() == {}


@pytest.mark.parametrize("name", ["moco", "cassle", "sycon"])
def test_checkpoints_written_before_the_parts_still_load(name):
    method = make(name)
    method.queue.enqueue(torch.randn(2, 5, 8))
    state = method.state_dict()
    old = {}  # the key names of the earlier layout
    for key, value in state.items():
        for new, was in (
            ("momentum_encoder.backbone.", "momentum_backbone."),
            ("momentum_encoder.projector.", "momentum_projector."),
            ("past_queue.keys", "past_queue"),
            ("past_queue.ptr", "past_queue_ptr"),
            ("queue.keys", "queue"),
            ("queue.ptr", "queue_ptr"),
        ):
            if key.startswith(new):
                key = was + key[len(new) :]
                break
        old[key] = value
    assert "queue" in old and "momentum_backbone.net.0.weight" in old
    fresh = make(name)
    fresh.load_state_dict(old)
    for key, value in state.items():
        if key != "_extra_state":
            assert torch.equal(fresh.state_dict()[key], value), key


def test_no_method_inherits_another_methods_class():
    """Methods compose parts; a registered method's class derives only from the shared bases."""
    from protosphere.methods import method_names
    from protosphere.methods.base import SupervisedMethod
    from protosphere.methods.normalized import NormalizedMethod
    from protosphere.methods.representation import RepresentationMethod
    from protosphere.methods.self_supervised import SelfSupervisedMethod

    shared = {Method, SupervisedMethod, RepresentationMethod, SelfSupervisedMethod, NormalizedMethod, nn.Module}
    registered = {method_class(name) for name in method_names()}
    for name in method_names():
        cls = method_class(name)
        ancestors = [base for base in cls.__mro__[1:] if issubclass(base, nn.Module) and base is not nn.Module]
        assert all(base in shared for base in ancestors if base not in (object,)), (name, ancestors)
        assert not any(base in registered for base in ancestors), name
