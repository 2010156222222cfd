"""Supervised contrastive losses on the unit hypersphere: SupCon, Co2L's asymmetric SupCon, and FNC2.

All three share one computation: the temperature-scaled Gram matrix of the rows with its diagonal removed, reduced by a
max-subtracted log-sum-exp. No N×N positive mask is built where the loss is linear in the positive logits: the sum of a
row's positive logits is ``z_i · (S_{y_i} − z_i) / τ`` with ``S_c`` the sum of the rows of class c, computed with one
``index_add`` (no host sync), and ``|P(i)| = n_{y_i} − 1`` comes from the class counts. Memory is one N×N float matrix
(plus the log-sum-exp's temporaries); nothing N×N×d is ever formed.

Inputs must be L2-normalised (the losses never re-normalise; they raise instead). Half and bfloat16 inputs are computed
in float32 with autocast disabled, and the result is float32; float64 inputs stay float64.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._checks import (
    autocast_off,
    check_labels,
    check_matrix,
    check_temperature,
    check_unit_rows,
    compute_dtype,
    validation_enabled,
)

__all__ = ["supcon", "asymmetric_supcon", "fnc2", "SupConLoss", "AsymmetricSupConLoss", "FNC2Loss"]


# ---------------------------------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------------------------------

def _same_class_sums(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row i: ``S_{y_i} = Σ_{j: y_j = y_i} z_j`` (N, d) and ``n_{y_i}`` (N,), without an N×N mask or sync.

    Rows are grouped by the position of their label's first occurrence in the sorted labels (a dense segment id).
    """
    sorted_labels, _ = torch.sort(labels)
    first = torch.searchsorted(sorted_labels, labels)
    counts = torch.searchsorted(sorted_labels, labels, right=True) - first
    sums = torch.zeros_like(z).index_add_(0, first, z)
    return sums.index_select(0, first), counts


def _masked_gram(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``z/τ`` (N, d) and the logits ``z zᵀ/τ`` (N, N) with the diagonal set to −inf in place (needs N ≥ 2)."""
    zs = z * (1.0 / temperature)
    logits = torch.mm(zs, z.t())
    logits.diagonal().fill_(float("-inf"))
    return zs, logits


def _class_tensor(classes, loss: str, name: str, device: torch.device, num_classes: int | None = None) -> torch.Tensor:
    """A sequence of ints or a 1-D integer tensor → sorted unique int64 tensor on `device`."""
    if isinstance(classes, torch.Tensor):
        if classes.dim() > 1 or classes.is_floating_point() or classes.dtype == torch.bool:
            raise ValueError(f"{loss}: `{name}` must be a sequence of ints or a 1-D integer tensor, got "
                             f"{classes.dtype} of shape {tuple(classes.shape)}.")
        out = classes.reshape(-1).to(device=device, dtype=torch.long)
        if validation_enabled() and out.numel():
            lo, hi = int(out.min()), int(out.max())
            if lo < 0 or (num_classes is not None and hi >= num_classes):
                bad = lo if lo < 0 else hi
                raise ValueError(f"{loss}: class {bad} in `{name}` is not a valid class index"
                                 + (f" (0..{num_classes - 1})." if num_classes is not None else "."))
        return torch.unique(out) if out.numel() > 1 else out
    try:
        values = sorted({int(c) for c in classes})
    except (TypeError, ValueError):
        raise ValueError(f"{loss}: `{name}` must be a sequence of ints or a 1-D integer tensor, "
                         f"got {classes!r}.") from None
    for c in values:
        if c < 0 or (num_classes is not None and c >= num_classes):
            raise ValueError(f"{loss}: class {c} in `{name}` is not a valid class index"
                             + (f" (0..{num_classes - 1})." if num_classes is not None else "."))
    return torch.tensor(values, dtype=torch.long, device=device)


def _supcon_core(z: torch.Tensor, labels: torch.Tensor, temperature: float, base_temperature: float,
                 anchor_weight: torch.Tensor | None) -> torch.Tensor:
    """(τ/τ_b)/N · Σ_i w_i · 1[|P(i)|>0] · (LSE_{a≠i} s_ia − mean_{p∈P(i)} s_ip)."""
    n = z.shape[0]
    if n < 2:  # a single row has no positive: contributes 0, graph kept
        return z.sum() * 0.0
    zs, logits = _masked_gram(z, temperature)
    lse = torch.logsumexp(logits, dim=1)
    del logits
    class_sum, counts = _same_class_sums(z, labels)
    n_pos = counts - 1
    pos_sum = ((class_sum - z) * zs).sum(dim=1)  # Σ_{p∈P(i)} s_ip; exactly 0 for a singleton
    per_anchor = torch.where(n_pos > 0, lse - pos_sum / n_pos.clamp_min(1), torch.zeros_like(lse))
    if anchor_weight is not None:
        per_anchor = per_anchor * anchor_weight
    return per_anchor.sum() * (temperature / base_temperature / n)


def _prepare(z: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    check_matrix(z, "z", loss)
    check_labels(labels, z.shape[0], loss)
    check_unit_rows(z, "z", loss)
    return z.to(compute_dtype(z))


# ---------------------------------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------------------------------

def supcon(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
           base_temperature: float = 0.07) -> torch.Tensor:
    r"""Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020).

    With ``s = z zᵀ/τ``, positives ``P(i) = {j ≠ i : y_j = y_i}`` and contrast set ``A(i) = {j ≠ i}``::

        ℓ_i  = −(τ/τ_base) · mean_{p∈P(i)} [ s_ip − log Σ_{a∈A(i)} exp(s_ia) ]
        loss = (1/N) Σ_i ℓ_i        over all N anchors

    An anchor without positive contributes 0 but is counted in the mean (SupContrast ``losses.py`` after its NaN fix).
    Computed with one N×N logit matrix: the positive sum uses per-class sums of z, so no N×N mask is built.

    Args:
        z: (N, d) L2-normalised embeddings, all views stacked (e.g. ``cat([view1, view2])``).
        labels: (N,) integer class labels (any non-negative values).
        temperature: τ.
        base_temperature: τ_base; the loss is scaled by τ/τ_base.

    Returns:
        A scalar tensor (float32, or float64 for float64 input).

    Under DDP: the loss is computed on the rows it is given; the engine gathers the global batch with gradients
    (``all_gather(sync_grads=True)``) before calling it.
    """
    loss = "supcon"
    check_temperature(temperature, "temperature", loss)
    check_temperature(base_temperature, "base_temperature", loss)
    with autocast_off(z):
        z = _prepare(z, labels, loss)
        return _supcon_core(z, labels, temperature, base_temperature, None)


def asymmetric_supcon(z: torch.Tensor, labels: torch.Tensor, current_classes: Sequence[int] | torch.Tensor,
                      temperature: float = 0.5, base_temperature: float = 0.07) -> torch.Tensor:
    r"""Asymmetric supervised contrastive loss (Cha et al., "Co2L: Contrastive Continual Learning", ICCV 2021).

    The SupCon term of :func:`supcon` restricted to anchors of the current task; every row stays in the contrast
    set (buffer rows are negatives and positives only)::

        loss = (1/N) Σ_{i=1..N} 1[y_i ∈ current_classes] · ℓ_i

    The mean is over **all** N rows. An anchor without positive contributes 0 (official Co2L would return NaN).

    Args:
        z: (N, d) L2-normalised embeddings (all views, current and buffer rows).
        labels: (N,) integer class labels.
        current_classes: the classes of the current task, a sequence of int or a 1-D integer tensor.
        temperature: τ (Co2L uses 0.5).
        base_temperature: τ_base (Co2L uses 0.07).

    Returns:
        A scalar tensor (float32, or float64 for float64 input).

    Under DDP: the loss is computed on the rows it is given; the engine gathers the global batch with gradients
    before calling it.
    """
    loss = "asymmetric_supcon"
    check_temperature(temperature, "temperature", loss)
    check_temperature(base_temperature, "base_temperature", loss)
    with autocast_off(z):
        z = _prepare(z, labels, loss)
        current = _class_tensor(current_classes, loss, "current_classes", labels.device)
        weight = torch.isin(labels, current).to(z.dtype)
        return _supcon_core(z, labels, temperature, base_temperature, weight)


def fnc2(z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
         seen_classes: Sequence[int] | torch.Tensor, temperature: float = 0.5, gamma: float = 2.0,
         prototype_weight: float = 1.0, anchor_mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Focal neural-collapse contrastive loss (FNC2; Dang et al., "Memory-efficient Continual Learning with Neural
    Collapse Contrastive", WACV 2025, arXiv 2412.02865).

    **This is protosphere's reconstruction**: the paper's code is not public, so the equation below is the contract
    (DESIGN §3), built from the paper's description. With ``w_k = prototypes[k]`` (fixed, e.g. simplex-ETF rows, no
    gradient) and for anchor i::

        A(i) = {z_j : j ≠ i} ∪ {w_c : c ∈ seen_classes},   P(i) = {j ≠ i : y_j = y_i}
        D_i  = Σ_{a∈A(i)} exp(z_i·a/τ),   c_ij = exp(z_i·z_j/τ)/D_i,   r_i = exp(z_i·w_{y_i}/τ)/D_i
        ℓ_i  = −mean_{j∈P(i)} (1−c_ij)^γ log c_ij  −  λ · (1−r_i)^γ log r_i
        loss = (1/N) Σ_i m_i ℓ_i

    with λ = ``prototype_weight`` and m = ``anchor_mask`` (all ones by default). The sample term is 0 when P(i) is
    empty; the focal factors are not detached. Previous-task prototypes in ``seen_classes`` act as negatives
    (pseudo-replay). With γ = 0, λ = 0 and no seen classes this equals ``supcon(z, labels, τ, τ)``; with an anchor mask,
    ``asymmetric_supcon`` likewise. For γ = 0 no N×N mask is built; for γ > 0 a boolean N×N positive mask is.

    Args:
        z: (N, d) L2-normalised embeddings.
        labels: (N,) integer labels in ``[0, K)``.
        prototypes: (K, d) unit-norm prototypes of the whole label space (detached inside).
        seen_classes: classes seen so far (previous tasks and the current one), a sequence of int or 1-D tensor.
        temperature: τ.
        gamma: focusing parameter γ ≥ 0.
        prototype_weight: λ ≥ 0; when λ > 0 every label must be in ``seen_classes``.
        anchor_mask: optional bool (N,); rows with False are negatives/positives only (Co2L-style buffer rows).

    Returns:
        A scalar tensor (float32, or float64 for float64 input).

    Under DDP: the loss is computed on the rows it is given; the engine gathers the global batch with gradients
    before calling it.
    """
    loss = "fnc2"
    check_temperature(temperature, "temperature", loss)
    gamma, prototype_weight = float(gamma), float(prototype_weight)
    if not gamma >= 0:
        raise ValueError(f"{loss}: `gamma` must be >= 0, got {gamma!r}.")
    if not prototype_weight >= 0:
        raise ValueError(f"{loss}: `prototype_weight` must be >= 0, got {prototype_weight!r}.")
    check_matrix(z, "z", loss)
    check_matrix(prototypes, "prototypes", loss, dim=z.shape[1])
    n, num_classes = z.shape[0], prototypes.shape[0]
    check_labels(labels, n, loss, num_classes=num_classes)
    check_unit_rows(z, "z", loss)
    check_unit_rows(prototypes, "prototypes", loss)
    if anchor_mask is not None:
        if not isinstance(anchor_mask, torch.Tensor) or anchor_mask.dtype != torch.bool \
                or tuple(anchor_mask.shape) != (n,):
            got = (anchor_mask.dtype, tuple(anchor_mask.shape)) if isinstance(anchor_mask, torch.Tensor) \
                else type(anchor_mask).__name__
            raise ValueError(f"{loss}: `anchor_mask` must be a bool tensor of shape ({n},), got {got}.")
    seen = _class_tensor(seen_classes, loss, "seen_classes", labels.device, num_classes=num_classes)
    if prototype_weight > 0 and n > 0:
        if seen.numel() == 0:
            raise ValueError(f"{loss}: prototype_weight > 0 needs every label in `seen_classes`, but it is empty; "
                             f"pass the previous and current classes.")
        if validation_enabled():
            missing = ~torch.isin(labels, seen)
            if bool(missing.any()):
                bad = int(labels[missing][0])
                raise ValueError(f"{loss}: label {bad} is not in `seen_classes`; with prototype_weight > 0 every "
                                 f"label must be a seen class (add the current task's classes).")

    with autocast_off(z):
        dtype = compute_dtype(z)
        z = z.to(dtype)
        w = prototypes.detach().to(device=z.device, dtype=dtype)
        zs = z * (1.0 / temperature)

        # log D_i over the other rows and the seen prototypes
        parts = []
        if n >= 2:
            logits = torch.mm(zs, z.t())
            logits.diagonal().fill_(float("-inf"))
            parts.append(torch.logsumexp(logits, dim=1))
        if seen.numel():
            parts.append(torch.logsumexp(torch.mm(zs, w.index_select(0, seen.to(z.device)).t()), dim=1))
        if not parts:  # one row and nothing to contrast with: no term is defined
            return z.sum() * 0.0
        log_d = parts[0] if len(parts) == 1 else torch.logaddexp(parts[0], parts[1])

        per_anchor = torch.zeros_like(log_d)
        if n >= 2:
            if gamma == 0:
                class_sum, counts = _same_class_sums(z, labels)
                n_pos = counts - 1
                pos_sum = ((class_sum - z) * zs).sum(dim=1)
                sample = torch.where(n_pos > 0, log_d - pos_sum / n_pos.clamp_min(1), torch.zeros_like(log_d))
            else:
                pos = labels.unsqueeze(1) == labels.unsqueeze(0)
                pos.fill_diagonal_(False)
                n_pos = pos.sum(dim=1)
                # log c_ij on positives; a harmless constant elsewhere so no inf/NaN enters the backward pass
                log_c = torch.where(pos, logits - log_d.unsqueeze(1), logits.new_tensor(-1.0))
                del logits
                focal = (-torch.expm1(log_c)).clamp_min(0.0).pow(gamma)  # (1 − c_ij)^γ
                term = torch.where(pos, focal * log_c, log_c.new_zeros(())).sum(dim=1)
                sample = -term / n_pos.clamp_min(1)
            per_anchor = per_anchor + sample
        if prototype_weight > 0:
            log_r = (zs * w.index_select(0, labels.to(z.device))).sum(dim=1) - log_d
            proto = -log_r if gamma == 0 else -(-torch.expm1(log_r)).clamp_min(0.0).pow(gamma) * log_r
            per_anchor = per_anchor + prototype_weight * proto
        if anchor_mask is not None:
            per_anchor = per_anchor * anchor_mask.to(device=z.device, dtype=dtype)
        return per_anchor.sum() / n


# ---------------------------------------------------------------------------------------------------------------------
# nn.Module wrappers: hyper-parameters in the constructor, one call shape  loss(z, labels, **per_call_tensors)
# ---------------------------------------------------------------------------------------------------------------------

class _FunctionalLoss(nn.Module):
    """Base of the thin wrappers: ``Loss(**hyper_parameters)(z, labels, **extra)`` calls the functional form."""

    _fn = staticmethod(lambda *a, **k: None)

    def __init__(self, **hyper_parameters):
        super().__init__()
        self.hyper_parameters = dict(hyper_parameters)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, **extra) -> torch.Tensor:
        return type(self)._fn(z, labels, **extra, **self.hyper_parameters)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyper_parameters.items())


class SupConLoss(_FunctionalLoss):
    """Module form of :func:`supcon`: ``SupConLoss(temperature=0.07, base_temperature=0.07)(z, labels)``.

    Why the value differs from PyTorch Metric Learning's ``SupConLoss`` at τ ≠ 0.07: this loss follows SupContrast
    (Khosla et al.) and multiplies every anchor's term by τ/τ_base with τ_base = 0.07, so that the gradient's scale
    does not change with τ; PML leaves that factor out. The two agree at τ = 0.07 (factor 1); elsewhere
    ``SupConLoss(τ)(z, y) = (τ/0.07) · pml.losses.SupConLoss(temperature=τ)(z, y)``. Pass ``base_temperature=τ`` for
    PML's value.
    """

    _fn = staticmethod(supcon)

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07):
        super().__init__(temperature=temperature, base_temperature=base_temperature)


class AsymmetricSupConLoss(_FunctionalLoss):
    """Module form of :func:`asymmetric_supcon`:
    ``AsymmetricSupConLoss(temperature=0.5, base_temperature=0.07)(z, labels, current_classes)``."""

    _fn = staticmethod(asymmetric_supcon)

    def __init__(self, temperature: float = 0.5, base_temperature: float = 0.07):
        super().__init__(temperature=temperature, base_temperature=base_temperature)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, current_classes) -> torch.Tensor:
        return asymmetric_supcon(z, labels, current_classes, **self.hyper_parameters)


class FNC2Loss(_FunctionalLoss):
    """Module form of :func:`fnc2`:
    ``FNC2Loss(temperature=0.5, gamma=2.0, prototype_weight=1.0)(z, labels, prototypes=P, seen_classes=[...],
    anchor_mask=None)``."""

    _fn = staticmethod(fnc2)

    def __init__(self, temperature: float = 0.5, gamma: float = 2.0, prototype_weight: float = 1.0):
        super().__init__(temperature=temperature, gamma=gamma, prototype_weight=prototype_weight)
