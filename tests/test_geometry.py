import pytest
import torch
import torch.nn.functional as F

from protosphere.geometry import (
    RunningClassMeans,
    class_means,
    orthonormal_prototypes,
    simplex_etf,
)

ETF_CASES = [(2, 1), (3, 2), (10, 9), (10, 10), (10, 64), (100, 99), (7, 128)]


@pytest.mark.parametrize("k,d", ETF_CASES)
def test_etf_geometry(k, d):
    p = simplex_etf(k, d)
    assert p.shape == (k, d) and p.dtype == torch.float32
    assert torch.allclose(p.norm(dim=1), torch.ones(k), atol=1e-6)
    gram = p.double() @ p.double().T
    off = gram[~torch.eye(k, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (k - 1)), atol=1e-6)
    assert torch.allclose(p.sum(dim=0), torch.zeros(d), atol=1e-5)


@pytest.mark.parametrize("k,d", [(10, 9), (10, 10), (10, 64)])
def test_etf_seeding(k, d):
    a = simplex_etf(k, d, seed=3)
    assert torch.equal(a, simplex_etf(k, d, seed=3))
    assert not torch.allclose(a, simplex_etf(k, d, seed=4), atol=1e-3)


def test_etf_large_dim_matches_qr_construction():
    # The d >= K construction is exactly Q of the reduced QR of a seeded d x K standard normal.
    k, d = 6, 20
    g = torch.Generator().manual_seed(5)
    u, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    m = (k / (k - 1)) ** 0.5 * u @ (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    assert torch.allclose(simplex_etf(k, d, seed=5), m.T.float(), atol=1e-6)


def test_prototypes_leave_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    simplex_etf(10, 9, seed=1)
    simplex_etf(10, 32, seed=1)
    orthonormal_prototypes(10, 32, seed=1)
    assert torch.equal(state, torch.get_rng_state())


def test_too_small_dim_names_minimum():
    with pytest.raises(ValueError, match=r"dim >= 9"):
        simplex_etf(10, 8)
    with pytest.raises(ValueError, match=r"dim >= 10"):
        orthonormal_prototypes(10, 9)
    with pytest.raises(ValueError, match="at least 2 classes"):
        simplex_etf(1, 5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        orthonormal_prototypes(1, 5)


@pytest.mark.parametrize("k,d", [(2, 2), (10, 10), (10, 128)])
def test_orthonormal(k, d):
    q = orthonormal_prototypes(k, d, seed=2)
    assert q.shape == (k, d) and q.dtype == torch.float32
    assert torch.allclose(q @ q.T, torch.eye(k), atol=1e-6)
    assert torch.equal(q, orthonormal_prototypes(k, d, seed=2))
    assert not torch.allclose(q, orthonormal_prototypes(k, d, seed=3), atol=1e-3)


def _loop_means(x, y, k):
    out = torch.zeros(k, x.shape[1], dtype=x.dtype)
    for c in range(k):
        rows = [F.normalize(x[i], dim=0) for i in range(len(y)) if int(y[i]) == c]
        if rows:
            m = torch.stack(rows).mean(0)
            out[c] = m / m.norm()
    return out


def test_class_means_exact_and_empty_class():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (50,), generator=g)  # class 4 absent
    means = class_means(x, y, 5)
    assert torch.allclose(means, _loop_means(x, y, 5), atol=1e-12)
    assert torch.equal(means[4], torch.zeros(6, dtype=torch.float64))
    raw = class_means(x, y, 5, normalize_inputs=False)
    assert torch.allclose(raw[0], F.normalize(x[y == 0].mean(0), dim=0), atol=1e-12)
    with pytest.raises(ValueError, match="labels"):
        class_means(x, y + 2, 5)


def test_running_means_exact_mode_matches_class_means():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(90, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (90,), generator=g)
    rm = RunningClassMeans(4, 5, momentum=None, dtype=torch.float64)
    for chunk in range(0, 90, 17):
        rm.update(x[chunk : chunk + 17], y[chunk : chunk + 17])
    assert torch.allclose(rm.means, class_means(x, y, 4), atol=1e-12)
    assert rm.seen.tolist() == [True, True, True, False]
    assert rm.counts.tolist()[:3] == torch.bincount(y).tolist()


def test_running_means_ema_two_steps_by_hand():
    rm = RunningClassMeans(2, 2, momentum=0.9)
    # Step 1: class 0 gets rows (3, 4) -> (0.6, 0.8) and (0, 2) -> (0, 1); batch mean (0.3, 0.9). First sighting:
    # a_0 = (0.3, 0.9). Class 1 absent.
    rm.update(torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([0, 0]))
    assert torch.allclose(rm.accumulator[0], torch.tensor([0.3, 0.9]))
    assert rm.seen.tolist() == [True, False]
    # Step 2: class 0 gets (5, 0) -> (1, 0): a_0 = 0.9 (0.3, 0.9) + 0.1 (1, 0) = (0.37, 0.81);
    # class 1 gets (0, -1): first sighting, a_1 = (0, -1).
    rm.update(torch.tensor([[5.0, 0.0], [0.0, -1.0]]), torch.tensor([0, 1]))
    assert torch.allclose(rm.accumulator[0], torch.tensor([0.37, 0.81]))
    assert torch.allclose(rm.accumulator[1], torch.tensor([0.0, -1.0]))
    norm = (0.37**2 + 0.81**2) ** 0.5
    assert torch.allclose(rm.means[0], torch.tensor([0.37 / norm, 0.81 / norm]))
    assert rm.seen.tolist() == [True, True]


def test_running_means_state_dict_roundtrip():
    rm = RunningClassMeans(3, 4)
    rm.update(torch.randn(10, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1] * 5))
    sd = rm.state_dict()
    assert set(sd) == {"accumulator", "counts"}
    other = RunningClassMeans(3, 4)
    other.load_state_dict(sd)
    assert torch.equal(other.means, rm.means) and torch.equal(other.seen, rm.seen)
    logits = other(torch.randn(5, 4))
    assert torch.isinf(logits[:, 2]).all() and torch.isfinite(logits[:, :2]).all()
