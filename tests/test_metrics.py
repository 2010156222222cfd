import json
import math

import numpy as np
import pytest
import torch

from protosphere.geometry import simplex_etf
from protosphere.metrics import (
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    effective_rank,
    final_average_accuracy,
    forgetting,
    forward_transfer,
    mean_drift,
    neural_collapse,
    prototype_alignment,
    summarize,
)

# ----------------------------------------------------------------------------------------------------------------------
# Neural collapse: an independent NumPy reference written loop by loop.


def _np_erank(spectrum):
    s = np.clip(np.asarray(spectrum, dtype=np.float64), 0, None)
    if s.sum() == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def np_neural_collapse(h, y, w=None):
    h = np.asarray(h, dtype=np.float64)
    n, d = h.shape
    c = int(y.max()) + 1
    mu = np.stack([h[y == k].mean(axis=0) for k in range(c)])
    mu_g = mu.mean(axis=0)
    m_dot = (mu - mu_g).T  # (d, C)
    sw = np.zeros((d, d))
    for i in range(n):
        v = (h[i] - mu[y[i]])[:, None]
        sw += v @ v.T
    sw /= n
    sb = m_dot @ m_dot.T / c
    out = {"nc1": float(np.trace(sw @ np.linalg.pinv(sb, hermitian=True)) / c)}
    norms = np.linalg.norm(m_dot, axis=0)
    out["equinorm"] = float(np.std(norms, ddof=1) / np.mean(norms))
    cosines = []
    for a in range(c):
        for b in range(c):
            if a != b:
                cosines.append(m_dot[:, a] @ m_dot[:, b] / (norms[a] * norms[b]))
    cosines = np.array(cosines)
    assert len(cosines) == c * (c - 1)
    out["equiangularity"] = float(np.std(cosines, ddof=1))
    out["max_angle"] = float(np.mean(np.abs(cosines + 1.0 / (c - 1))))
    out["within_class_effective_rank"] = _np_erank(np.linalg.eigvalsh(sw))
    out["between_class_effective_rank"] = _np_erank(np.linalg.eigvalsh(sb))
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
        out["nc3"] = float(np.linalg.norm(w / np.linalg.norm(w) - m_dot.T / np.linalg.norm(m_dot)) ** 2)
        agree = 0
        for i in range(n):
            dists = [np.linalg.norm(h[i] - mu[k]) for k in range(c)]
            agree += int(np.argmax(w @ h[i]) == np.argmin(dists))
        out["nc4"] = 1.0 - agree / n
    return out


def _exact_etf64(k, d, seed=0):
    # Float64 simplex ETF built independently of protosphere: embed the centred scaled identity with a random
    # orthonormal d x K frame.
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((d, k)))
    m = np.sqrt(k / (k - 1)) * u @ (np.eye(k) - np.ones((k, k)) / k)
    return torch.from_numpy(m.T.copy())


NC_KEYS = {
    "nc1",
    "equinorm",
    "equiangularity",
    "max_angle",
    "within_class_effective_rank",
    "between_class_effective_rank",
}


@pytest.mark.parametrize("k,d", [(4, 8), (10, 16)])
def test_perfect_etf_collapse_is_zero(k, d):
    protos = _exact_etf64(k, d)
    h = protos.repeat(6, 1)
    y = torch.arange(k).repeat(6)
    plain = neural_collapse(h, y)
    assert set(plain) == NC_KEYS
    full = neural_collapse(h, y, weights=protos)
    assert set(full) == NC_KEYS | {"nc3", "nc4"}
    for key in ("nc1", "equinorm", "equiangularity", "max_angle", "nc3", "nc4"):
        assert abs(full[key]) < 1e-8, (key, full[key])
    assert full["between_class_effective_rank"] == pytest.approx(k - 1, abs=1e-8)
    # Same with the library's float32 ETF (its own rounding, ~1e-7).
    p32 = simplex_etf(k, d)
    res = neural_collapse(p32.repeat(3, 1), torch.arange(k).repeat(3), weights=p32)
    for key in ("nc1", "equinorm", "equiangularity", "max_angle", "nc3", "nc4"):
        assert abs(res[key]) < 1e-6, (key, res[key])


def _random_case(seed, n=120, d=7, c=5, spread=0.7):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d)) * 2.0
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])  # every class present, unbalanced
    h = centres[y] + spread * rng.standard_normal((n, d))
    w = rng.standard_normal((c, d))
    return h, y, w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neural_collapse_matches_numpy_reference(seed):
    h, y, w = _random_case(seed)
    ours = neural_collapse(torch.from_numpy(h).float(), torch.from_numpy(y), torch.from_numpy(w))
    ref = np_neural_collapse(h.astype(np.float32), y, w)
    assert set(ours) == set(ref)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
        assert isinstance(ours[key], float)


def test_neural_collapse_rank_deficient_between_class():
    # d > C: Σ_B has rank C-1 < d, so the pseudo-inverse matters.
    h, y, _ = _random_case(7, n=80, d=20, c=4)
    ours = neural_collapse(torch.from_numpy(h), torch.from_numpy(y))
    ref = np_neural_collapse(h, y)
    assert ours["nc1"] == pytest.approx(ref["nc1"], rel=1e-9)
    assert ours["between_class_effective_rank"] == pytest.approx(ref["between_class_effective_rank"], rel=1e-9)
    assert ours["between_class_effective_rank"] <= 3 + 1e-9


def test_neural_collapse_invariances():
    h, y, w = _random_case(3, d=6)
    ht, yt, wt = torch.from_numpy(h), torch.from_numpy(y), torch.from_numpy(w)
    base = neural_collapse(ht, yt, wt)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    rotated = neural_collapse(ht @ q, yt, wt @ q)
    scaled = neural_collapse(3.5 * ht, yt, wt)
    shifted = neural_collapse(ht + 4.0, yt)
    for key in base:
        assert rotated[key] == pytest.approx(base[key], rel=1e-8, abs=1e-12), key
    for key in (
        "nc1",
        "equinorm",
        "equiangularity",
        "max_angle",
        "nc3",
        "within_class_effective_rank",
        "between_class_effective_rank",
    ):
        assert scaled[key] == pytest.approx(base[key], rel=1e-8), key
    for key in ("nc1", "equinorm", "equiangularity", "max_angle"):
        assert shifted[key] == pytest.approx(base[key], rel=1e-8), key


def test_neural_collapse_input_errors():
    h = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        neural_collapse(h, torch.tensor([0, 2] * 5))
    with pytest.raises(ValueError, match="at least 2 classes"):
        neural_collapse(h, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="weights"):
        neural_collapse(h, torch.tensor([0, 1] * 5), weights=torch.randn(3, 3))
    with pytest.raises(ValueError, match="labels"):
        neural_collapse(h, torch.tensor([0, 1] * 4))


def test_effective_rank():
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)
    assert effective_rank(torch.ones(8, 3)) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(4, 4)) == 0.0
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = np.linalg.svd(x.numpy(), compute_uv=False)
    assert effective_rank(x) == pytest.approx(_np_erank(s), rel=1e-12)
    diag = torch.diag(torch.tensor([3.0, 1.0, 0.0]))
    p = np.array([0.75, 0.25])
    assert effective_rank(diag) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-7)


def test_prototype_alignment_and_drift():
    protos = simplex_etf(4, 6).double()
    means = protos * torch.tensor([[2.0], [1.0], [0.5], [1.0]])
    means[3] = -protos[3]
    cos = prototype_alignment(means, protos)
    assert torch.allclose(cos, torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(
        mean_drift(protos, means), torch.tensor([0.0, 0.0, 0.0, 2.0], dtype=torch.float64), atol=1e-12
    )
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(mean_drift(a, b), torch.tensor([1 - 2**-0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape"):
        prototype_alignment(a, torch.ones(3, 2))


# ----------------------------------------------------------------------------------------------------------------------
# Continual metrics against hand-computed accuracy matrices.

# A1 (T = 3), rows = after task t, columns = task j:
#   t=0: [90, 10,  5]
#   t=1: [70, 85, 20]
#   t=2: [60, 75, 80]
# final average = (60 + 75 + 80)/3 = 71.666...
# average incremental = mean(90, (70+85)/2, (60+75+80)/3) = mean(90, 77.5, 71.666...) = 239.1666.../3 = 79.7222...
# forgetting: f_0 = max(90, 70) - 60 = 30; f_1 = max(85) - 75 = 10 -> [30, 10], average 20
# BWT = ((60 - 90) + (75 - 85))/2 = -20
# FWT with b = [10, 12, 7]: ((A[0,1] - b1) + (A[1,2] - b2))/2 = ((10 - 12) + (20 - 7))/2 = 5.5
A1 = [[90, 10, 5], [70, 85, 20], [60, 75, 80]]

# A2 (T = 4) where an old task recovers and a task is better *before* it is trained (domain-IL like):
#   t=0: [50, 60, 10, 10]
#   t=1: [40, 55, 10, 15]
#   t=2: [45, 30, 70, 20]
#   t=3: [48, 50, 65, 90]
# final average = (48 + 50 + 65 + 90)/4 = 63.25
# average incremental = mean(50, 47.5, (45+30+70)/3 = 48.333..., 63.25) = 209.0833.../4 = 52.2708333...
# forgetting (rows t >= j only, t <= 2):
#   f_0 = max(50, 40, 45) - 48 = 2
#   f_1 = max(55, 30) - 50 = 5      (A[0,1] = 60 was before task 1 was trained and does not count)
#   f_2 = max(70) - 65 = 5
#   -> [2, 5, 5], average 4
# BWT = ((48-50) + (50-55) + (65-70))/3 = -12/3 = -4
# FWT with b = [10, 10, 10, 10]: ((60-10) + (10-10) + (20-10))/3 = 60/3 = 20
A2 = [[50, 60, 10, 10], [40, 55, 10, 15], [45, 30, 70, 20], [48, 50, 65, 90]]

# A3 (T = 2), negative forgetting (the old task improves):
#   t=0: [80, 0]
#   t=1: [85, 90]
# final average 87.5; average incremental = (80 + 87.5)/2 = 83.75; forgetting [80 - 85] = [-5]; BWT = 85 - 80 = 5;
# FWT with b = [0, 0]: A[0,1] - 0 = 0
A3 = [[80, 0], [85, 90]]


@pytest.mark.parametrize(
    "a,b,expected",
    [
        (A1, [10, 12, 7], dict(faa=215 / 3, aia=(90 + 77.5 + 215 / 3) / 3, f=[30, 10], af=20, bwt=-20, fwt=5.5)),
        (A2, [10] * 4, dict(faa=63.25, aia=(50 + 47.5 + 145 / 3 + 63.25) / 4, f=[2, 5, 5], af=4, bwt=-4, fwt=20)),
        (A3, [0, 0], dict(faa=87.5, aia=83.75, f=[-5], af=-5, bwt=5, fwt=0)),
    ],
)
def test_continual_metrics_by_hand(a, b, expected):
    arr = np.array(a, dtype=float)
    assert final_average_accuracy(arr) == pytest.approx(expected["faa"])
    assert average_incremental_accuracy(arr) == pytest.approx(expected["aia"])
    assert forgetting(arr) == pytest.approx(np.array(expected["f"], dtype=float))
    assert average_forgetting(arr) == pytest.approx(expected["af"])
    assert backward_transfer(arr) == pytest.approx(expected["bwt"])
    assert forward_transfer(arr, b) == pytest.approx(expected["fwt"])
    s = summarize(a, random_init=b)
    json.dumps(s)
    assert s["num_tasks"] == len(a)
    assert s["forgetting"] == pytest.approx(expected["f"])
    assert s["backward_transfer"] == pytest.approx(expected["bwt"])
    assert s["forward_transfer"] == pytest.approx(expected["fwt"])
    assert summarize(a)["forward_transfer"] is None


def test_continual_single_task():
    s = summarize([[73.0]], random_init=[10.0])
    json.dumps(s)
    assert s["final_average_accuracy"] == 73.0 and s["average_incremental_accuracy"] == 73.0
    assert s["forgetting"] == [] and s["average_forgetting"] is None
    assert s["backward_transfer"] is None and s["forward_transfer"] is None


def test_continual_validation():
    with pytest.raises(ValueError, match="square"):
        final_average_accuracy(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        final_average_accuracy(np.full((2, 2), 120.0))
    with pytest.raises(ValueError, match="NaN"):
        backward_transfer(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        forward_transfer(np.array(A1, dtype=float), [1.0, 2.0])
