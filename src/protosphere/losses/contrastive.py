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
            raise ValueError(
                f"{loss}: `{name}` must be a sequence of ints or a 1-D integer tensor, got "
                f"{classes.dtype} of shape {tuple(classes.shape)}."
            )
        out = classes.reshape(-1).to(device=device, dtype=torch.long)
        if validation_enabled() and out.numel():
            lo, hi = int(out.min()), int(out.max())
            if lo < 0 or (num_classes is not None and hi >= num_classes):
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{loss}: class {bad} in `{name}` is not a valid class index"
                    + (f" (0..{num_classes - 1})." if num_classes is not None else ".")
                )
        return torch.unique(out) if out.numel() > 1 else out
    try:
        values = sorted({int(c) for c in classes})
    except (TypeError, ValueError):
        raise ValueError(
            f"{loss}: `{name}` must be a sequence of ints or a 1-D integer tensor, got {classes!r}."
        ) from None
    for c in values:
        if c < 0 or (num_classes is not None and c >= num_classes):
            raise ValueError(
                f"{loss}: class {c} in `{name}` is not a valid class index"
                + (f" (0..{num_classes - 1})." if num_classes is not None else ".")
            )
    return torch.tensor(values, dtype=torch.long, device=device)


def _supcon_core(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    base_temperature: float,
    anchor_weight: torch.Tensor | None,
) -> torch.Tensor:
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


def supcon(
    z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07, base_temperature: float = 0.07
) -> torch.Tensor:
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


def asymmetric_supcon(
    z: torch.Tensor,
    labels: torch.Tensor,
    current_classes: Sequence[int] | torch.Tensor,
    temperature: float = 0.5,
    base_temperature: float = 0.07,
) -> torch.Tensor:
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


def fnc2(
    z: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    current_classes: Sequence[int] | torch.Tensor,
    previous_classes: Sequence[int] | torch.Tensor,
    temperature: float = 0.5,
    base_temperature: float = 0.07,
    gamma: int = 1,
) -> torch.Tensor:
    r"""Focal neural-collapse contrastive loss (FNC2; Dang et al., "Memory-efficient Continual Learning with Neural
    Collapse Contrastive", WACV 2025, arXiv 2412.02865), as the authors' code computes it (dangtrunganh/samix
    ``src/plas_losses/main_loss_fnc2.py``, ``FNC2.compute_fnc2_loss`` and ``forward``).

    The diagonal of the similarity matrix is replaced by the row's own prototype, which makes the prototype one
    positive among the same-class rows; previous-task prototypes join the denominator as negatives (pseudo-replay)::

        s_ij = z_i·z_j/τ (j ≠ i),   s_ii = z_i·w_{y_i}/τ
        D_i  = Σ_{j≠i} exp(s_ij) + Σ_{c∈previous_classes} exp(z_i·w_c/τ)
        log p_ij = s_ij − log D_i,   P(i) = {j : y_j = y_i}  (j = i included)
        ℓ_i  = −(τ/τ_base) · Σ_{j∈P(i)} (1 − p_ij)^γ log p_ij / |P(i)|
        loss = (1/N) Σ_i 1[y_i ∈ current_classes] · ℓ_i

    The own prototype and the other current-task prototypes are not in D_i, so p_ii may exceed 1; the focal weight is
    not detached and γ must be a non-negative integer (the official ``type=int``). Rows of other classes (buffer rows)
    are negatives, and positives of rows of their own class, but anchor nothing; they count in the mean. With γ = 0,
    no previous classes and every row a current one, the only difference from ``supcon`` is the diagonal positive.

    Args:
        z: (N, d) L2-normalised embeddings, all views stacked ``cat(view1, view2)`` (plus buffer rows).
        labels: (N,) integer labels in ``[0, K)``.
        prototypes: (K, d) unit-norm prototypes of the whole label space (the fixed simplex ETF; detached inside).
        current_classes: the current task's classes (anchors), a sequence of int or a 1-D integer tensor.
        previous_classes: the classes of earlier tasks, whose prototypes are negatives (the official rows
            ``[:min(current_classes)]``; a list makes any class order work). Empty in the first task.
        temperature: τ (the authors' scripts: 0.5).
        base_temperature: τ_base (0.07); the loss is scaled by τ/τ_base.
        gamma: focusing parameter γ ∈ {0, 1, 2, …} (the scripts: 1).

    Returns:
        A scalar tensor (float32, or float64 for float64 input).

    Memory: one N×N float matrix and one N×N bool mask. Under DDP: the loss is computed on the rows it is given; the
    method gathers the global batch with gradients before calling it.
    """
    loss = "fnc2"
    check_temperature(temperature, "temperature", loss)
    check_temperature(base_temperature, "base_temperature", loss)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma != int(gamma) or gamma < 0:
        raise ValueError(
            f"{loss}: `gamma` must be a non-negative integer (p_ii may exceed 1, so a fractional power "
            f"is undefined), got {gamma!r}."
        )
    gamma = int(gamma)
    check_matrix(z, "z", loss)
    check_matrix(prototypes, "prototypes", loss, dim=z.shape[1])
    n, num_classes = z.shape[0], prototypes.shape[0]
    check_labels(labels, n, loss, num_classes=num_classes)
    check_unit_rows(z, "z", loss)
    check_unit_rows(prototypes, "prototypes", loss)
    current = _class_tensor(current_classes, loss, "current_classes", labels.device, num_classes=num_classes)
    previous = _class_tensor(previous_classes, loss, "previous_classes", labels.device, num_classes=num_classes)
    if n == 1 and previous.numel() == 0:
        raise ValueError(f"{loss}: one row and no previous class leave the denominator empty; pass at least 2 rows.")

    with autocast_off(z):
        dtype = compute_dtype(z)
        z = z.to(dtype)
        w = prototypes.detach().to(device=z.device, dtype=dtype)
        labels = labels.to(z.device)
        zs, logits = _masked_gram(z, temperature) if n >= 2 else (z * (1.0 / temperature), None)
        log_d = [torch.logsumexp(logits, dim=1)] if logits is not None else []
        if previous.numel():
            log_d.append(torch.logsumexp(torch.mm(zs, w.index_select(0, previous.to(z.device)).t()), dim=1))
        log_d = log_d[0] if len(log_d) == 1 else torch.logaddexp(log_d[0], log_d[1])
        own = (zs * w.index_select(0, labels)).sum(dim=1)  # s_ii := z_i·w_{y_i}/τ
        if logits is None:
            logits = own.unsqueeze(1)
        else:
            logits = torch.diagonal_scatter(logits, own)
        log_p = logits - log_d.unsqueeze(1)
        del logits
        positive = labels.unsqueeze(1) == labels.unsqueeze(0)  # the diagonal (own prototype) included
        weighted = log_p if gamma == 0 else (-torch.expm1(log_p)).pow(gamma) * log_p
        per_anchor = -torch.where(positive, weighted, weighted.new_zeros(())).sum(dim=1) / positive.sum(dim=1)
        anchors = torch.isin(labels, current).to(dtype)
        return (per_anchor * anchors).sum() * (temperature / base_temperature / n)


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
    """Module form of :func:`fnc2`: ``FNC2Loss(temperature=0.5, base_temperature=0.07, gamma=1)(z, labels,
    prototypes, current_classes, previous_classes)`` (the per-call tensors positionally or by keyword)."""

    _fn = staticmethod(fnc2)

    def __init__(self, temperature: float = 0.5, base_temperature: float = 0.07, gamma: int = 1):
        super().__init__(temperature=temperature, base_temperature=base_temperature, gamma=gamma)

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor,
        prototypes: torch.Tensor,
        current_classes: Sequence[int] | torch.Tensor,
        previous_classes: Sequence[int] | torch.Tensor,
    ) -> torch.Tensor:
        return fnc2(z, labels, prototypes, current_classes, previous_classes, **self.hyper_parameters)
