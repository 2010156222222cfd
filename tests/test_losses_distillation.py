"""ird, prd, hsd, hsd_alpha, dr_loss, expert_dr_loss, dr_distill and inverse_frequency_weights against slow per-sample
references."""

import math

import pytest
import torch
import torch.nn.functional as F

from loss_testing import assert_matches, unit
from protosphere.losses import (
    DRLoss,
    HSDLoss,
    IRDLoss,
    PRDLoss,
    dr_distill,
    dr_loss,
    expert_dr_loss,
    hsd,
    hsd_alpha,
    inverse_frequency_weights,
    ird,
    prd,
    validation,
)

# ---------------------------------------------------------------------------------------------------------------------
# slow references: per-sample Python loops in float64, naive exp/log (float64 holds exp(100))
# ---------------------------------------------------------------------------------------------------------------------


def _dot(a, b):
    return (a * b).sum()


def ref_ird(z, z_past, kc, kp):
    z, zp = z.double(), z_past.double().detach()
    n = z.shape[0]
    total = z.sum() * 0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        den_p = sum(torch.exp(_dot(z[i], z[k]) / kc) for k in others)
        den_q = sum(torch.exp(_dot(zp[i], zp[k]) / kp) for k in others)
        for j in others:
            p = torch.exp(_dot(z[i], z[j]) / kc) / den_p
            q = torch.exp(_dot(zp[i], zp[j]) / kp) / den_q
            total = total - q * torch.log(p)
    return total / n


def ref_prd(z, z_past, w, tc, tp):
    z, zp, w = z.double(), z_past.double().detach(), w.double()
    n, k = z.shape[0], w.shape[0]
    total = z.sum() * 0
    for i in range(n):
        den_p = sum(torch.exp(_dot(z[i], w[c]) / tc) for c in range(k))
        den_q = sum(torch.exp(_dot(zp[i], w[c]) / tp) for c in range(k))
        for c in range(k):
            total = total - (
                torch.exp(_dot(zp[i], w[c]) / tp) / den_q * torch.log(torch.exp(_dot(z[i], w[c]) / tc) / den_p)
            )
    return total / n


def ref_dr(z, labels, w, class_weights=None):
    z, w = z.double(), w.double()
    n = z.shape[0]
    if class_weights is None:
        a = [1.0 / n] * n
    else:
        raw = [float(class_weights[int(y)]) for y in labels]
        a = [r / sum(raw) for r in raw]
    total = z.sum() * 0
    for i in range(n):
        total = total + a[i] * (_dot(z[i], w[int(labels[i])]) - 1) ** 2
    return 0.5 * total


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def close_past(z, seed, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(z.double() + noise * torch.randn(z.shape, generator=g, dtype=torch.float64), dim=1)


# ---------------------------------------------------------------------------------------------------------------------
# ird / prd / hsd against the references
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 10])
@pytest.mark.parametrize("temps", [(0.2, 0.01), (0.5, 0.5), (0.1, 0.2)])
def test_ird_matches_reference(dtype, n, temps):
    z = unit(n, 6, seed=n)
    zp = close_past(z, seed=1)
    assert_matches(lambda x: ird(x, zp.to(x.dtype), *temps), lambda x: ref_ird(x, zp, *temps), z, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,k", [(1, 1), (5, 1), (9, 4), (12, 7)])
@pytest.mark.parametrize("temps", [(0.2, 0.1), (0.5, 0.05)])
def test_prd_matches_reference(dtype, n, k, temps):
    z, w = unit(n, 8, seed=n), unit(k, 8, seed=100 + k)
    zp = close_past(z, seed=2)
    assert_matches(
        lambda x: prd(x, zp.to(x.dtype), w.to(x.dtype), *temps), lambda x: ref_prd(x, zp, w, *temps), z, dtype
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_hsd_matches_reference(dtype, alpha):
    z, w = unit(8, 6, seed=3), unit(3, 6, seed=4)
    zp = close_past(z, seed=5)
    assert_matches(
        lambda x: hsd(x, zp.to(x.dtype), w.to(x.dtype), alpha, (0.3, 0.05), (0.2, 0.1)),
        lambda x: alpha * ref_ird(x, zp, 0.3, 0.05) + (1 - alpha) * ref_prd(x, zp, w, 0.2, 0.1),
        z,
        dtype,
    )


def official_hsd(
    features,
    features_past,
    set_prototypes,
    alpha_balance_distillation,
    current_temp,
    past_temp,
    current_temp_sprd,
    past_temp_sprd,
):
    """The authors' HSD (dangtrunganh/samix @ eaea3ef36ddd5c3ebce13535039044a798ebdc03, src/distillation/stab_loss.py:
    ``compute_ird`` lines 4–16, ``compute_sprd`` 19–23, ``compute_distillation_loss`` branch ``hsd`` 43–59),
    transcribed with ``.cuda()`` removed and the frozen model's output passed in."""

    def compute_ird(f, temp):
        sim = torch.div(torch.matmul(f, f.T), temp)
        logits_mask = torch.scatter(torch.ones_like(sim), 1, torch.arange(sim.size(0)).view(-1, 1), 0)
        logits_max, _ = torch.max(sim * logits_mask, dim=1, keepdim=True)
        sim = sim - logits_max.detach()
        rows = sim.size(0)
        return torch.exp(sim[logits_mask.bool()].view(rows, -1)) / torch.exp(
            sim[logits_mask.bool()].view(rows, -1)
        ).sum(dim=1, keepdim=True)

    def compute_sprd(f, prototypes, temp):
        sim = torch.div(torch.matmul(f, prototypes.T), temp)
        logits_max, _ = torch.max(sim, dim=1, keepdim=True)
        sim = sim - logits_max.detach()
        return torch.exp(sim) / torch.exp(sim).sum(dim=1, keepdim=True)

    logits1 = compute_ird(features, current_temp)
    logits1_proto = compute_sprd(features, set_prototypes, current_temp_sprd)
    with torch.no_grad():
        logits2 = compute_ird(features_past, past_temp)
        logits2_proto = compute_sprd(features_past, set_prototypes, past_temp_sprd)
    return (1 - alpha_balance_distillation) * (-logits2 * torch.log(logits1)).sum(
        1
    ).mean() + alpha_balance_distillation * (-logits2_proto * torch.log(logits1_proto)).sum(1).mean()


@pytest.mark.parametrize("alpha", [1.0, 0.9, 0.5, 0.0])
@pytest.mark.parametrize("seen", [4, 10])
def test_hsd_equals_the_authors_code(alpha, seen):
    """Value and gradient equal the authors' code, with their temperatures (IRD 0.2/0.01, S-PRD 0.2/0.1), the
    prototypes of every seen class and their alpha_balance_distillation = 1 − α."""
    z, w = unit(24, 16, seed=seen), unit(10, 16, seed=7)[:seen]
    zp = close_past(z, seed=5)
    zz = z.clone().requires_grad_(True)
    ours = hsd(zz, zp, w, alpha)
    (g_ours,) = torch.autograd.grad(ours, zz)
    zz = z.clone().requires_grad_(True)
    theirs = official_hsd(zz, zp, w, 1 - alpha, 0.2, 0.01, 0.2, 0.1)
    (g_theirs,) = torch.autograd.grad(theirs, zz)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-8, atol=1e-11)


def test_hsd_endpoints_equal_ird_and_prd():
    z, w = unit(10, 5, seed=1), unit(4, 5, seed=2)
    zp = close_past(z, seed=3)
    assert torch.equal(hsd(z, zp, w, 1.0), ird(z, zp, 0.2, 0.01))
    assert torch.equal(hsd(z, zp, w, 0.0), prd(z, zp, w, 0.2, 0.1))
    mixed = hsd(z, zp, w, torch.tensor(0.4, dtype=torch.float64))
    torch.testing.assert_close(mixed, 0.4 * ird(z, zp) + 0.6 * prd(z, zp, w), rtol=1e-12, atol=0)


def test_ird_with_same_model_is_the_entropy():
    z = unit(9, 4, seed=7)
    p = torch.softmax((z @ z.T / 0.3).masked_fill(torch.eye(9, dtype=torch.bool), float("-inf")), dim=1)
    entropy = -(p * torch.log(p).masked_fill(torch.eye(9, dtype=torch.bool), 0)).sum(1).mean()
    torch.testing.assert_close(ird(z, z, 0.3, 0.3), entropy, rtol=1e-12, atol=1e-12)
    # Gibbs: a different past model only raises the cross-entropy above the target's entropy
    assert ird(z, close_past(z, seed=1), 0.3, 0.3) > ird(close_past(z, seed=1), close_past(z, seed=1), 0.3, 0.3)


def test_ird_and_prd_do_not_backpropagate_into_the_past():
    z, w = unit(6, 4, seed=1).requires_grad_(True), unit(3, 4, seed=2).requires_grad_(True)
    zp = close_past(z.detach(), seed=4).requires_grad_(True)
    for value in (ird(z, zp), prd(z, zp, w), hsd(z, zp, w, 0.5)):
        gz, gp, gw = torch.autograd.grad(value, (z, zp, w), allow_unused=True)
        assert gz is not None and torch.isfinite(gz).all() and gz.abs().sum() > 0
        assert gp is None and gw is None


@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
def test_low_precision_input_returns_float32(low):
    z, w = unit(64, 16, seed=0).to(low), unit(5, 16, seed=1).to(low)
    zp = close_past(z.double(), seed=2).to(low)
    labels = torch.arange(64) % 5
    with validation(False):
        for value in (
            ird(z, zp),
            prd(z, zp, w),
            hsd(z, zp, w, 0.5),
            dr_loss(z, labels, w),
            dr_loss(z, labels, w, inverse_frequency_weights(labels, 5)),
        ):
            assert value.dtype == torch.float32 and torch.isfinite(value)


def test_autocast_does_not_lower_precision():
    z, w = unit(32, 8, seed=0, dtype=torch.float32), unit(4, 8, seed=1, dtype=torch.float32)
    zp = close_past(z, seed=2).float()
    plain = (ird(z, zp), prd(z, zp, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = (ird(z, zp), prd(z, zp, w))
    for a, b in zip(plain, auto):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# hsd_alpha schedules
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_hsd_alpha_endpoints(schedule):
    assert hsd_alpha(0, 11, schedule) == 1.0
    assert hsd_alpha(10, 11, schedule) == pytest.approx(0.0, abs=1e-15)
    assert hsd_alpha(5, 11, schedule) == pytest.approx(0.5)
    assert hsd_alpha(0, 1, schedule) == 1.0  # S = 1
    values = [hsd_alpha(s, 11, schedule) for s in range(11)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_hsd_alpha_shapes():
    assert hsd_alpha(3, 11, "linear") == pytest.approx(0.7)
    assert hsd_alpha(3, 11, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    assert hsd_alpha(0, 5, "constant", alpha0=0.3) == 0.3
    assert hsd_alpha(4, 5, "constant", alpha0=0.3) == 0.3
    assert hsd_alpha(2, 5, "constant") == 1.0


def official_alpha_balance(epoch, epochs, main_mark, second_mark):
    """dangtrunganh/samix @ eaea3ef, main_train.py lines 96–105 (epoch = 1…epochs, marks in epochs)."""
    if epoch < main_mark:
        return 0
    elif main_mark <= epoch < second_mark:
        return (epoch - main_mark) / epochs
    return (second_mark - main_mark) / epochs


@pytest.mark.parametrize("epochs,marks", [(100, (30, 80)), (100, (40, 80)), (10, (3, 8)), (50, (15, 40))])
def test_hsd_alpha_official_schedule_equals_the_authors_code(epochs, marks):
    steps_per_epoch = 7
    total = epochs * steps_per_epoch
    fractions = (marks[0] / epochs, marks[1] / epochs)
    for step in range(total):
        epoch = step // steps_per_epoch + 1
        expected = 1 - official_alpha_balance(epoch, epochs, *marks)
        assert hsd_alpha(step, total, "official", epochs=epochs, marks=fractions) == pytest.approx(expected, abs=1e-12)
    assert hsd_alpha(0, total, epochs=epochs, marks=fractions) == 1.0  # official is the default
    assert hsd_alpha(total - 1, total, epochs=epochs, marks=fractions) == pytest.approx(1 - fractions[1] + fractions[0])


def test_hsd_alpha_official_on_the_cpu_schedule():
    # 5 epochs, marks 0.3/0.8: epoch 1 → 1, epoch 2 → 1 − 0.5/5, epoch 3 → 1 − 1.5/5, epochs 4–5 → 0.5
    values = [hsd_alpha(s, 50, "official", epochs=5) for s in range(0, 50, 10)]
    assert values == pytest.approx([1.0, 0.9, 0.7, 0.5, 0.5])


@pytest.mark.parametrize(
    "args",
    [
        (0, 10, "exp"),
        (10, 10, "linear"),
        (-1, 10, "linear"),
        (0, 0, "linear"),
        (0, 3, "constant", 1.5),
        (0, 10, "official", 1.0, 0),
        (0, 10, "official", 1.0, 2, (0.8, 0.3)),
    ],
)
def test_hsd_alpha_bad_arguments(args):
    with pytest.raises(ValueError):
        hsd_alpha(*args)


# ---------------------------------------------------------------------------------------------------------------------
# dr_loss and inverse_frequency_weights
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("labels", [[0, 1, 2, 1, 0, 0, 3], [2, 2, 2], [4]])
def test_dr_loss_matches_reference(dtype, weighted, labels):
    labels = torch.tensor(labels)
    w = unit(5, 6, seed=1)
    z = unit(len(labels), 6, seed=2)
    cw = inverse_frequency_weights(labels, 5).double() if weighted else None
    assert_matches(lambda x: dr_loss(x, labels, w.to(x.dtype), cw), lambda x: ref_dr(x, labels, w, cw), z, dtype)


def test_dr_loss_arbitrary_class_weights_and_alignment():
    labels = torch.tensor([0, 1, 1, 2])
    w = unit(3, 4, seed=1)
    z = unit(4, 4, seed=2)
    cw = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(dr_loss(z, labels, w, cw), ref_dr(z, labels, w, cw))
    assert dr_loss(w[labels], labels, w).item() == pytest.approx(0.0, abs=1e-12)  # aligned with the targets
    assert dr_loss(-w[labels], labels, w).item() == pytest.approx(2.0)  # opposite: ½ (−1 − 1)²


def test_inverse_frequency_weights():
    labels = torch.tensor([0, 0, 0, 2, 3, 3])
    c = inverse_frequency_weights(labels, 5)
    assert c.dtype == torch.float32
    torch.testing.assert_close(c, torch.tensor([1 / 3, 0.0, 1.0, 0.5, 0.0]))
    # with c_k = 1/N_k every present class gets the same total weight
    a = c[labels] / c[labels].sum()
    totals = torch.zeros(5).index_add_(0, labels, a)
    torch.testing.assert_close(totals[[0, 2, 3]], torch.full((3,), 1 / 3))


# ---------------------------------------------------------------------------------------------------------------------
# NCT's expert DR term and DR distillation
# ---------------------------------------------------------------------------------------------------------------------


def ref_expert_dr(expert_z, labels, expert_of_class, w):
    """Per row: the row's own expert (the one of its class), its DR term; the mean over rows."""
    terms = []
    for i, y in enumerate(labels.tolist()):
        own = expert_z[i, int(expert_of_class[y])].double()
        terms.append(0.5 * (sum(own[j] * w[y, j].double() for j in range(own.shape[0])) - 1) ** 2)
    return sum(terms) / len(terms)


def ref_dr_distill(z, zp, rows):
    total, count = 0.0, 0.0
    for i in range(z.shape[0]):
        m = 1.0 if rows is None else float(rows[i])
        total = total + m * 0.5 * (sum(z[i, j] * zp[i, j].double() for j in range(z.shape[1])) - 1) ** 2
        count += m
    return total / max(1.0, count)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_expert_dr_loss_matches_reference(dtype):
    labels = torch.tensor([0, 3, 1, 2, 3, 0])
    expert_of_class = torch.tensor([0, 0, 1, 2])  # task 0: classes 0, 1; task 1: class 2; task 2: class 3
    w = unit(4, 5, seed=1)
    z = unit(6 * 3, 5, seed=2).reshape(6, 3, 5)

    def flat(fn):
        return lambda x: fn(x.reshape(6, 3, 5))

    assert_matches(
        flat(lambda x: expert_dr_loss(x, labels, expert_of_class, w.to(x.dtype))),
        flat(lambda x: ref_expert_dr(x, labels, expert_of_class, w)),
        z.reshape(6, 15),
        dtype,
    )
    # only each row's own expert enters: changing another expert's output changes nothing
    other = z.clone()
    other[0, 1] = -other[0, 1]
    assert torch.equal(expert_dr_loss(other, labels, expert_of_class, w), expert_dr_loss(z, labels, expert_of_class, w))
    # with one expert it is the DR loss
    torch.testing.assert_close(
        expert_dr_loss(z[:, :1], labels, torch.zeros(4, dtype=torch.long), w), dr_loss(z[:, 0], labels, w)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [None, [1, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
def test_dr_distill_matches_reference(dtype, rows):
    z, zp = unit(5, 4, seed=3), unit(5, 4, seed=4)
    mask = None if rows is None else torch.tensor(rows, dtype=torch.bool)
    if rows is not None and not any(rows):
        assert dr_distill(z.to(dtype), zp.to(dtype), mask).item() == 0.0  # no distilled row
        return
    assert_matches(lambda x: dr_distill(x, zp.to(x.dtype), mask), lambda x: ref_dr_distill(x, zp, mask), z, dtype)


def test_dr_distill_is_zero_on_the_past_output_and_never_backpropagates_into_it():
    z = unit(4, 3, seed=5)
    assert dr_distill(z, z).item() == pytest.approx(0.0, abs=1e-12)
    assert dr_distill(z, -z).item() == pytest.approx(2.0)  # opposite: ½ (−1 − 1)²
    zp = unit(4, 3, seed=6).requires_grad_(True)
    dr_distill(z.clone().requires_grad_(True), zp).backward()
    assert zp.grad is None


# ---------------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------------


def _bad_calls():
    z, w = unit(4, 3, seed=0), unit(2, 3, seed=1)
    zp = close_past(z, seed=1)
    nan = z.clone()
    nan[0, 0] = float("nan")
    labels = torch.tensor([0, 1, 1, 0])
    return [
        ("ird rows", lambda: ird(z, zp[:3]), "rows"),
        ("ird dim", lambda: ird(z, unit(4, 5, seed=3)), "dimension"),
        ("ird one row", lambda: ird(z[:1], zp[:1]), "at least 2"),
        ("ird non-unit", lambda: ird(z, zp * 2), "unit L2 norm"),
        ("ird nan", lambda: ird(nan, zp), "NaN"),
        ("ird temperature", lambda: ird(z, zp, past_temperature=-0.1), "past_temperature"),
        ("prd empty", lambda: prd(z, zp, w[:0]), "empty"),
        ("prd proto dim", lambda: prd(z, zp, unit(2, 4, seed=3)), "dimension"),
        ("prd proto non-unit", lambda: prd(z, zp, w * 0.3), "unit L2 norm"),
        ("hsd alpha", lambda: hsd(z, zp, w, 1.5), "alpha"),
        ("hsd empty", lambda: hsd(z, zp, w[:0], 0.5), "empty"),
        ("hsd rows", lambda: hsd(z, zp[:2], w, 0.5), "rows"),
        ("dr label outside", lambda: dr_loss(z, torch.tensor([0, 1, 2, 0]), w), "outside the 2"),
        ("dr labels length", lambda: dr_loss(z, labels[:3], w), "labels"),
        ("dr non-unit", lambda: dr_loss(z * 2, labels, w), "unit L2 norm"),
        ("dr nan", lambda: dr_loss(nan, labels, w), "NaN"),
        ("dr weight shape", lambda: dr_loss(z, labels, w, torch.ones(3)), "class_weights"),
        ("dr weight negative", lambda: dr_loss(z, labels, w, torch.tensor([1.0, -1.0])), "non-negative"),
        ("dr weights zero", lambda: dr_loss(z, labels, w, torch.zeros(2)), "sum to 0"),
        ("expert dr not 3-D", lambda: expert_dr_loss(z, labels, torch.tensor([0, 0]), w), "3-D"),
        ("expert dr expert map", lambda: expert_dr_loss(z[:, None], labels, torch.tensor([0]), w), "expert_of_class"),
        ("expert dr expert outside", lambda: expert_dr_loss(z[:, None], labels, torch.tensor([0, 1]), w), "outside"),
        ("expert dr non-unit", lambda: expert_dr_loss(2 * z[:, None], labels, torch.tensor([0, 0]), w), "unit L2"),
        ("distill rows", lambda: dr_distill(z, zp[:3]), "rows"),
        ("distill non-unit", lambda: dr_distill(z, zp * 2), "unit L2 norm"),
        ("distill mask shape", lambda: dr_distill(z, zp, torch.ones(3)), "mask"),
        ("ifw label outside", lambda: inverse_frequency_weights(torch.tensor([0, 3]), 2), "outside"),
    ]


@pytest.mark.parametrize("case", _bad_calls(), ids=lambda c: c[0])
def test_bad_input_raises_value_error(case):
    _, call, match = case
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------------------------------
# module wrappers (one call shape: loss(z, labels, **extra); the distillation losses ignore labels)
# ---------------------------------------------------------------------------------------------------------------------


def test_wrappers_call_the_functions():
    z, w = unit(6, 4, seed=0), unit(3, 4, seed=1)
    zp = close_past(z, seed=2)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(IRDLoss(0.3, 0.05)(z, z_past=zp), ird(z, zp, 0.3, 0.05))
    assert torch.equal(PRDLoss()(z, z_past=zp, prototypes=w), prd(z, zp, w))
    assert torch.equal(HSDLoss()(z, zp, w, 0.3), hsd(z, zp, w, 0.3))
    assert torch.equal(HSDLoss((0.3, 0.05))(z, z_past=zp, prototypes=w, alpha=0.3), hsd(z, zp, w, 0.3, (0.3, 0.05)))
    assert torch.equal(DRLoss()(z, labels, prototypes=w), dr_loss(z, labels, w))
    assert "past_temperature=0.05" in repr(IRDLoss(0.3, 0.05))
