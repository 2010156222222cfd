"""NormFace / NTCE / NONL (NC by Design) and CLOP / supervised NT-Xent against slow per-sample references."""

import math

import pytest
import torch

from loss_testing import DTYPES, unit
from protosphere.losses._checks import validation
from protosphere.losses.normalized import (
    CLOPLoss,
    NONLLoss,
    NormFaceLoss,
    NTCELoss,
    SupervisedNTXentLoss,
    clop,
    nonl,
    normface,
    ntce,
    supervised_ntxent,
)

# float64 is held tighter here than in loss_testing.TOL (these references sum in the same order)
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def raw(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * 3).to(dtype)


def leaf(x):
    return x.detach().clone().requires_grad_(True)


def value_and_grads(fn, inputs):
    inputs = [leaf(x) for x in inputs]
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs)


def assert_matches_reference(fn, ref, inputs, dtype):
    """fn on `inputs` in `dtype` vs the float64 reference on the same values: value and every gradient."""
    cast = [x.to(dtype) for x in inputs]
    out, grads = value_and_grads(fn, cast)
    ref_out, ref_grads = value_and_grads(ref, [x.to(torch.float64) for x in cast])
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref_out, **TOL[dtype])
    for g, rg in zip(grads, ref_grads):
        assert g.dtype == dtype and torch.isfinite(g).all()
        torch.testing.assert_close(g.double(), rg, **TOL[dtype])
    return out


# ----------------------------------------------------------------------------- slow references (float64, loops)


def _normalize_rows(w):
    return [w[c] / torch.sqrt(sum(w[c][k] ** 2 for k in range(w.shape[1]))) for c in range(w.shape[0])]


def ref_normface(u, labels, weights, tau):
    w = _normalize_rows(weights)
    total = 0
    for i in range(u.shape[0]):
        logits = [torch.dot(u[i], w[c]) / tau for c in range(len(w))]
        total = total - torch.log(torch.exp(logits[int(labels[i])]) / sum(torch.exp(s) for s in logits))
    return total / u.shape[0]


def ref_ntce(u, labels, weights, tau):
    w = _normalize_rows(weights)
    total = 0
    for i in range(u.shape[0]):
        anchor = w[int(labels[i])]
        den = sum(torch.exp(torch.dot(anchor, u[j]) / tau) for j in range(u.shape[0]))
        total = total - torch.log(torch.exp(torch.dot(anchor, u[i]) / tau) / den)
    return total / u.shape[0]


def ref_nonl(u, labels, weights, tau, bidirectional=False):
    w = _normalize_rows(weights)
    total = 0
    for i in range(u.shape[0]):
        y = int(labels[i])
        den = sum(torch.exp(torch.dot(w[y], u[b]) / tau) for b in range(u.shape[0]) if int(labels[b]) != y)
        if bidirectional:
            den = den + sum(torch.exp(torch.dot(u[i], w[c]) / tau) for c in range(len(w)) if c != y)
        total = total - torch.log(torch.exp(torch.dot(w[y], u[i]) / tau) / den)
    return total / u.shape[0]


def ref_clop(z1, z2, labels, prototypes, lam):
    terms = []
    for i in range(z1.shape[0]):
        y = int(labels[i])
        if y == -1:
            continue
        terms.append(1 - 0.5 * (torch.dot(z1[i], prototypes[y]) + torch.dot(z2[i], prototypes[y])))
    return lam * sum(terms) / len(terms)


def ref_supervised_ntxent(z1, z2, labels, tau):
    n = z1.shape[0]
    total = 0
    for i in range(n):
        num, den = 0, 0
        for j in range(n):
            e = torch.exp(torch.dot(z1[i], z2[j]) / tau)
            den = den + e
            if j == i or (int(labels[i]) != -1 and int(labels[j]) == int(labels[i])):
                num = num + e
        total = total - torch.log(num / (den + 1e-8))
    return total / n


# ----------------------------------------------------------------------------- value and gradient vs reference

LABELS = torch.tensor([0, 1, 2, 0, 1, 3, 3, 0, 2, 1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau", [0.1, 0.2])
def test_normface_matches_reference(dtype, tau):
    u, w = unit(10, 6, 0), raw(5, 6, 1)  # class 4 has a weight but no sample
    assert_matches_reference(
        lambda u, w: normface(u, LABELS, w, tau), lambda u, w: ref_normface(u, LABELS, w, tau), [u, w], dtype
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau", [0.1, 0.2])
def test_ntce_matches_reference(dtype, tau):
    u, w = unit(10, 6, 2), raw(5, 6, 3)
    assert_matches_reference(
        lambda u, w: ntce(u, LABELS, w, tau), lambda u, w: ref_ntce(u, LABELS, w, tau), [u, w], dtype
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_nonl_matches_reference(dtype, bidirectional):
    u, w = unit(10, 6, 4), raw(5, 6, 5)
    assert_matches_reference(
        lambda u, w: nonl(u, LABELS, w, 0.1, bidirectional=bidirectional),
        lambda u, w: ref_nonl(u, LABELS, w, 0.1, bidirectional),
        [u, w],
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_clop_matches_reference(dtype, lam):
    labels = torch.tensor([0, -1, 2, 0, -1, 1, 2, 2])
    z1, z2, a = unit(8, 5, 6), unit(8, 5, 7), unit(3, 5, 8)
    assert_matches_reference(
        lambda z1, z2, a: clop(z1, z2, labels, a, lam=lam),
        lambda z1, z2, a: ref_clop(z1, z2, labels, a, lam),
        [z1, z2, a],
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_supervised_ntxent_matches_reference(dtype, tau):
    labels = torch.tensor([0, -1, 2, 0, -1, 1, 2, 2, 5])  # class 1 and class 5: no positive but the other view
    z1, z2 = unit(9, 5, 9), unit(9, 5, 10)
    assert_matches_reference(
        lambda z1, z2: supervised_ntxent(z1, z2, labels, tau),
        lambda z1, z2: ref_supervised_ntxent(z1, z2, labels, tau),
        [z1, z2],
        dtype,
    )


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_rows(dtype):
    labels = torch.tensor([0, 1])
    u, w = unit(2, 4, 11), raw(2, 4, 12)
    for fn, ref in [(normface, ref_normface), (ntce, ref_ntce), (nonl, ref_nonl)]:
        assert_matches_reference(
            lambda u, w, fn=fn: fn(u, labels, w, 0.2), lambda u, w, ref=ref: ref(u, labels, w, 0.2), [u, w], dtype
        )
    z1, z2, a = unit(2, 4, 13), unit(2, 4, 14), unit(2, 4, 15)
    assert_matches_reference(
        lambda z1, z2, a: clop(z1, z2, labels, a),
        lambda z1, z2, a: ref_clop(z1, z2, labels, a, 1.0),
        [z1, z2, a],
        dtype,
    )
    assert_matches_reference(
        lambda z1, z2: supervised_ntxent(z1, z2, torch.tensor([3, 3])),
        lambda z1, z2: ref_supervised_ntxent(z1, z2, torch.tensor([3, 3]), 0.5),
        [z1, z2],
        dtype,
    )


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_one_sample_per_class_closed_forms(tau):
    # u_i = e_i, W = I (scaled: weights are raw): every matching logit is 1/τ, every other 0.
    n = 5
    u, w = torch.eye(n, dtype=torch.float64), 7.0 * torch.eye(n, dtype=torch.float64)
    labels = torch.arange(n)
    e = math.exp(1 / tau)
    expected_ce = -math.log(e / (e + n - 1))
    assert normface(u, labels, w, tau).item() == pytest.approx(expected_ce, rel=1e-12)
    assert ntce(u, labels, w, tau).item() == pytest.approx(expected_ce, rel=1e-12)
    assert nonl(u, labels, w, tau).item() == pytest.approx(-1 / tau + math.log(n - 1), rel=1e-12)
    assert nonl(u, labels, w, tau, bidirectional=True).item() == pytest.approx(
        -1 / tau + math.log(2 * (n - 1)), rel=1e-12
    )
    expected_sup = -math.log(e / (e + n - 1 + 1e-8))
    assert supervised_ntxent(u, u, labels, tau).item() == pytest.approx(expected_sup, rel=1e-12)


def test_ntce_counts_same_class_candidates_but_nonl_does_not():
    u = torch.eye(3, dtype=torch.float64)[[0, 0, 1]]  # two identical class-0 samples
    w = torch.eye(3, dtype=torch.float64)[:2]
    labels = torch.tensor([0, 0, 1])
    tau = 0.5
    e = math.exp(1 / tau)
    # class 0 rows: denominators 2e + 1 (ntce) and 1 (nonl); class 1 row: e + 2 and 2.
    assert ntce(u, labels, w, tau).item() == pytest.approx((2 * math.log((2 * e + 1) / e) + math.log((e + 2) / e)) / 3)
    assert nonl(u, labels, w, tau).item() == pytest.approx((2 * (-1 / tau) + (-1 / tau + math.log(2))) / 3)


def test_nonl_single_class_batch_raises():
    u, w = unit(4, 3, 16), raw(3, 3, 17)
    with pytest.raises(ValueError, match="NONL needs ≥ 2 classes in the batch"):
        nonl(u, torch.tensor([1, 1, 1, 1]), w, 0.1)
    with validation(False):  # the check costs a host sync; without it the loss is the official −∞
        assert not torch.isfinite(nonl(u, torch.tensor([1, 1, 1, 1]), w, 0.1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonl_bidirectional_works_with_one_class(dtype):
    labels = torch.tensor([2, 2, 2])
    u, w = unit(3, 4, 18), raw(3, 4, 19)
    out = assert_matches_reference(
        lambda u, w: nonl(u, labels, w, 0.1, bidirectional=True),
        lambda u, w: ref_nonl(u, labels, w, 0.1, True),
        [u, w],
        dtype,
    )
    assert torch.isfinite(out)
    with pytest.raises(ValueError, match="NONL needs"):  # a single class weight leaves nothing to contrast with
        nonl(u, torch.tensor([0, 0, 0]), w[:1], 0.1, bidirectional=True)


def test_nonl_may_be_negative():
    u = torch.eye(4, dtype=torch.float64)
    assert nonl(u, torch.arange(4), torch.eye(4, dtype=torch.float64), 0.1).item() < 0


def test_clop_all_unlabeled_is_zero_with_graph():
    z1, z2, a = leaf(unit(4, 3, 20)), leaf(unit(4, 3, 21)), unit(2, 3, 22)
    out = clop(z1, z2, torch.full((4,), -1), a)
    assert out.item() == 0.0
    assert out.requires_grad and out.grad_fn is not None
    g1, g2 = torch.autograd.grad(out, [z1, z2])
    assert torch.count_nonzero(g1) == 0 and torch.count_nonzero(g2) == 0


def test_clop_known_values():
    a = torch.eye(3)[:2]
    z = a[[0, 1, 1]]
    labels = torch.tensor([0, 1, 1])
    assert clop(z, z, labels, a).item() == 0.0  # aligned with its anchor
    assert clop(z, -z, labels, a, lam=2.5).item() == pytest.approx(2.5)  # 1 − ½(1 − 1) = 1, times λ
    assert clop(-z, -z, labels, a).item() == pytest.approx(2.0)
    # unlabeled rows do not enter the mean, whatever their embeddings
    assert clop(torch.cat([z, -z]), torch.cat([z, -z]), torch.tensor([0, 1, 1, -1, -1, -1]), a).item() == 0.0


def test_supervised_ntxent_uses_labels():
    # two labelled rows of the same class: the other row is a positive, so the loss drops below the unlabeled one
    z1 = unit(4, 3, 23)
    z2 = z1.roll(1, dims=0)
    labelled = supervised_ntxent(z1, z2, torch.tensor([0, 0, 0, 0]))
    unlabeled = supervised_ntxent(z1, z2, torch.tensor([-1, -1, -1, -1]))
    assert labelled.item() == pytest.approx(0.0, abs=1e-6)  # every candidate is a positive: −log(S / (S + 1e−8))
    assert unlabeled.item() > labelled.item() + 0.1


def test_class_weights_carry_gradient():
    # weights carry gradient (they are learned), prototypes too when they require it (the method keeps them fixed)
    u, w = leaf(unit(6, 4, 24)), leaf(raw(3, 4, 25))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for fn in (normface, ntce, nonl):
        gu, gw = torch.autograd.grad(fn(u, labels, w, 0.2), [u, w])
        assert gu.abs().sum() > 0 and gw.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_finite_float32(dtype):
    labels = torch.tensor([0, 1, 2, 0, 1, 2, -1, -1])
    u, v = unit(8, 16, 35, torch.float32).to(dtype), unit(8, 16, 36, torch.float32).to(dtype)
    w, a = raw(3, 16, 37).to(dtype), unit(3, 16, 38).to(dtype)
    outs = [
        normface(u[:6], labels[:6], w, 0.1),
        ntce(u[:6], labels[:6], w, 0.1),
        nonl(u[:6], labels[:6], w, 0.1),
        nonl(u[:6], labels[:6], w, 0.1, True),
        clop(u, v, labels, a),
        supervised_ntxent(u, v, labels, 0.2),
    ]
    with validation(False):  # the same bf16 values in float32 are only unit to bf16 precision
        refs = [
            normface(u[:6].float(), labels[:6], w.float(), 0.1),
            ntce(u[:6].float(), labels[:6], w.float(), 0.1),
            nonl(u[:6].float(), labels[:6], w.float(), 0.1),
            nonl(u[:6].float(), labels[:6], w.float(), 0.1, True),
            clop(u.float(), v.float(), labels, a.float()),
            supervised_ntxent(u.float(), v.float(), labels, 0.2),
        ]
    for out, ref in zip(outs, refs):
        assert out.dtype == torch.float32 and torch.isfinite(out)
        torch.testing.assert_close(out, ref)  # the same values, computed in float32


def test_autocast_does_not_lower_precision():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, -1, -1])
    u, v = unit(8, 32, 39, torch.float32), unit(8, 32, 40, torch.float32)
    w, a = raw(3, 32, 41).float(), unit(3, 32, 42, torch.float32)
    calls = [
        lambda: normface(u[:6], labels[:6], w, 0.1),
        lambda: ntce(u[:6], labels[:6], w, 0.1),
        lambda: nonl(u[:6], labels[:6], w, 0.1, True),
        lambda: clop(u, v, labels, a),
        lambda: supervised_ntxent(u, v, labels, 0.1),
    ]
    for call in calls:
        expected = call()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = call()
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_naming_the_problem():
    u, w, labels = unit(4, 3, 26), raw(3, 3, 27), torch.tensor([0, 1, 2, 0])
    for fn in (normface, ntce, nonl):
        with pytest.raises(ValueError, match="`weights` has dimension 5"):
            fn(u, labels, raw(3, 5, 0), 0.2)
        with pytest.raises(ValueError, match="label 3 is outside the 3"):
            fn(u, torch.tensor([0, 1, 3, 0]), w, 0.2)
        with pytest.raises(ValueError, match="label -1 is invalid"):
            fn(u, torch.tensor([0, 1, -1, 0]), w, 0.2)
        with pytest.raises(ValueError, match="`labels` must be a 1-D tensor with one entry per row"):
            fn(u, labels[:3], w, 0.2)
        with pytest.raises(ValueError, match="rows of `u` must have unit L2 norm"):
            fn(2 * u, labels, w, 0.2)
        with pytest.raises(ValueError, match="`u` contains NaN"):
            fn(torch.where(torch.arange(4)[:, None] == 1, float("nan"), u), labels, w, 0.2)
        with pytest.raises(ValueError, match="`weights` contains NaN"):
            fn(u, labels, torch.full((3, 3), float("nan")), 0.2)
        with pytest.raises(ValueError, match="`temperature` must be a positive"):
            fn(u, labels, w, 0.0)
        with pytest.raises(ValueError, match="`u` must be a 2-D tensor"):
            fn(u[0], labels, w, 0.2)
        with pytest.raises(ValueError, match="`u` has no rows"):
            fn(u[:0], labels[:0], w, 0.2)


def test_clop_and_supervised_ntxent_bad_inputs():
    z1, z2, a = unit(4, 3, 28), unit(4, 3, 29), unit(2, 3, 30)
    labels = torch.tensor([0, 1, -1, 0])
    with pytest.raises(ValueError, match="label -2 is invalid"):
        clop(z1, z2, torch.tensor([0, -2, -1, 0]), a)
    with pytest.raises(ValueError, match="label 2 is outside the 2 prototypes"):
        clop(z1, z2, torch.tensor([0, 2, -1, 0]), a)
    with pytest.raises(ValueError, match="`z2` has 3 rows but 4"):
        clop(z1, z2[:3], labels, a)
    with pytest.raises(ValueError, match="`prototypes` has dimension 4"):
        clop(z1, z2, labels, unit(2, 4, 0))
    with pytest.raises(ValueError, match="rows of `prototypes` must have unit L2 norm"):
        clop(z1, z2, labels, 3 * a)
    with pytest.raises(ValueError, match="rows of `z2` must have unit L2 norm"):
        clop(z1, z2 * 0.5, labels, a)
    with pytest.raises(ValueError, match="`labels` must be an integer tensor"):
        clop(z1, z2, labels.float(), a)
    with pytest.raises(ValueError, match="label -3 is invalid"):
        supervised_ntxent(z1, z2, torch.tensor([0, -3, -1, 0]))
    with pytest.raises(ValueError, match="`z2` has dimension 2"):
        supervised_ntxent(z1, unit(4, 2, 0), labels)
    with pytest.raises(ValueError, match="`z1` contains NaN"):
        supervised_ntxent(torch.full((4, 3), float("nan")), z2, labels)
    with pytest.raises(ValueError, match="`temperature` must be a positive"):
        supervised_ntxent(z1, z2, labels, temperature=-0.5)


def test_modules_match_functions():
    u, w, labels = unit(6, 4, 31), raw(3, 4, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    z2, a = unit(6, 4, 33), unit(3, 4, 34)
    assert torch.equal(NormFaceLoss(0.2)(u, labels, w), normface(u, labels, w, 0.2))
    assert torch.equal(NTCELoss(0.2)(u, labels, w), ntce(u, labels, w, 0.2))
    assert torch.equal(NONLLoss(0.1, bidirectional=True)(u, labels, w), nonl(u, labels, w, 0.1, True))
    assert torch.equal(CLOPLoss(lam=0.5)(u, z2, labels, a), clop(u, z2, labels, a, lam=0.5))
    assert torch.equal(SupervisedNTXentLoss(0.3)(u, z2, labels), supervised_ntxent(u, z2, labels, 0.3))
    assert "bidirectional=True" in repr(NONLLoss(0.1, bidirectional=True))
