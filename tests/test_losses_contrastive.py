"""supcon, asymmetric_supcon and fnc2 against slow per-sample references (float64 Python loops), plus edge cases."""

import math

import pytest
import torch

from protosphere.losses import (
    AsymmetricSupConLoss,
    FNC2Loss,
    SupConLoss,
    asymmetric_supcon,
    fnc2,
    supcon,
    validation,
)
from loss_testing import assert_matches, unit, value_and_grad


# ---------------------------------------------------------------------------------------------------------------------
# slow, obviously-correct references: loops over anchors, plain float64 scalars, naive exp/log (values stay small)
# ---------------------------------------------------------------------------------------------------------------------

def _dot(a, b):
    return (a * b).sum()


def ref_supcon(z, labels, temperature, base_temperature, anchor_on=None):
    """ℓ_i = −(τ/τ_b) mean_{p∈P(i)} [s_ip − log Σ_{a≠i} exp s_ia]; mean over all N; no positive → 0."""
    z = z.double()
    labels = [int(v) for v in labels]
    n = len(labels)
    total = z.sum() * 0
    for i in range(n):
        if anchor_on is not None and not anchor_on[i]:
            continue
        others = [j for j in range(n) if j != i]
        positives = [j for j in others if labels[j] == labels[i]]
        if not positives:
            continue
        log_den = torch.log(sum(torch.exp(_dot(z[i], z[a]) / temperature) for a in others))
        mean_pos = sum(_dot(z[i], z[p]) / temperature - log_den for p in positives) / len(positives)
        total = total - (temperature / base_temperature) * mean_pos
    return total / n


def ref_fnc2(z, labels, prototypes, seen, temperature, gamma, prototype_weight, anchor_mask=None):
    z, w = z.double(), prototypes.double()
    labels = [int(v) for v in labels]
    n = len(labels)
    total = z.sum() * 0
    for i in range(n):
        if anchor_mask is not None and not bool(anchor_mask[i]):
            continue
        others = [j for j in range(n) if j != i]
        den = sum(torch.exp(_dot(z[i], z[a]) / temperature) for a in others) if others else 0
        den = den + sum(torch.exp(_dot(z[i], w[c]) / temperature) for c in seen) if seen else den
        positives = [j for j in others if labels[j] == labels[i]]
        loss_i = z.sum() * 0
        if positives:
            acc = 0
            for j in positives:
                c = torch.exp(_dot(z[i], z[j]) / temperature) / den
                acc = acc + (1 - c) ** gamma * torch.log(c)
            loss_i = loss_i - acc / len(positives)
        if prototype_weight > 0:
            r = torch.exp(_dot(z[i], w[labels[i]]) / temperature) / den
            loss_i = loss_i - prototype_weight * (1 - r) ** gamma * torch.log(r)
        total = total + loss_i
    return total / n


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------

LABEL_PATTERNS = {
    "two_views": torch.tensor([0, 1, 2, 1, 3, 0] * 2),
    "with_singletons": torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4, 5]),
    "one_class": torch.tensor([3] * 7),
    "all_distinct": torch.tensor([0, 1, 2, 3, 4, 5]),
    "n2_same": torch.tensor([1, 1]),
    "n2_diff": torch.tensor([0, 1]),
    "large_ids": torch.tensor([7, 900, 7, 42, 900, 900, 5]),
}



# ---------------------------------------------------------------------------------------------------------------------
# value and gradient against the references
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pattern", list(LABEL_PATTERNS))
@pytest.mark.parametrize("temps", [(0.07, 0.07), (0.5, 0.07), (0.2, 1.0)])
def test_supcon_matches_reference(dtype, pattern, temps):
    labels = LABEL_PATTERNS[pattern]
    z = unit(len(labels), 5, seed=len(labels))
    assert_matches(lambda x: supcon(x, labels, *temps), lambda x: ref_supcon(x, labels, *temps), z, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pattern", ["two_views", "with_singletons", "one_class", "all_distinct", "n2_diff"])
def test_asymmetric_supcon_matches_reference(dtype, pattern):
    labels = LABEL_PATTERNS[pattern]
    current = sorted(set(labels.tolist()))[::2]
    on = [int(v) in current for v in labels]
    z = unit(len(labels), 6, seed=3)
    assert_matches(lambda x: asymmetric_supcon(x, labels, current, 0.5, 0.07),
                   lambda x: ref_supcon(x, labels, 0.5, 0.07, anchor_on=on), z, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pattern", ["two_views", "with_singletons", "one_class", "all_distinct", "n2_same"])
@pytest.mark.parametrize("gamma,weight,seen_kind", [
    (2.0, 1.0, "all"), (0.0, 1.0, "all"), (1.5, 0.5, "superset"), (2.0, 0.0, "partial"), (0.0, 0.0, "none"),
    (3.0, 0.0, "none"),
])
def test_fnc2_matches_reference(dtype, pattern, gamma, weight, seen_kind):
    labels = LABEL_PATTERNS[pattern] % 6
    k = 8
    present = sorted(set(labels.tolist()))
    seen = {"all": present, "superset": sorted(set(present) | {6, 7}), "partial": [6, present[0]],
            "none": []}[seen_kind]
    z = unit(len(labels), 9, seed=11)
    protos = unit(k, 9, seed=12)
    mask = None
    assert_matches(lambda x: fnc2(x, labels, protos.to(x.dtype), seen, 0.5, gamma, weight, mask),
                   lambda x: ref_fnc2(x, labels, protos, seen, 0.5, gamma, weight, mask), z, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_fnc2_anchor_mask_matches_reference(dtype, gamma):
    labels = torch.tensor([0, 1, 1, 2, 3, 3, 0, 2, 4])
    mask = torch.tensor([True, True, True, False, True, False, False, True, False])
    z, protos = unit(9, 6, seed=5), unit(5, 6, seed=6)
    seen = [0, 1, 2, 3, 4]
    assert_matches(lambda x: fnc2(x, labels, protos.to(x.dtype), seen, 0.3, gamma, 0.7, mask),
                   lambda x: ref_fnc2(x, labels, protos, seen, 0.3, gamma, 0.7, mask), z, dtype)


# ---------------------------------------------------------------------------------------------------------------------
# properties from DESIGN §3
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["two_views", "with_singletons", "one_class"])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_fnc2_reduces_to_supcon(pattern, tau):
    labels = LABEL_PATTERNS[pattern]
    z = unit(len(labels), 7, seed=2)
    protos = unit(int(labels.max()) + 1, 7, seed=3)
    a, ga = value_and_grad(lambda x: fnc2(x, labels, protos, [], tau, 0.0, 0.0), z)
    b, gb = value_and_grad(lambda x: supcon(x, labels, temperature=tau, base_temperature=tau), z)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_fnc2_with_anchor_mask_equals_asymmetric_supcon():
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 3, 3, 1, 0])
    current = [1, 3]
    mask = torch.isin(labels, torch.tensor(current))
    z = unit(10, 5, seed=9)
    protos = unit(4, 5, seed=1)
    a, ga = value_and_grad(lambda x: fnc2(x, labels, protos, [], 0.5, 0.0, 0.0, anchor_mask=mask), z)
    b, gb = value_and_grad(lambda x: asymmetric_supcon(x, labels, current, 0.5, 0.5), z)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_fnc2_focal_path_agrees_with_linear_path_at_gamma_zero():
    # γ > 0 uses a masked N×N path, γ = 0 the class-sum path: as γ → 0 they must agree
    labels = LABEL_PATTERNS["with_singletons"]
    z, protos = unit(10, 6, seed=4), unit(6, 6, seed=5)
    seen = list(range(6))
    a, ga = value_and_grad(lambda x: fnc2(x, labels, protos, seen, 0.5, 0.0, 1.0), z)
    b, gb = value_and_grad(lambda x: fnc2(x, labels, protos, seen, 0.5, 1e-12, 1.0), z)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ga, gb, rtol=1e-8, atol=1e-9)


def test_asymmetric_supcon_with_all_classes_current_equals_supcon():
    labels = LABEL_PATTERNS["two_views"]
    z = unit(12, 5, seed=8)
    torch.testing.assert_close(asymmetric_supcon(z, labels, torch.tensor([0, 1, 2, 3]), 0.5, 0.07),
                               supcon(z, labels, 0.5, 0.07), rtol=1e-12, atol=0)


def test_supcon_matches_pytorch_metric_learning_when_available():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    labels = torch.arange(16).repeat(2)
    z = unit(32, 8, seed=0, dtype=torch.float32)
    torch.testing.assert_close(supcon(z, labels, 0.07, 0.07), pml.SupConLoss(temperature=0.07)(z, labels),
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------------------------------------------------

def test_anchor_without_positive_counts_in_the_mean():
    labels = torch.tensor([0, 0, 1])
    z = unit(3, 4, seed=1)
    s = z @ z.T / 0.5
    # anchors 0 and 1 have one positive each and contrast {other two}; anchor 2 has none: 0, but counted (divide by 3)
    l0 = -(s[0, 1] - torch.logsumexp(s[0, [1, 2]], 0))
    l1 = -(s[1, 0] - torch.logsumexp(s[1, [0, 2]], 0))
    value = supcon(z, labels, 0.5, 0.5)
    torch.testing.assert_close(value, (l0 + l1) / 3)
    assert not torch.isclose(value, (l0 + l1) / 2)
    # two rows of one class: each anchor's softmax has a single candidate, its positive: the loss is exactly 0
    assert supcon(z[:2], labels[:2], 0.5, 0.5).item() == pytest.approx(0.0, abs=1e-12)


def test_one_sample_per_class_is_zero_with_graph():
    z = unit(5, 4, seed=1).requires_grad_(True)
    labels = torch.arange(5)
    for value in (supcon(z, labels), asymmetric_supcon(z, labels, [0, 1]),
                  fnc2(z, labels, unit(5, 4, seed=2), [], 0.5, 2.0, 0.0)):
        assert value.item() == 0.0
        (g,) = torch.autograd.grad(value, z)
        assert torch.equal(g, torch.zeros_like(g))


def test_single_row_is_zero_with_graph():
    z = unit(1, 4, seed=1).requires_grad_(True)
    value = supcon(z, torch.tensor([0]))
    assert value.item() == 0.0 and value.requires_grad
    protos = unit(2, 4, seed=3)
    value = fnc2(z, torch.tensor([0]), protos, [0, 1], 0.5, 2.0, 1.0)
    torch.testing.assert_close(value, ref_fnc2(z.detach(), [0], protos, [0, 1], 0.5, 2.0, 1.0))
    (g,) = torch.autograd.grad(value, z)
    assert torch.isfinite(g).all()


def test_fnc2_anchor_mask_all_false_is_zero_with_graph():
    z = unit(6, 4, seed=1).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    value = fnc2(z, labels, unit(3, 4, seed=2), [0, 1, 2], anchor_mask=torch.zeros(6, dtype=torch.bool))
    assert value.item() == 0.0
    assert value.requires_grad
    value.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_fnc2_empty_seen_classes_without_prototype_term():
    labels = torch.tensor([0, 0, 1, 1])
    z = unit(4, 4, seed=3)
    value = fnc2(z, labels, unit(2, 4, seed=2), [], 0.5, 2.0, 0.0)
    torch.testing.assert_close(value, ref_fnc2(z, labels, unit(2, 4, seed=2), [], 0.5, 2.0, 0.0))


def test_fnc2_label_not_seen_raises():
    labels = torch.tensor([0, 0, 1, 2])
    z, protos = unit(4, 4, seed=3), unit(3, 4, seed=2)
    with pytest.raises(ValueError, match="seen_classes"):
        fnc2(z, labels, protos, [0, 1], prototype_weight=1.0)
    with pytest.raises(ValueError, match="seen_classes"):
        fnc2(z, labels, protos, [], prototype_weight=1.0)
    fnc2(z, labels, protos, [0, 1], prototype_weight=0.0)  # fine without the prototype term


def test_seen_classes_accepts_tensor_and_ignores_duplicates():
    labels = torch.tensor([0, 0, 1, 2])
    z, protos = unit(4, 4, seed=3), unit(3, 4, seed=2)
    a = fnc2(z, labels, protos, torch.tensor([2, 0, 1, 1]))
    b = fnc2(z, labels, protos, [0, 1, 2])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16])
def test_low_precision_input_returns_float32(low):
    labels = torch.arange(32).repeat(2) % 20
    z = unit(64, 16, seed=0).to(low)
    protos = unit(20, 16, seed=1).to(low)
    with validation(False):  # rounding to half breaks unit norm by more than the tolerance for bfloat16
        for value in (supcon(z, labels), asymmetric_supcon(z, labels, [0, 1, 2]),
                      fnc2(z, labels, protos, list(range(20)))):
            assert value.dtype == torch.float32
            assert torch.isfinite(value)
    zz = z.clone().requires_grad_(True)
    with validation(False):
        supcon(zz, labels).backward()
    assert zz.grad.dtype == low and torch.isfinite(zz.grad.float()).all()


def test_autocast_does_not_lower_precision():
    labels = torch.arange(16).repeat(2)
    z = unit(32, 8, seed=0, dtype=torch.float32)
    protos = unit(16, 8, seed=1, dtype=torch.float32)
    plain = (supcon(z, labels), fnc2(z, labels, protos, list(range(16))))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = (supcon(z, labels), fnc2(z, labels, protos, list(range(16))))
    for a, b in zip(plain, auto):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_large_logits_are_stable():
    # τ = 0.01: logits up to 100 would overflow a naive exp in float32
    labels = torch.tensor([0, 0, 1, 1] * 4)
    z = unit(16, 3, seed=0, dtype=torch.float32).requires_grad_(True)
    value = supcon(z, labels, temperature=0.01, base_temperature=0.07)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    torch.testing.assert_close(value.double(), ref_supcon(z.detach().double(), labels, 0.01, 0.07), rtol=1e-4,
                               atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------------

def _bad_calls():
    z, labels = unit(4, 3, seed=0), torch.tensor([0, 0, 1, 1])
    protos = unit(2, 3, seed=1)
    nan = z.clone()
    nan[1, 1] = float("nan")
    return [
        ("labels length", lambda: supcon(z, labels[:3]), "labels"),
        ("labels 2-D", lambda: supcon(z, labels[:, None]), "labels"),
        ("float labels", lambda: supcon(z, labels.float()), "integer"),
        ("negative label", lambda: supcon(z, torch.tensor([0, -1, 1, 1])), "label -1"),
        ("1-D z", lambda: supcon(z[0], labels), "2-D"),
        ("non-unit", lambda: supcon(z * 2, labels), "unit L2 norm"),
        ("nan", lambda: supcon(nan, labels), "NaN"),
        ("bad temperature", lambda: supcon(z, labels, temperature=0.0), "temperature"),
        ("asym non-unit", lambda: asymmetric_supcon(z * 0.5, labels, [0]), "unit L2 norm"),
        ("asym bad classes", lambda: asymmetric_supcon(z, labels, [[0]]), "current_classes"),
        ("fnc2 label outside", lambda: fnc2(z, torch.tensor([0, 0, 1, 2]), protos, [0, 1]), "outside the 2"),
        ("fnc2 proto dim", lambda: fnc2(z, labels, unit(2, 4, seed=1), [0, 1]), "dimension"),
        ("fnc2 proto non-unit", lambda: fnc2(z, labels, protos * 3, [0, 1]), "unit L2 norm"),
        ("fnc2 nan", lambda: fnc2(nan, labels, protos, [0, 1]), "NaN"),
        ("fnc2 seen outside", lambda: fnc2(z, labels, protos, [0, 1, 5]), "seen_classes"),
        ("fnc2 mask dtype", lambda: fnc2(z, labels, protos, [0, 1], anchor_mask=torch.ones(4)), "anchor_mask"),
        ("fnc2 mask shape", lambda: fnc2(z, labels, protos, [0, 1],
                                         anchor_mask=torch.ones(3, dtype=torch.bool)), "anchor_mask"),
        ("fnc2 gamma", lambda: fnc2(z, labels, protos, [0, 1], gamma=-1), "gamma"),
    ]


@pytest.mark.parametrize("case", _bad_calls(), ids=lambda c: c[0])
def test_bad_input_raises_value_error(case):
    _, call, match = case
    with pytest.raises(ValueError, match=match):
        call()


def test_validation_switch_skips_value_checks():
    z, labels = unit(4, 3, seed=0), torch.tensor([0, 0, 1, 1])
    with validation(False):
        supcon(z * 2, labels)  # not checked: the caller took responsibility
    with pytest.raises(ValueError):
        supcon(z * 2, labels)


# ---------------------------------------------------------------------------------------------------------------------
# module wrappers
# ---------------------------------------------------------------------------------------------------------------------

def test_wrappers_call_the_functions():
    labels = LABEL_PATTERNS["two_views"]
    z, protos = unit(12, 5, seed=1), unit(4, 5, seed=2)
    assert torch.equal(SupConLoss(temperature=0.1)(z, labels), supcon(z, labels, 0.1, 0.07))
    assert torch.equal(AsymmetricSupConLoss()(z, labels, current_classes=[1, 2]),
                       asymmetric_supcon(z, labels, [1, 2]))
    mask = labels > 0
    assert torch.equal(FNC2Loss(gamma=1.0)(z, labels, prototypes=protos, seen_classes=[0, 1, 2, 3], anchor_mask=mask),
                       fnc2(z, labels, protos, [0, 1, 2, 3], gamma=1.0, anchor_mask=mask))
    assert "temperature=0.1" in repr(SupConLoss(temperature=0.1))
    assert math.isfinite(FNC2Loss()(z, labels, prototypes=protos, seen_classes=[0, 1, 2, 3]).item())
