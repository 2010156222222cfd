import math

import pytest
import torch

from protosphere.evaluation import (
    accuracy,
    class_balanced_indices,
    extract_features,
    fit_linear_probe,
    knn_logits,
    ncm_logits,
    nearest_prototype_logits,
)
from protosphere.geometry import class_means, simplex_etf


def _blobs(n_per_class, num_classes=4, d=8, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(num_classes, d, generator=g)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), d, generator=g)
    return x, y


def test_extract_features_batches_and_passes_input_as_given():
    images = torch.arange(10 * 3, dtype=torch.uint8).reshape(10, 3)
    seen = []

    def fn(batch):
        seen.append((batch.dtype, batch.shape[0], torch.is_grad_enabled()))
        return batch.float() * 2

    out = extract_features(fn, images, batch_size=4)
    assert torch.equal(out, images.float() * 2)
    assert seen == [(torch.uint8, 4, False), (torch.uint8, 4, False), (torch.uint8, 2, False)]
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        extract_features(lambda b: b.float().sum(1), images, batch_size=4)


def test_linear_probe_separable_blobs():
    x, y = _blobs(50)
    state = torch.get_rng_state()
    probe = fit_linear_probe(x, y, 4, epochs=30, lr=0.1, batch_size=32, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    assert isinstance(probe, torch.nn.Linear) and probe.weight.shape == (4, 8)
    assert accuracy(probe(x), y) == 100.0
    # Held-out rows around the same centres (same generator seed), fresh noise.
    g = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(4, 8, generator=g)
    test_y = torch.arange(4).repeat_interleave(20)
    test_x = centres[test_y] + 0.3 * torch.randn(80, 8, generator=torch.Generator().manual_seed(99))
    assert accuracy(probe(test_x), test_y) >= 97.5
    # Deterministic given the seed, different for another seed.
    again = fit_linear_probe(x, y, 4, epochs=30, lr=0.1, batch_size=32, seed=1)
    assert torch.equal(again.weight, probe.weight)
    other = fit_linear_probe(x, y, 4, epochs=30, lr=0.1, batch_size=32, seed=2)
    assert not torch.equal(other.weight, probe.weight)


def test_linear_probe_min_steps_adds_epochs_to_a_small_set():
    x, y = _blobs(5)  # 20 rows, batch 8: 3 steps per epoch
    short = fit_linear_probe(x, y, 4, epochs=2, lr=0.1, batch_size=8, seed=3, min_steps=0)
    stretched = fit_linear_probe(x, y, 4, epochs=2, lr=0.1, batch_size=8, seed=3, min_steps=30)
    ten_epochs = fit_linear_probe(x, y, 4, epochs=10, lr=0.1, batch_size=8, seed=3)  # ceil(30 / 3) epochs
    assert torch.equal(stretched.weight, ten_epochs.weight) and not torch.equal(short.weight, ten_epochs.weight)
    # already enough steps: unchanged
    enough = fit_linear_probe(x, y, 4, epochs=10, lr=0.1, batch_size=8, seed=3, min_steps=12)
    assert torch.equal(enough.weight, ten_epochs.weight)
    with pytest.raises(ValueError, match="min_steps"):
        fit_linear_probe(x, y, 4, min_steps=-1)


@pytest.mark.parametrize("schedule", ["step", "constant"])
def test_linear_probe_other_schedules_and_balanced(schedule):
    x, y = _blobs(40, num_classes=3, seed=3)
    probe = fit_linear_probe(
        x,
        y,
        3,
        epochs=20,
        lr=0.05,
        batch_size=16,
        schedule=schedule,
        milestones=(10, 15),
        class_balanced=True,
        weight_decay=1e-4,
    )
    assert accuracy(probe(x), y) == 100.0
    with pytest.raises(ValueError, match="schedule"):
        fit_linear_probe(x, y, 3, epochs=1, schedule="poly")


def test_class_balanced_sampler_statistic():
    # 9:1 imbalance: 900 rows of class 0, 100 of class 1. Weights 1/N_c make each class ~50 % of the draws.
    y = torch.cat([torch.zeros(900, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    g = torch.Generator().manual_seed(0)
    idx = class_balanced_indices(y, 20000, g)
    frac = (y[idx] == 1).double().mean().item()
    # Binomial std = sqrt(0.25/20000) ~ 0.0035; plain uniform sampling would give 0.1.
    assert abs(frac - 0.5) < 0.02
    # Within 256-row batches too.
    per_batch = (y[idx[: 256 * 50]].view(50, 256) == 1).double().mean(1)
    assert per_batch.min() > 0.35 and per_batch.max() < 0.65
    # Class-1 rows are spread over its 100 samples (not one sample repeated).
    assert torch.unique(idx[y[idx] == 1]).numel() == 100
    assert torch.equal(idx, class_balanced_indices(y, 20000, torch.Generator().manual_seed(0)))


def test_linear_probe_class_balanced_helps_minority():
    # Overlapping 9:1 blobs: the balanced probe must predict the minority class more often than the plain one.
    g = torch.Generator().manual_seed(5)
    y = torch.cat([torch.zeros(450, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    x = torch.randn(500, 2, generator=g) + torch.stack([y.float() * 1.0, torch.zeros(500)], 1)
    plain = fit_linear_probe(x, y, 2, epochs=15, lr=0.1, batch_size=64)
    balanced = fit_linear_probe(x, y, 2, epochs=15, lr=0.1, batch_size=64, class_balanced=True)
    minority_plain = (plain(x).argmax(1) == 1).sum()
    minority_balanced = (balanced(x).argmax(1) == 1).sum()
    assert minority_balanced > minority_plain + 50


def test_ncm_and_prototype_logits():
    x, y = _blobs(30, num_classes=3, d=5, seed=1)
    means = class_means(x, y, 4)  # class 3 unseen -> zero row
    logits = ncm_logits(x, means)
    assert logits.shape == (90, 4)
    assert torch.isinf(logits[:, 3]).all() and (logits[:, 3] < 0).all()
    expected = torch.nn.functional.normalize(x, dim=1) @ means[:3].T
    assert torch.allclose(logits[:, :3], expected, atol=1e-6)
    assert accuracy(logits, y) == 100.0
    protos = simplex_etf(3, 5)
    pl = nearest_prototype_logits(2.0 * protos + 0.01, protos)
    assert torch.equal(pl.argmax(1), torch.arange(3))
    assert torch.allclose(pl.diagonal(), torch.ones(3), atol=1e-3)


def _knn_reference(train_x, train_y, test_x, num_classes, k, t):
    out = torch.zeros(test_x.shape[0], num_classes, dtype=torch.float64)
    train_n = train_x.double() / train_x.double().norm(dim=1, keepdim=True)
    for m in range(test_x.shape[0]):
        q = test_x[m].double() / test_x[m].double().norm()
        sims = [(float(q @ train_n[i]), i) for i in range(train_x.shape[0])]
        sims.sort(key=lambda s: -s[0])
        for s, i in sims[: min(k, len(sims))]:
            out[m, int(train_y[i])] += math.exp(s / t)
    return out


@pytest.mark.parametrize("k,chunk", [(5, 7), (20, 1024), (100, 3)])
def test_knn_matches_brute_force(k, chunk):
    g = torch.Generator().manual_seed(k)
    train_x = torch.randn(60, 6, generator=g, dtype=torch.float64)
    train_y = torch.randint(0, 5, (60,), generator=g)
    test_x = torch.randn(23, 6, generator=g, dtype=torch.float64)
    ours = knn_logits(train_x, train_y, test_x, 5, k=k, temperature=0.1, chunk_size=chunk)
    ref = _knn_reference(train_x, train_y, test_x, 5, k, 0.1)
    assert ours.shape == (23, 5)
    assert torch.allclose(ours, ref, rtol=1e-10)


def test_knn_classifies_blobs():
    x, y = _blobs(40, seed=2)
    xt, yt = x[::2], y[::2]
    xr, yr = x[1::2], y[1::2]
    assert accuracy(knn_logits(xr, yr, xt, 4, k=10), yt) == 100.0


def test_accuracy():
    logits = torch.tensor([[5.0, 1.0, 2.0, 0.0], [0.0, 3.0, 9.0, 4.0]])
    assert accuracy(logits, torch.tensor([0, 1])) == 50.0
    assert accuracy(logits, torch.tensor([0, 2])) == 100.0
    with pytest.raises(ValueError, match="no samples"):
        accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
