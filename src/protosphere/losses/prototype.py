"""Alignment of features with fixed prototypes: the NC-FSCIL / Neural Collapse Terminus misalignment (DR) loss, its
per-expert form and its use as a distillation towards the past model's outputs (NCT), and the cross-entropy on cosine
logits to the prototypes (NCT's CE head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (
    autocast_off,
    check_finite,
    check_labels,
    check_matrix,
    check_temperature,
    check_unit_rows,
    compute_dtype,
    validation_enabled,
)

__all__ = [
    "dr_loss",
    "expert_dr_loss",
    "dr_distill",
    "prototype_ce",
    "inverse_frequency_weights",
    "DRLoss",
    "PrototypeCELoss",
]


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    r"""Class-balanced weights ``c_k = 1/N_k`` for the classes present in ``labels`` and 0 for the others.

    Pass the labels of the **globally gathered** batch under DDP (NCT counts classes in the whole batch). Computed
    with ``index_add`` (no host sync).

    Args:
        labels: (N,) integer labels in ``[0, num_classes)``.
        num_classes: K.

    Returns:
        (K,) float32 tensor on the labels' device.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"inverse_frequency_weights: `num_classes` must be >= 1, got {num_classes}.")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise ValueError("inverse_frequency_weights: `labels` must be a 1-D integer tensor.")
    check_labels(labels, labels.shape[0], "inverse_frequency_weights", num_classes=num_classes)
    counts = torch.zeros(num_classes, dtype=torch.float32, device=labels.device)
    counts.index_add_(0, labels, torch.ones(labels.shape[0], dtype=torch.float32, device=labels.device))
    return torch.where(counts > 0, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))


def dr_loss(
    z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Misalignment / dot-regression (DR) loss (Yang et al., "Neural Collapse Inspired Feature-Classifier Alignment for
    Few-Shot Class-Incremental Learning" — NC-FSCIL, ICLR 2023; used by Neural Collapse Terminus, NCT)::

        loss = ½ Σ_i a_i (z_i·w_{y_i} − 1)²
        a_i  = 1/N                       (class_weights is None)
        a_i  = c_{y_i} / Σ_j c_{y_j}     (per-class weights c, e.g. :func:`inverse_frequency_weights`)

    Only the target prototype enters. With ``c_k = 1/N_k`` this equals the official ``ETFHead(with_len=True)`` target
    rescaling. The loss weight (10; 50 for distillation) is applied by the method, not here.

    Args:
        z: (N, d) L2-normalised features.
        labels: (N,) integer labels in ``[0, K)``.
        prototypes: (K, d) unit-norm prototypes (e.g. simplex-ETF rows), detached inside.
        class_weights: optional (K,) non-negative per-class weights; the weights of the classes present must not
            all be 0.

    Returns:
        A scalar tensor (float32, or float64 for float64 input).

    Under DDP: the loss is computed on the rows it is given; the engine gathers the global batch with gradients
    before calling it (and class counts for the weights come from that global batch).
    """
    loss = "dr_loss"
    check_matrix(z, "z", loss)
    check_matrix(prototypes, "prototypes", loss, dim=z.shape[1])
    num_classes = prototypes.shape[0]
    check_labels(labels, z.shape[0], loss, num_classes=num_classes)
    check_unit_rows(z, "z", loss)
    check_unit_rows(prototypes, "prototypes", loss)
    _check_class_weights(class_weights, num_classes, loss)
    if z.shape[0] == 0:
        raise ValueError(f"{loss}: `z` has no rows.")
    with autocast_off(z):
        dtype = compute_dtype(z)
        z = z.to(dtype)
        target = prototypes.detach().to(device=z.device, dtype=dtype).index_select(0, labels)
        sq = ((z * target).sum(dim=1) - 1.0).square()
        if class_weights is None:
            return 0.5 * sq.mean()
        a = class_weights.detach().to(device=z.device, dtype=dtype).index_select(0, labels)
        total = a.sum()
        if validation_enabled() and not bool(total > 0):
            raise ValueError(
                f"{loss}: the class weights of the labels in the batch sum to 0; give present classes "
                f"a positive weight."
            )
        return 0.5 * (a * sq).sum() / total


def _check_class_weights(class_weights: torch.Tensor | None, num_classes: int, loss: str) -> None:
    if class_weights is None:
        return
    if not isinstance(class_weights, torch.Tensor) or tuple(class_weights.shape) != (num_classes,):
        got = tuple(class_weights.shape) if isinstance(class_weights, torch.Tensor) else type(class_weights).__name__
        raise ValueError(
            f"{loss}: `class_weights` must be a tensor of shape ({num_classes},) (one weight per prototype), got {got}."
        )
    check_finite(class_weights, "class_weights", loss)
    if validation_enabled() and bool((class_weights < 0).any()):
        raise ValueError(f"{loss}: `class_weights` must be non-negative.")


def prototype_ce(
    z: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float = 0.1,
    class_weights: torch.Tensor | None = None,
    normalize_prototypes: bool = False,
) -> torch.Tensor:
    r"""Cross-entropy on the cosine logits of features to class prototypes: NCT's CE head on the fixed simplex ETF
    (Yang et al., Neural Collapse Terminus), and with ``normalize_prototypes`` a cosine classifier whose rows are
    trained (NCT's learnable-classifier baseline)::

        s_ik = z_i · w_k / τ           w_k = prototypes_k, or prototypes_k / ‖prototypes_k‖ with normalize_prototypes
        loss = Σ_i a_i CE(s_i, y_i) / Σ_i a_i
        a_i  = 1                       (class_weights is None)
        a_i  = c_{y_i}                 (per-class weights c, e.g. :func:`inverse_frequency_weights`)

    Normalising trained rows keeps the logits cosines / τ, as with unit ETF rows. Unweighted and with
    ``normalize_prototypes`` it is :func:`~protosphere.losses.normface`'s equation.

    Args:
        z: (N, d) L2-normalised features.
        labels: (N,) integer labels in ``[0, K)``.
        prototypes: (K, d) unit-norm rows (checked), or with ``normalize_prototypes`` any non-zero rows; they carry
            gradient (a trained classifier learns through this loss).
        temperature: τ > 0.
        class_weights: optional (K,) non-negative per-class weights; those of the classes present must not all be 0.
        normalize_prototypes: row-normalise ``prototypes`` inside.

    Returns:
        A scalar tensor in the dtype the logits are computed in: z's, or, under autocast, the cross-entropy's float32.
        Unlike the other losses here it leaves autocast on (so NCT's mixed-precision runs compute as they always did).

    Under DDP: the loss is computed on the rows it is given; the engine gathers the global batch with gradients
    before calling it (and class counts for the weights come from that global batch).
    """
    loss = "prototype_ce"
    check_matrix(z, "z", loss)
    check_matrix(prototypes, "prototypes", loss, dim=z.shape[1])
    num_classes = prototypes.shape[0]
    check_labels(labels, z.shape[0], loss, num_classes=num_classes)
    check_unit_rows(z, "z", loss)
    if normalize_prototypes:
        check_finite(prototypes, "prototypes", loss)
    else:
        check_unit_rows(prototypes, "prototypes", loss)
    check_temperature(temperature, "temperature", loss)
    _check_class_weights(class_weights, num_classes, loss)
    if z.shape[0] == 0:
        raise ValueError(f"{loss}: `z` has no rows.")
    weight = F.normalize(prototypes, dim=1) if normalize_prototypes else prototypes
    ce = F.cross_entropy(z @ weight.T / temperature, labels, reduction="none")
    a = class_weights[labels] if class_weights is not None else torch.ones_like(ce)
    total = a.sum()
    if class_weights is not None and validation_enabled() and not bool(total > 0):
        raise ValueError(
            f"{loss}: the class weights of the labels in the batch sum to 0; give present classes a positive weight."
        )
    return (a * ce).sum() / total


def expert_dr_loss(
    expert_z: torch.Tensor, labels: torch.Tensor, expert_of_class: torch.Tensor, prototypes: torch.Tensor
) -> torch.Tensor:
    r"""DR loss of each row's own expert (NCT's mixture of experts: expert e is aligned to the prototypes of task e)::

        loss = ½ · (1/N) Σ_i (z_{i, e(y_i)} · w_{y_i} − 1)²      e(k) = expert_of_class[k]

    i.e. :func:`dr_loss` on the rows ``expert_z[i, e(y_i)]``.

    Args:
        expert_z: (N, E, d) the L2-normalised output of each of the E experts for each row.
        labels: (N,) integer labels in ``[0, K)``.
        expert_of_class: (K,) integer index of the expert that owns each class (the task that introduced it); every
            label's entry must be in ``[0, E)``.
        prototypes: (K, d) unit-norm prototypes, detached inside.

    Returns:
        A scalar tensor (float32, or float64 for float64 input).
    """
    loss = "expert_dr_loss"
    if not isinstance(expert_z, torch.Tensor) or expert_z.dim() != 3:
        shape = tuple(expert_z.shape) if isinstance(expert_z, torch.Tensor) else type(expert_z).__name__
        raise ValueError(f"{loss}: `expert_z` must be a 3-D tensor (rows, experts, dim), got {shape}.")
    check_labels(labels, expert_z.shape[0], loss, num_classes=prototypes.shape[0])
    if not isinstance(expert_of_class, torch.Tensor) or tuple(expert_of_class.shape) != (prototypes.shape[0],):
        raise ValueError(
            f"{loss}: `expert_of_class` must be a tensor of shape ({prototypes.shape[0]},) (one expert "
            f"index per prototype)."
        )
    experts = expert_of_class.index_select(0, labels)
    if validation_enabled() and labels.numel():
        low, high = int(experts.min()), int(experts.max())
        if low < 0 or high >= expert_z.shape[1]:
            raise ValueError(
                f"{loss}: a label's expert index ({low if low < 0 else high}) is outside the "
                f"{expert_z.shape[1]} experts; set expert_of_class for every class in the batch."
            )
    own = expert_z[torch.arange(expert_z.shape[0], device=expert_z.device), experts]
    return dr_loss(own, labels, prototypes)


def dr_distill(z: torch.Tensor, z_past: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    r"""The DR loss with the past model's output as target (NCT's distillation from the t−1 model)::

        loss = ½ Σ_i m_i (z_i · z̃_i − 1)² / max(1, Σ_i m_i)

    with z̃ the past model's L2-normalised output for the same rows and m_i = 1 for the rows that are distilled
    (all rows when ``rows`` is None; NCT with a buffer: the rows of old classes). No distilled row gives 0.

    Args:
        z: (N, d) L2-normalised features of the current model.
        z_past: (N, d) L2-normalised features of the past model, detached inside.
        rows: optional (N,) bool or 0/1 mask of the distilled rows.

    Returns:
        A scalar tensor (float32, or float64 for float64 input).
    """
    loss = "dr_distill"
    check_matrix(z, "z", loss)
    check_matrix(z_past, "z_past", loss, rows=z.shape[0], dim=z.shape[1])
    check_unit_rows(z, "z", loss)
    check_unit_rows(z_past, "z_past", loss)
    if rows is not None and (not isinstance(rows, torch.Tensor) or tuple(rows.shape) != (z.shape[0],)):
        raise ValueError(f"{loss}: `rows` must be a mask of shape ({z.shape[0]},) (one entry per row of z).")
    with autocast_off(z):
        dtype = compute_dtype(z, z_past)
        z = z.to(dtype)
        rows = torch.ones(z.shape[0], dtype=dtype, device=z.device) if rows is None else rows.to(dtype)
        misalign = ((z * z_past.detach().to(dtype)).sum(1) - 1).square()
        return 0.5 * (rows * misalign).sum() / rows.sum().clamp_min(1)


class DRLoss(nn.Module):
    """Module form of :func:`dr_loss`: ``DRLoss()(z, labels, prototypes, class_weights=None)``."""

    def forward(self, z, labels, prototypes, class_weights=None):
        return dr_loss(z, labels, prototypes, class_weights)


class PrototypeCELoss(nn.Module):
    """Module form of :func:`prototype_ce`: ``PrototypeCELoss(temperature, normalize_prototypes=False)(z, labels,
    prototypes, class_weights=None)``."""

    def __init__(self, temperature: float = 0.1, normalize_prototypes: bool = False):
        super().__init__()
        self.temperature, self.normalize_prototypes = temperature, normalize_prototypes

    def forward(self, z, labels, prototypes, class_weights=None):
        return prototype_ce(z, labels, prototypes, self.temperature, class_weights, self.normalize_prototypes)
