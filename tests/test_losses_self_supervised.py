"""NT-Xent, MoCo InfoNCE, Sy-CON/PNR and CaSSLe distillation against slow per-sample references."""

import math

import pytest
import torch

from loss_testing import DTYPES, unit
from protosphere.losses._checks import validation
from protosphere.losses.self_supervised import (
    CaSSLeDistillLoss,
    MoCoInfoNCELoss,
    NTXentLoss,
    PNRMoCoLoss,
    PNRSimCLRLoss,
    cassle_distill,
    moco_infonce,
    nt_xent,
    pnr_moco,
    pnr_simclr,
)

# float64 is held tighter here than in loss_testing.TOL (these references sum in the same order)
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def leaf(x):
    return x.detach().clone().requires_grad_(True)


def assert_matches_reference(fn, ref, inputs, dtype, detached=()):
    """fn on `inputs` in `dtype` vs the float64 reference on the same values.

    Every input requires grad; the value and the gradients of the inputs not in `detached` must match the reference,
    and the inputs in `detached` (indices) must receive no gradient at all.
    """
    cast = [leaf(x.to(dtype)) for x in inputs]
    out = fn(*cast)
    grads = torch.autograd.grad(out, cast, allow_unused=True)
    ref_inputs = [leaf(x.detach().double()) if i not in detached else x.detach().double() for i, x in enumerate(cast)]
    ref_out = ref(*ref_inputs)
    live = [i for i in range(len(cast)) if i not in detached]
    ref_grads = torch.autograd.grad(ref_out, [ref_inputs[i] for i in live])
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref_out, **TOL[dtype])
    for i, rg in zip(live, ref_grads):
        assert grads[i] is not None and grads[i].dtype == dtype and torch.isfinite(grads[i]).all()
        torch.testing.assert_close(grads[i].double(), rg, **TOL[dtype])
    for i in detached:
        assert grads[i] is None, f"input {i} must be detached inside the loss"
    return out


# ----------------------------------------------------------------------------- slow references (float64, loops)


def ref_nt_xent(z1, z2, tau):
    z = torch.cat([z1, z2])
    n, b = z.shape[0], z1.shape[0]
    total = 0
    for i in range(n):
        pos = (i + b) % n
        den = sum(torch.exp(torch.dot(z[i], z[j]) / tau) for j in range(n) if j != i)
        total = total - torch.log(torch.exp(torch.dot(z[i], z[pos]) / tau) / den)
    return total / n


def ref_infonce(q, k, queue, tau):
    total = 0
    for i in range(q.shape[0]):
        e_pos = torch.exp(torch.dot(q[i], k[i]) / tau)
        den = e_pos + sum(torch.exp(torch.dot(q[i], queue[m]) / tau) for m in range(queue.shape[0]))
        total = total - torch.log(e_pos / den)
    return total / q.shape[0]


def ref_pnr_moco(q, k, p, f, negatives, tau, tau_d):
    return ref_infonce(q, k, negatives, tau) + ref_infonce(p, f, negatives, tau_d)


def ref_pnr_simclr(z1, z2, p1, p2, f1, f2, tau):
    z, p, f = torch.cat([z1, z2]), torch.cat([p1, p2]), torch.cat([f1, f2])
    n, b = z.shape[0], z1.shape[0]
    plasticity, stability = 0, 0
    for i in range(n):
        den = sum(
            torch.exp(torch.dot(z[i], z[j]) / tau) + torch.exp(torch.dot(z[i], f[j]) / tau) for j in range(n) if j != i
        )
        plasticity = plasticity - (torch.dot(z[i], z[(i + b) % n]) / tau - torch.log(den))
        den = sum(
            torch.exp(torch.dot(p[i], f[j]) / tau) + torch.exp(torch.dot(p[i], z[j]) / tau) for j in range(n) if j != i
        )
        stability = stability - (torch.dot(p[i], f[i]) / tau - torch.log(den))
    return plasticity / n + stability / n


def ref_cassle(p, f, tau):
    def d(a, b):
        total = 0
        for i in range(a.shape[0]):
            den = sum(torch.exp(torch.dot(a[i], b[j]) / tau) for j in range(b.shape[0]))
            total = total - torch.log(torch.exp(torch.dot(a[i], b[i]) / tau) / den)
        return total / a.shape[0]

    return 0.5 * (d(p, f) + d(f, p))


# ----------------------------------------------------------------------------- value and gradient vs reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b", [1, 5])
def test_nt_xent_matches_reference(dtype, b):
    assert_matches_reference(
        lambda z1, z2: nt_xent(z1, z2, 0.2),
        lambda z1, z2: ref_nt_xent(z1, z2, 0.2),
        [unit(b, 6, 0), unit(b, 6, 1)],
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [0, 1, 7])
def test_moco_infonce_matches_reference(dtype, m):
    assert_matches_reference(
        lambda q, k, queue: moco_infonce(q, k, queue, 0.2),
        lambda q, k, queue: ref_infonce(q, k, queue, 0.2),
        [unit(4, 6, 2), unit(4, 6, 3), unit(m, 6, 4)],
        dtype,
        detached=(1, 2),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("taus", [(0.2, 0.2), (0.1, 0.3)])
def test_pnr_moco_matches_reference(dtype, taus):
    inputs = [unit(4, 6, s) for s in range(5, 9)] + [unit(6, 6, 9)]
    assert_matches_reference(
        lambda q, k, p, f, neg: pnr_moco(q, k, p, f, neg, *taus),
        lambda q, k, p, f, neg: ref_pnr_moco(q, k, p, f, neg, *taus),
        inputs,
        dtype,
        detached=(1, 3, 4),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b", [1, 4])
def test_pnr_simclr_matches_reference(dtype, b):
    inputs = [unit(b, 6, s) for s in range(10, 16)]
    assert_matches_reference(
        lambda *x: pnr_simclr(*x, temperature=0.2), lambda *x: ref_pnr_simclr(*x, 0.2), inputs, dtype, detached=(4, 5)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 8])
def test_cassle_distill_matches_reference(dtype, n):
    assert_matches_reference(
        lambda p, f: cassle_distill(p, f, 0.2),
        lambda p, f: ref_cassle(p, f, 0.2),
        [unit(n, 6, 16), unit(n, 6, 17)],
        dtype,
        detached=(1,),
    )


# ----------------------------------------------------------------------------- known values and edge cases


@pytest.mark.parametrize("tau", [0.1, 0.5])
@pytest.mark.parametrize("b", [1, 3])
def test_nt_xent_closed_forms(tau, b):
    e = torch.eye(2 * b, dtype=torch.float64)
    # identical views of orthogonal images: positive logit 1/τ, the 2B−2 others 0
    assert nt_xent(e[:b], e[:b], tau).item() == pytest.approx(-1 / tau + math.log(math.exp(1 / tau) + 2 * b - 2))
    # all 2B rows mutually orthogonal: every logit 0, loss log(2B − 1)
    assert nt_xent(e[:b], e[b:], tau).item() == pytest.approx(math.log(2 * b - 1), abs=1e-12)


def test_nt_xent_single_pair_is_zero():
    # B = 1 (N = 2): the positive is the only candidate, so −log softmax = 0 whatever the embeddings
    z1, z2 = unit(1, 4, 18), unit(1, 4, 19)
    assert nt_xent(z1, z2).item() == pytest.approx(0.0, abs=1e-12)


def test_moco_empty_queue_is_zero():
    q, k = leaf(unit(3, 4, 20)), unit(3, 4, 21)
    out = moco_infonce(q, k, torch.empty(0, 4, dtype=torch.float64))
    assert out.item() == 0.0 and out.requires_grad


def test_moco_known_value():
    # q = k, queue orthogonal to every query: CE = −log(e^{1/τ} / (e^{1/τ} + M))
    e = torch.eye(6, dtype=torch.float64)
    tau, m = 0.2, 3
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + m))
    assert moco_infonce(e[:2], e[:2], e[2 : 2 + m], tau).item() == pytest.approx(expected)


def test_pnr_moco_is_two_infonce_terms():
    q, k, p, f, neg = unit(5, 8, 22), unit(5, 8, 23), unit(5, 8, 24), unit(5, 8, 25), unit(9, 8, 26)
    expected = moco_infonce(q, k, neg, 0.2) + moco_infonce(p, f, neg, 0.4)
    torch.testing.assert_close(pnr_moco(q, k, p, f, neg, 0.2, 0.4), expected)


def test_pnr_simclr_stability_positive_is_not_in_its_denominator():
    # p = f: each stability positive p_i·f_i = 1/τ while its denominator excludes it, so the term goes below 0
    b, tau = 2, 0.2
    e = torch.eye(8, dtype=torch.float64)
    z1, z2, f1, f2 = e[0:2], e[2:4], e[4:6], e[6:8]  # all mutually orthogonal
    out = pnr_simclr(z1, z2, f1, f2, f1, f2, tau)
    n = 2 * b
    plasticity = math.log(2 * (n - 1))  # positive logit 0, 2(n−1) zero logits
    stability = -1 / tau + math.log(2 * (n - 1))
    assert out.item() == pytest.approx(plasticity + stability)
    assert stability < 0


@pytest.mark.parametrize("tau", [0.1, 0.2])
def test_cassle_closed_form(tau):
    # p = f orthonormal: both directions give −log(e^{1/τ} / (e^{1/τ} + 2B − 1))
    p = torch.eye(6, dtype=torch.float64)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 5))
    assert cassle_distill(p, p.clone(), tau).item() == pytest.approx(expected)


def test_cassle_is_symmetric_in_value():
    p, f = unit(6, 5, 27), unit(6, 5, 28)
    torch.testing.assert_close(cassle_distill(p, f), cassle_distill(f, p))
    assert not torch.allclose(cassle_distill(p, f), -torch.log_softmax(p @ f.T / 0.2, 1).diagonal().mean())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_finite_float32(dtype):
    x = [unit(4, 16, s, torch.float32) for s in range(30, 36)]
    low = [t.to(dtype) for t in x]
    outs = [nt_xent(*low[:2]), moco_infonce(*low[:3]), pnr_moco(*low[:5]), pnr_simclr(*low), cassle_distill(*low[:2])]
    with validation(False):  # the rounded values are only unit to low precision
        up = [t.float() for t in low]
        refs = [nt_xent(*up[:2]), moco_infonce(*up[:3]), pnr_moco(*up[:5]), pnr_simclr(*up), cassle_distill(*up[:2])]
    for out, ref in zip(outs, refs):
        assert out.dtype == torch.float32 and torch.isfinite(out)
        torch.testing.assert_close(out, ref)


def test_mixed_precision_queue():
    q, k = unit(4, 8, 36, torch.float32), unit(4, 8, 37, torch.float32)
    queue = unit(10, 8, 38, torch.float32)
    out = moco_infonce(q.half(), k.bfloat16(), queue)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_autocast_does_not_lower_precision():
    x = [unit(8, 32, s, torch.float32) for s in range(47, 53)]
    calls = [
        lambda: nt_xent(*x[:2], temperature=0.1),
        lambda: moco_infonce(*x[:3], temperature=0.1),
        lambda: pnr_moco(*x[:5], temperature=0.1, distill_temperature=0.1),
        lambda: pnr_simclr(*x, temperature=0.1),
        lambda: cassle_distill(*x[:2], temperature=0.1),
    ]
    for call in calls:
        expected = call()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = call()
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_naming_the_problem():
    a, b = unit(4, 3, 39), unit(4, 3, 40)
    nan = torch.where(torch.arange(4)[:, None] == 2, float("nan"), a)
    with pytest.raises(ValueError, match="nt_xent: `z2` has 3 rows but 4"):
        nt_xent(a, b[:3])
    with pytest.raises(ValueError, match="nt_xent: `z2` has dimension 2 but 3"):
        nt_xent(a, unit(4, 2, 0))
    with pytest.raises(ValueError, match="rows of `z1` must have unit L2 norm"):
        nt_xent(2 * a, b)
    with pytest.raises(ValueError, match="`z2` contains NaN"):
        nt_xent(a, nan)
    with pytest.raises(ValueError, match="`z1` has no rows"):
        nt_xent(a[:0], b[:0])
    with pytest.raises(ValueError, match="`temperature` must be a positive"):
        nt_xent(a, b, temperature=0)
    with pytest.raises(ValueError, match="`queue` has dimension 5"):
        moco_infonce(a, b, unit(6, 5, 0))
    with pytest.raises(ValueError, match="rows of `queue` must have unit L2 norm"):
        moco_infonce(a, b, torch.ones(6, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="`k` contains NaN"):
        moco_infonce(a, nan, b)
    with pytest.raises(ValueError, match="`queue` must be a 2-D tensor"):
        moco_infonce(a, b, b[0])
    with pytest.raises(ValueError, match="rows of `f` must have unit L2 norm"):
        pnr_moco(a, b, a, 3 * b, b)
    with pytest.raises(ValueError, match="`p` has 2 rows but 4"):
        pnr_moco(a, b, a[:2], b, b)
    with pytest.raises(ValueError, match="`negatives` contains NaN"):
        pnr_moco(a, b, a, b, nan)
    with pytest.raises(ValueError, match="`distill_temperature` must be a positive"):
        pnr_moco(a, b, a, b, b, distill_temperature=-1)
    with pytest.raises(ValueError, match="`f2` has 2 rows but 4"):
        pnr_simclr(a, b, a, b, a, b[:2])
    with pytest.raises(ValueError, match="rows of `p1` must have unit L2 norm"):
        pnr_simclr(a, b, 0.5 * a, b, a, b)
    with pytest.raises(ValueError, match="`f` has 3 rows but 4"):
        cassle_distill(a, b[:3])
    with pytest.raises(ValueError, match="`p` contains NaN"):
        cassle_distill(nan, b)


def test_modules_match_functions():
    x = [unit(4, 5, s) for s in range(41, 47)]
    assert torch.equal(NTXentLoss(0.3)(*x[:2]), nt_xent(*x[:2], temperature=0.3))
    assert torch.equal(MoCoInfoNCELoss(0.3)(*x[:3]), moco_infonce(*x[:3], temperature=0.3))
    assert torch.equal(PNRMoCoLoss(0.3, 0.1)(*x[:5]), pnr_moco(*x[:5], temperature=0.3, distill_temperature=0.1))
    assert torch.equal(PNRSimCLRLoss(0.3)(*x), pnr_simclr(*x, temperature=0.3))
    assert torch.equal(CaSSLeDistillLoss(0.3)(*x[:2]), cassle_distill(*x[:2], temperature=0.3))
    assert "temperature=0.3" in repr(NTXentLoss(0.3))
