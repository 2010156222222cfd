"""supcon, asymmetric_supcon and fnc2 against slow per-sample references (float64 Python loops), plus edge cases."""

import math

import pytest
import torch

from loss_testing import assert_matches, unit, value_and_grad
from protosphere.losses import (
    AsymmetricSupConLoss,
    FNC2Loss,
    SupConLoss,
    asymmetric_supcon,
    fnc2,
    supcon,
    validation,
)

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


def ref_fnc2(z, labels, prototypes, current, previous, temperature, base_temperature, gamma):
    """The FNC2 loss of protosphere.losses.contrastive, one anchor at a time: s_ii := z_i·w_{y_i}/τ; D_i over the
    other rows and the previous prototypes; P(i) = same label, i included;
    ℓ_i = −(τ/τ_b) Σ_{j∈P(i)} (1 − p_ij)^γ log p_ij / |P(i)|; mean over all N rows."""
    z, w = z.double(), prototypes.double()
    labels = [int(v) for v in labels]
    n = len(labels)
    total = z.sum() * 0
    for i in range(n):
        if labels[i] not in current:
            continue
        den = sum(torch.exp(_dot(z[i], z[a]) / temperature) for a in range(n) if a != i)
        den = den + sum(torch.exp(_dot(z[i], w[c]) / temperature) for c in previous)
        acc = 0
        positives = [j for j in range(n) if labels[j] == labels[i]]
        for j in positives:
            other = w[labels[i]] if j == i else z[j]
            p = torch.exp(_dot(z[i], other) / temperature) / den
            acc = acc + (1 - p) ** gamma * torch.log(p)
        total = total - (temperature / base_temperature) * acc / len(positives)
    return total / n


def official_fnc2(features, labels, points, target_labels, temperature, base_temperature, focal_gamma):
    """The authors' FNC2 (dangtrunganh/samix @ eaea3ef36ddd5c3ebce13535039044a798ebdc03,
    src/plas_losses/main_loss_fnc2.py, ``compute_fnc2_loss`` lines 58–108 and ``forward`` lines 110–142), transcribed
    with the device handling and logging removed. features (bsz, 2, d), labels (bsz,), points (K, d)."""
    anchor_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    batch_size, anchor_count = features.shape[:2]
    corresponding_prototypes = points[labels.repeat(anchor_count)]
    mask = torch.eq(labels.view(-1, 1), labels.view(-1, 1).T).to(features.dtype)
    anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, anchor_feature.T), temperature)
    previous_proto = points[: min(target_labels)]
    anchor_contrast_previous_proto = None
    if previous_proto.numel() != 0:
        anchor_contrast_previous_proto = torch.div(torch.matmul(anchor_feature, previous_proto.T), temperature)
    points_dot_contrast = torch.div(torch.mul(anchor_feature, corresponding_prototypes).sum(1), temperature)
    idx = torch.arange(corresponding_prototypes.size(0))
    anchor_dot_contrast[idx, idx] = points_dot_contrast
    if anchor_contrast_previous_proto is not None:
        logits_max, _ = torch.max(
            torch.cat((anchor_dot_contrast, anchor_contrast_previous_proto), dim=1), dim=1, keepdim=True
        )
        previous_logits_sample_proto = anchor_contrast_previous_proto - logits_max.detach()
    else:
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(anchor_count, anchor_count)
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size * anchor_count).view(-1, 1), 0)
    exp_logits = torch.exp(logits) * logits_mask
    if anchor_contrast_previous_proto is not None:
        exp_previous_proto = torch.exp(previous_logits_sample_proto)
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True) + exp_previous_proto.sum(1, keepdim=True))
    else:
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    weight = (1 - torch.exp(log_prob)) ** focal_gamma
    pos_per_sample = mask.sum(1)
    pos_per_sample[pos_per_sample < 1e-6] = 1.0
    mean_log_prob_pos = (weight * mask * log_prob).sum(1) / pos_per_sample
    mean_log_prob_pos = -(temperature / base_temperature) * mean_log_prob_pos
    curr_class_mask = torch.zeros_like(labels)
    for tc in target_labels:
        curr_class_mask += labels == tc
    loss = curr_class_mask * mean_log_prob_pos.view(anchor_count, batch_size)
    return loss.mean()


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
    assert_matches(
        lambda x: asymmetric_supcon(x, labels, current, 0.5, 0.07),
        lambda x: ref_supcon(x, labels, 0.5, 0.07, anchor_on=on),
        z,
        dtype,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pattern", ["two_views", "with_singletons", "one_class", "all_distinct", "n2_same"])
@pytest.mark.parametrize("gamma", [0, 1, 2, 3])
@pytest.mark.parametrize("kind", ["first_task", "later_task", "with_buffer_rows"])
def test_fnc2_matches_reference(dtype, pattern, gamma, kind):
    labels = LABEL_PATTERNS[pattern] % 6 + 2
    present = sorted(set(labels.tolist()))
    current, previous = {
        "first_task": (present, []),
        "later_task": (present, [0, 1]),
        "with_buffer_rows": (present[1:] or present, [0, 1, 2] if present[0] > 2 else [0, 1]),
    }[kind]
    z, protos = unit(len(labels), 9, seed=11), unit(8, 9, seed=12)
    assert_matches(
        lambda x: fnc2(x, labels, protos.to(x.dtype), current, previous, 0.5, 0.07, gamma),
        lambda x: ref_fnc2(x, labels, protos, current, previous, 0.5, 0.07, gamma),
        z,
        dtype,
    )


@pytest.mark.parametrize("gamma", [0, 1, 2])
@pytest.mark.parametrize("task", [0, 1, 3])
@pytest.mark.parametrize("temps", [(0.5, 0.07), (0.1, 0.1)])
def test_fnc2_equals_the_authors_code(gamma, task, temps):
    """Value and gradient equal the authors' implementation on random inputs: a batch of B images in two views,
    classes ordered 0..K−1 by task (2 per task), the current task's classes plus a few buffer rows of old classes."""
    g = torch.Generator().manual_seed(100 + 10 * task + gamma)
    batch, dim, k = 24, 16, 10
    target = [2 * task, 2 * task + 1]
    labels = torch.tensor(target)[torch.randint(2, (batch,), generator=g)]
    if task > 0:  # Co2L-style buffer rows: old classes, negatives only
        labels[:5] = torch.randint(2 * task, (5,), generator=g)
    points = unit(k, dim, seed=7)
    features = unit(2 * batch, dim, seed=task + 20 * gamma).view(2, batch, dim).transpose(0, 1)  # (bsz, 2, d)
    tau, tau_b = temps
    ours, g_ours = value_and_grad(
        lambda z: fnc2(z, labels.repeat(2), points, target, list(range(2 * task)), tau, tau_b, gamma),
        torch.cat(torch.unbind(features, dim=1)),
    )
    theirs, g_theirs = value_and_grad(
        lambda z: official_fnc2(torch.stack(z.chunk(2), dim=1), labels, points, target, tau, tau_b, gamma),
        torch.cat(torch.unbind(features, dim=1)),
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-8, atol=1e-11)


def test_fnc2_previous_classes_in_any_order_equal_the_official_slice():
    """The official code takes previous prototypes as rows [:min(current)]; a list gives the same for that order
    and works for any class order."""
    labels = torch.tensor([4, 5, 4, 5, 1, 4] * 2)
    z, protos = unit(12, 8, seed=1), unit(6, 8, seed=2)
    a = fnc2(z, labels, protos, [4, 5], [3, 0, 2, 1])
    b = fnc2(z, labels, protos, torch.tensor([4, 5]), torch.arange(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, fnc2(z, labels, protos, [4, 5], [0, 1]))


def test_fnc2_own_prototype_is_a_positive_not_in_the_denominator():
    # one row per class, no previous classes: P(i) = {i} and D_i = Σ_{j≠i} e^{s_ij}, so ℓ_i = −(τ/τ_b) log p_ii
    z, protos = unit(3, 4, seed=5), unit(3, 4, seed=6)
    labels = torch.arange(3)
    s = z @ z.T / 0.5
    own = (z * protos).sum(1) / 0.5
    expected = torch.stack(
        [-(own[i] - torch.logsumexp(s[i, [j for j in range(3) if j != i]], 0)) for i in range(3)]
    ).mean()
    torch.testing.assert_close(fnc2(z, labels, protos, [0, 1, 2], [], 0.5, 0.5, 0), expected)
    # p_ii may exceed 1 (the prototype is not in its own denominator): γ = 1 then weighs it negatively, as the code does
    z_close = torch.stack([protos[0], protos[0]])
    value = fnc2(z_close, torch.tensor([0, 1]), protos, [0, 1], [], 0.5, 0.5, 1)
    assert torch.isfinite(value)


@pytest.mark.parametrize("gamma", [0.5, -1, True, "1"])
def test_fnc2_gamma_must_be_a_non_negative_integer(gamma):
    z, protos = unit(4, 4, seed=3), unit(3, 4, seed=2)
    with pytest.raises(ValueError, match="gamma"):
        fnc2(z, torch.tensor([0, 0, 1, 1]), protos, [0, 1], [], gamma=gamma)
    fnc2(z, torch.tensor([0, 0, 1, 1]), protos, [0, 1], [], gamma=2.0)  # an integral float is an integer


def test_asymmetric_supcon_with_all_classes_current_equals_supcon():
    labels = LABEL_PATTERNS["two_views"]
    z = unit(12, 5, seed=8)
    torch.testing.assert_close(
        asymmetric_supcon(z, labels, torch.tensor([0, 1, 2, 3]), 0.5, 0.07),
        supcon(z, labels, 0.5, 0.07),
        rtol=1e-12,
        atol=0,
    )


def test_supcon_matches_pytorch_metric_learning_when_available():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    labels = torch.arange(16).repeat(2)
    z = unit(32, 8, seed=0, dtype=torch.float32)
    torch.testing.assert_close(
        supcon(z, labels, 0.07, 0.07), pml.SupConLoss(temperature=0.07)(z, labels), rtol=1e-5, atol=1e-5
    )


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
    for value in (supcon(z, labels), asymmetric_supcon(z, labels, [0, 1])):
        assert value.item() == 0.0
        (g,) = torch.autograd.grad(value, z)
        assert torch.equal(g, torch.zeros_like(g))


def test_single_row_is_zero_with_graph():
    z = unit(1, 4, seed=1).requires_grad_(True)
    value = supcon(z, torch.tensor([0]))
    assert value.item() == 0.0 and value.requires_grad
    protos = unit(3, 4, seed=3)
    value = fnc2(z, torch.tensor([2]), protos, [2], [0, 1], 0.5, 0.07, 1)  # the previous prototypes are its contrast
    torch.testing.assert_close(value, ref_fnc2(z.detach(), [2], protos, [2], [0, 1], 0.5, 0.07, 1))
    (g,) = torch.autograd.grad(value, z)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="denominator"):
        fnc2(z, torch.tensor([0]), protos, [0], [])


def test_fnc2_rows_of_other_classes_anchor_nothing_and_count_in_the_mean():
    z = unit(6, 4, seed=1).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    value = fnc2(z, labels, unit(3, 4, seed=2), [2], [0, 1])
    only = fnc2(z[4:], labels[4:], unit(3, 4, seed=2), [2], [0, 1])
    assert value.requires_grad and value.item() != 0.0
    none = fnc2(z, labels, unit(3, 4, seed=2), [], [0, 1])
    assert none.item() == 0.0 and none.requires_grad
    none.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert not torch.isclose(value, only)  # the old-class rows are negatives of the anchors, and N = 6 in the mean


def test_seen_classes_accepts_tensor_and_ignores_duplicates():
    labels = torch.tensor([0, 0, 1, 2])
    z, protos = unit(4, 4, seed=3), unit(3, 4, seed=2)
    a = fnc2(z, labels, protos, torch.tensor([2, 0, 1, 1]), torch.tensor([0, 0]))
    b = fnc2(z, labels, protos, [0, 1, 2], [0])
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
        for value in (
            supcon(z, labels),
            asymmetric_supcon(z, labels, [0, 1, 2]),
            fnc2(z, labels, protos, list(range(10, 20)), list(range(10))),
        ):
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
    plain = (supcon(z, labels), fnc2(z, labels, protos, list(range(8, 16)), list(range(8))))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = (supcon(z, labels), fnc2(z, labels, protos, list(range(8, 16)), list(range(8))))
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
    torch.testing.assert_close(
        value.double(), ref_supcon(z.detach().double(), labels, 0.01, 0.07), rtol=1e-4, atol=1e-4
    )


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
        ("fnc2 label outside", lambda: fnc2(z, torch.tensor([0, 0, 1, 2]), protos, [0, 1], []), "outside the 2"),
        ("fnc2 proto dim", lambda: fnc2(z, labels, unit(2, 4, seed=1), [0, 1], []), "dimension"),
        ("fnc2 proto non-unit", lambda: fnc2(z, labels, protos * 3, [0, 1], []), "unit L2 norm"),
        ("fnc2 nan", lambda: fnc2(nan, labels, protos, [0, 1], []), "NaN"),
        ("fnc2 current outside", lambda: fnc2(z, labels, protos, [0, 1, 5], []), "current_classes"),
        ("fnc2 previous outside", lambda: fnc2(z, labels, protos, [1], [0, 7]), "previous_classes"),
        (
            "fnc2 previous 2-D",
            lambda: fnc2(z, labels, protos, [1], torch.zeros(1, 1, dtype=torch.long)),
            "previous_classes",
        ),
        ("fnc2 gamma", lambda: fnc2(z, labels, protos, [0, 1], [], gamma=-1), "gamma"),
        ("fnc2 base temperature", lambda: fnc2(z, labels, protos, [0, 1], [], base_temperature=0), "base_temperature"),
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
    assert torch.equal(AsymmetricSupConLoss()(z, labels, current_classes=[1, 2]), asymmetric_supcon(z, labels, [1, 2]))
    assert torch.equal(FNC2Loss(gamma=2)(z, labels, protos, [1, 2], [0]), fnc2(z, labels, protos, [1, 2], [0], gamma=2))
    assert torch.equal(
        FNC2Loss()(z, labels, prototypes=protos, current_classes=[1, 2], previous_classes=[0]),
        fnc2(z, labels, protos, [1, 2], [0], 0.5, 0.07, 1),
    )
    assert "temperature=0.1" in repr(SupConLoss(temperature=0.1))
    assert math.isfinite(FNC2Loss()(z, labels, protos, [0, 1, 2, 3], []).item())
