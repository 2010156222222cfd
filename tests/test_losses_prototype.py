"""prototype_ce (NCT's CE head on the fixed ETF; a trained cosine classifier with normalize_prototypes) against a slow
per-sample reference in float64: value and the gradients of z and of the prototypes."""

import pytest
import torch

from loss_testing import DTYPES, TOL, unit
from protosphere.geometry import simplex_etf
from protosphere.losses import PrototypeCELoss, inverse_frequency_weights, prototype_ce


def ref_prototype_ce(z, labels, prototypes, tau, class_weights=None, normalize=False):
    """Σ_i a_i (log Σ_k exp(z_i·w_k/τ) − z_i·w_{y_i}/τ) / Σ_i a_i, one row and one class at a time."""
    rows = [prototypes[k] for k in range(prototypes.shape[0])]
    if normalize:
        rows = [w / torch.sqrt(sum(w[j] ** 2 for j in range(w.shape[0]))) for w in rows]
    total, weight_sum = 0, 0
    for i in range(z.shape[0]):
        logits = [sum(z[i, j] * rows[k][j] for j in range(z.shape[1])) / tau for k in range(len(rows))]
        y = int(labels[i])
        ce = torch.log(sum(torch.exp(s) for s in logits)) - logits[y]
        a = 1.0 if class_weights is None else float(class_weights[y])
        total, weight_sum = total + a * ce, weight_sum + a
    return total / weight_sum


def assert_matches(fn, ref, inputs, dtype):
    """``fn`` on ``inputs`` in ``dtype`` equals the float64 reference: value and every input's gradient."""
    cast = [x.detach().to(dtype).requires_grad_(True) for x in inputs]
    value = fn(*cast)
    grads = torch.autograd.grad(value, cast)
    exact = [x.detach().double().requires_grad_(True) for x in cast]
    ref_value = ref(*exact)
    ref_grads = torch.autograd.grad(ref_value, exact)
    assert value.dtype == dtype
    torch.testing.assert_close(value.double(), ref_value, **TOL[dtype])
    for grad, ref_grad in zip(grads, ref_grads):
        assert grad.dtype == dtype and torch.isfinite(grad).all()
        torch.testing.assert_close(grad.double(), ref_grad, **TOL[dtype])


LABELS = [[0, 1, 2, 1, 0, 0, 3], [2, 2, 2], [4]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("labels", LABELS)
def test_prototype_ce_on_the_fixed_etf_matches_reference(dtype, weighted, labels):
    labels = torch.tensor(labels)
    etf = simplex_etf(5, 6, seed=1).double()
    cw = inverse_frequency_weights(labels, 5) if weighted else None
    assert_matches(
        lambda z, w: prototype_ce(z, labels, w, 0.1, None if cw is None else cw.to(z.dtype)),
        lambda z, w: ref_prototype_ce(z, labels, w, 0.1, cw),
        [unit(len(labels), 6, seed=2), etf],
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_prototype_ce_with_trained_rows_normalises_them_and_trains_them(dtype, weighted):
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    raw = 3 * torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # not unit rows
    cw = torch.tensor([0.5, 2.0, 1.0, 0.0]) if weighted else None
    assert_matches(
        lambda z, w: prototype_ce(z, labels, w, 0.2, None if cw is None else cw.to(z.dtype), normalize_prototypes=True),
        lambda z, w: ref_prototype_ce(z, labels, w, 0.2, cw, normalize=True),
        [unit(6, 5, seed=4), raw],
        dtype,
    )


def test_prototype_ce_is_normface_when_unweighted_with_trained_rows():
    from protosphere.losses import normface

    labels = torch.tensor([0, 1, 2, 2, 1])
    z, w = unit(5, 4, seed=5), torch.randn(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(prototype_ce(z, labels, w, 0.3, normalize_prototypes=True), normface(z, labels, w, 0.3))


def test_prototype_ce_aligned_features_give_the_lowest_loss():
    etf = simplex_etf(4, 6, seed=0).double()
    labels = torch.tensor([0, 1, 2, 3])
    aligned = prototype_ce(etf[labels], labels, etf, 0.1)
    # z = its own prototype: CE = log(1 + (K−1) exp((−1/(K−1) − 1)/τ))
    expected = torch.log1p(3 * torch.exp(torch.tensor((-1 / 3 - 1) / 0.1, dtype=torch.float64)))
    torch.testing.assert_close(aligned, expected)
    assert aligned < prototype_ce(etf[[1, 2, 3, 0]], labels, etf, 0.1)


def test_prototype_ce_refuses_what_it_cannot_use():
    z, labels, etf = unit(3, 4, seed=0), torch.tensor([0, 1, 2]), simplex_etf(3, 4, seed=0).double()
    with pytest.raises(ValueError, match="rows of `prototypes` must have unit L2 norm"):
        prototype_ce(z, labels, 2 * etf, 0.1)  # raw rows need normalize_prototypes
    with pytest.raises(ValueError, match="rows of `z` must have unit L2 norm"):
        prototype_ce(2 * z, labels, etf, 0.1)
    with pytest.raises(ValueError, match="outside the 3 prototypes"):
        prototype_ce(z, torch.tensor([0, 1, 3]), etf, 0.1)
    with pytest.raises(ValueError, match="`temperature` must be a positive number"):
        prototype_ce(z, labels, etf, 0.0)
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        prototype_ce(z, labels, etf, 0.1, torch.ones(4))
    with pytest.raises(ValueError, match="sum to 0"):
        prototype_ce(z, torch.tensor([0, 0, 1]), etf, 0.1, torch.tensor([0.0, 0.0, 1.0]))


def test_prototype_ce_module_form():
    z, labels, raw = unit(4, 3, seed=1), torch.tensor([0, 1, 1, 0]), torch.randn(2, 3, dtype=torch.float64)
    assert torch.equal(
        PrototypeCELoss(0.2, normalize_prototypes=True)(z, labels, raw),
        prototype_ce(z, labels, raw, 0.2, normalize_prototypes=True),
    )
