"""Relation distillation from a frozen past model: IRD (Co2L), S-PRD (CCLIS) and their FNC2 blend HSD.

Each loss is a cross-entropy ``Σ −q log p`` between a detached target distribution q (past model) and the current
model's distribution p, written as ``LSE_i − Σ_j q_ij l_ij`` (l = current logits) so that no ``0 · log 0`` appears.
Inputs must be L2-normalised; half/bfloat16 inputs are computed in float32 with autocast off and give a float32 result.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import autocast_off, check_matrix, check_temperature, check_unit_rows, compute_dtype

__all__ = ["ird", "prd", "hsd", "hsd_alpha", "HSD_SCHEDULES", "IRDLoss", "PRDLoss", "HSDLoss"]


def _check_old_prototypes(prototypes: torch.Tensor, name: str, z: torch.Tensor, loss: str, why_needed: str) -> None:
    """Previous-task prototypes (shared by prd and hsd): a non-empty (C_old, d) matrix of unit rows."""
    check_matrix(prototypes, name, loss, dim=z.shape[1])
    if prototypes.shape[0] == 0:
        raise ValueError(f"{loss}: `{name}` is empty; {why_needed}")
    check_unit_rows(prototypes, name, loss)


def _check_pair(z: torch.Tensor, z_past: torch.Tensor, loss: str) -> None:
    check_matrix(z, "z", loss)
    check_matrix(z_past, "z_past", loss, rows=z.shape[0], dim=z.shape[1])
    check_unit_rows(z, "z", loss)
    check_unit_rows(z_past, "z_past", loss)


def _ird(z: torch.Tensor, z_past: torch.Tensor, current_temperature: float, past_temperature: float) -> torch.Tensor:
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"ird: needs at least 2 rows (each row's relations are to the other rows), got {n}.")
    dtype = compute_dtype(z)
    z = z.to(dtype)
    with torch.no_grad():
        zp = z_past.detach().to(dtype)
        past = torch.mm(zp * (1.0 / past_temperature), zp.t())
        past.diagonal().fill_(float("-inf"))
        q = torch.softmax(past, dim=1)  # q_ii = 0 exactly
        del past
    cur = torch.mm(z * (1.0 / current_temperature), z.t())
    # Σ_j q_ij l_ij with q_ii = 0: the diagonal of `cur` is still finite here
    cross = (q * cur).sum(dim=1)
    cur = cur.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    lse = torch.logsumexp(cur, dim=1)
    return (lse - cross).mean()


def _prd(
    z: torch.Tensor, z_past: torch.Tensor, prototypes: torch.Tensor, current_temperature: float, past_temperature: float
) -> torch.Tensor:
    dtype = compute_dtype(z)
    z = z.to(dtype)
    w = prototypes.detach().to(device=z.device, dtype=dtype)
    with torch.no_grad():
        q = torch.softmax(torch.mm(z_past.detach().to(dtype), w.t()) * (1.0 / past_temperature), dim=1)
    cur = torch.mm(z * (1.0 / current_temperature), w.t())
    return (torch.logsumexp(cur, dim=1) - (q * cur).sum(dim=1)).mean()


def ird(
    z: torch.Tensor, z_past: torch.Tensor, current_temperature: float = 0.2, past_temperature: float = 0.01
) -> torch.Tensor:
    r"""Instance-wise relation distillation (Cha et al., "Co2L: Contrastive Continual Learning", ICCV 2021).

    For each row, softmax over the other N−1 rows of the similarity ``z zᵀ/κ`` (diagonal removed), for the current
    model (p, temperature κ_cur) and the frozen past model (q, κ_past, no gradient)::

        p_ij = exp(z_i·z_j/κ_cur) / Σ_{k≠i} exp(z_i·z_k/κ_cur)      (j ≠ i; q likewise from z_past)
        loss = (1/N) Σ_i Σ_{j≠i} −q_ij log p_ij

    A cross-entropy, not a KL: same gradient, but the value includes the entropy H(q).

    Args:
        z: (N, d) L2-normalised current-model embeddings, N ≥ 2.
        z_past: (N, d) L2-normalised past-model embeddings of the **same augmented images**, row-aligned (detached).
        current_temperature: κ_cur (Co2L: 0.2).
        past_temperature: κ_past (Co2L: 0.01).

    Returns:
        A scalar tensor (float32, or float64 for float64 input).

    Under DDP: the loss is computed on the rows it is given; the engine gathers the global batch (z with gradients,
    z_past without) before calling it.
    """
    loss = "ird"
    check_temperature(current_temperature, "current_temperature", loss)
    check_temperature(past_temperature, "past_temperature", loss)
    _check_pair(z, z_past, loss)
    with autocast_off(z):
        return _ird(z, z_past, current_temperature, past_temperature)


def prd(
    z: torch.Tensor,
    z_past: torch.Tensor,
    prototypes: torch.Tensor,
    current_temperature: float = 0.2,
    past_temperature: float = 0.1,
) -> torch.Tensor:
    r"""Sample–prototype relation distillation, S-PRD (Li et al., "Contrastive Continual Learning with Importance
    Sampling and Prototype-Instance Relation Distillation" — CCLIS, AAAI 2024).

    Over the rows w_c of ``prototypes`` (the prototypes of all previous-task classes; fixed, shared by both models)::

        p_i = softmax_c(z_i·w_c / τ_cur),   q_i = softmax_c(z_past_i·w_c / τ_past)   (q detached)
        loss = (1/N) Σ_i Σ_c −q_ic log p_ic

    Args:
        z: (N, d) L2-normalised current-model embeddings.
        z_past: (N, d) L2-normalised past-model embeddings of the same rows (detached).
        prototypes: (C_old, d) unit-norm prototypes of the previous-task classes, C_old ≥ 1 (detached).
        current_temperature: τ_cur (0.2).
        past_temperature: τ_past (CCLIS: 0.1).

    Returns:
        A scalar tensor (float32, or float64 for float64 input).

    Under DDP: the loss is computed on the rows it is given; the engine gathers the global batch with gradients
    before calling it.
    """
    loss = "prd"
    check_temperature(current_temperature, "current_temperature", loss)
    check_temperature(past_temperature, "past_temperature", loss)
    _check_pair(z, z_past, loss)
    _check_old_prototypes(
        prototypes,
        "prototypes",
        z,
        loss,
        "it needs the prototypes of at least one previous-task class (do not apply it in the first task).",
    )
    with autocast_off(z):
        return _prd(z, z_past, prototypes, current_temperature, past_temperature)


def hsd(
    z: torch.Tensor,
    z_past: torch.Tensor,
    prototypes: torch.Tensor,
    alpha,
    ird_temperatures: tuple[float, float] = (0.2, 0.01),
    prd_temperatures: tuple[float, float] = (0.2, 0.1),
) -> torch.Tensor:
    r"""Hardness–softness distillation (FNC2 + HSD; Dang et al., WACV 2025, arXiv 2412.02865), as the authors' code
    computes it (dangtrunganh/samix ``src/distillation/stab_loss.py``, ``compute_distillation_loss``, branch ``hsd``)::

        hsd = α · ird(z, z_past, *ird_temperatures) + (1 − α) · prd(z, z_past, prototypes, *prd_temperatures)

    α weighs IRD (the paper's convention; the code's ``alpha_balance_distillation`` is 1 − α) and comes from
    :func:`hsd_alpha`. ``prototypes`` are the fixed prototypes of **every class seen so far, the current task's
    included** (the scripts' ``--filter_distillation_point``, ``get_prototypes``). The scripts' temperatures are the
    defaults: IRD 0.2 / 0.01 (``--current_temp``/``--past_temp``), S-PRD 0.2 / 0.1 (``--current_temp_sprd``/
    ``--past_temp_sprd``). When α is exactly 1 (or 0) the other term is not computed, so ``hsd(α=1) == ird`` and
    ``hsd(α=0) == prd`` exactly. Not applied in the first task.

    Args:
        z: (N, d) L2-normalised current-model embeddings.
        z_past: (N, d) past-model embeddings of the same augmented rows (detached).
        prototypes: (C_seen, d) prototypes of the classes seen so far.
        alpha: IRD weight in [0, 1] (float or 0-d tensor).
        ird_temperatures: (κ_cur, κ_past) of :func:`ird`.
        prd_temperatures: (τ_cur, τ_past) of :func:`prd`.

    Returns:
        A scalar tensor (float32, or float64 for float64 input).

    Under DDP: the loss is computed on the rows it is given; the method gathers the global batch with gradients
    before calling it.
    """
    loss = "hsd"
    if isinstance(alpha, torch.Tensor):
        if alpha.numel() != 1:
            raise ValueError(f"{loss}: `alpha` must be a scalar, got shape {tuple(alpha.shape)}.")
    else:
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{loss}: `alpha` must be in [0, 1], got {alpha!r}.")
    ird_cur, ird_past = ird_temperatures
    prd_cur, prd_past = prd_temperatures
    for name, t in (
        ("ird_temperatures", ird_cur),
        ("ird_temperatures", ird_past),
        ("prd_temperatures", prd_cur),
        ("prd_temperatures", prd_past),
    ):
        check_temperature(t, name, loss)
    _check_pair(z, z_past, loss)
    _check_old_prototypes(prototypes, "prototypes", z, loss, "pass the prototypes of the classes seen so far.")
    with autocast_off(z):
        if isinstance(alpha, float) and alpha == 1.0:
            return _ird(z, z_past, ird_cur, ird_past)
        if isinstance(alpha, float) and alpha == 0.0:
            return _prd(z, z_past, prototypes, prd_cur, prd_past)
        return alpha * _ird(z, z_past, ird_cur, ird_past) + (1 - alpha) * _prd(z, z_past, prototypes, prd_cur, prd_past)


HSD_SCHEDULES = ("official", "linear", "cosine", "constant")


def hsd_alpha(
    step: int,
    total_steps: int,
    schedule: str = "official",
    alpha0: float = 1.0,
    epochs: int = 1,
    marks: tuple[float, float] = (0.3, 0.8),
) -> float:
    r"""HSD's IRD weight α at step s = 0…S−1 of a task of S steps spread over E = ``epochs`` epochs.

    - ``"official"`` (default; dangtrunganh/samix ``main_train.py``, ``--main_mark``/``second_mark``), per epoch
      e = 1…E (the epoch of step s is ⌊s·E/S⌋ + 1), with marks (m, s_m) = ``marks``::

          α = 1                     for e < m·E
          α = 1 − (e − m·E)/E       for m·E ≤ e < s_m·E
          α = 1 − (s_m − m)         for e ≥ s_m·E

      so α goes 1 → 0.5 with the default marks (0.3, 0.8) and stays there (1 → 0.6 with Tiny-ImageNet's (0.4, 0.8)).
    - ``"linear"``: α = 1 − s/(S−1);  ``"cosine"``: α = ½(1 + cos(π s/(S−1)));  ``"constant"``: α = α₀.

    For S = 1 the linear and cosine schedules give α = 1. Returns a Python float in [0, 1].
    """
    if schedule not in HSD_SCHEDULES:
        raise ValueError(f"hsd_alpha: unknown schedule {schedule!r}; choose one of {', '.join(HSD_SCHEDULES)}.")
    total_steps, step, epochs = int(total_steps), int(step), int(epochs)
    if total_steps < 1:
        raise ValueError(f"hsd_alpha: `total_steps` must be >= 1, got {total_steps}.")
    if not 0 <= step < total_steps:
        raise ValueError(f"hsd_alpha: `step` must be in 0..{total_steps - 1}, got {step}.")
    if schedule == "constant":
        alpha0 = float(alpha0)
        if not 0.0 <= alpha0 <= 1.0:
            raise ValueError(f"hsd_alpha: `alpha0` must be in [0, 1], got {alpha0!r}.")
        return alpha0
    if schedule == "official":
        main, second = (float(m) for m in marks)
        if epochs < 1:
            raise ValueError(f"hsd_alpha: `epochs` must be >= 1, got {epochs}.")
        if not 0.0 <= main <= second <= 1.0:
            raise ValueError(f"hsd_alpha: `marks` must satisfy 0 <= first <= second <= 1, got {marks!r}.")
        epoch = step * epochs // total_steps + 1
        if epoch < main * epochs:
            return 1.0
        if epoch < second * epochs:
            return 1.0 - (epoch - main * epochs) / epochs
        return 1.0 - (second - main)
    if total_steps == 1:
        return 1.0
    frac = step / (total_steps - 1)
    if schedule == "linear":
        return 1.0 - frac
    return 0.5 * (1.0 + math.cos(math.pi * frac))


# ---------------------------------------------------------------------------------------------------------------------
# nn.Module wrappers: one call shape  loss(z, labels=None, **per_call_tensors); these losses ignore labels
# ---------------------------------------------------------------------------------------------------------------------


class IRDLoss(nn.Module):
    """Module form of :func:`ird`: ``IRDLoss(current_temperature=0.2, past_temperature=0.01)(z, z_past)``."""

    def __init__(self, current_temperature: float = 0.2, past_temperature: float = 0.01):
        super().__init__()
        self.current_temperature, self.past_temperature = current_temperature, past_temperature

    def forward(self, z, z_past):
        return ird(z, z_past, self.current_temperature, self.past_temperature)

    def extra_repr(self) -> str:
        return f"current_temperature={self.current_temperature}, past_temperature={self.past_temperature}"


class PRDLoss(nn.Module):
    """Module form of :func:`prd`:
    ``PRDLoss(current_temperature=0.2, past_temperature=0.1)(z, z_past, prototypes)``."""

    def __init__(self, current_temperature: float = 0.2, past_temperature: float = 0.1):
        super().__init__()
        self.current_temperature, self.past_temperature = current_temperature, past_temperature

    def forward(self, z, z_past, prototypes):
        return prd(z, z_past, prototypes, self.current_temperature, self.past_temperature)

    def extra_repr(self) -> str:
        return f"current_temperature={self.current_temperature}, past_temperature={self.past_temperature}"


class HSDLoss(nn.Module):
    """Module form of :func:`hsd`: ``HSDLoss(ird_temperatures=(0.2, 0.01), prd_temperatures=(0.2, 0.1))(z, z_past,
    prototypes, alpha)`` (the per-call tensors positionally or by keyword)."""

    def __init__(
        self, ird_temperatures: tuple[float, float] = (0.2, 0.01), prd_temperatures: tuple[float, float] = (0.2, 0.1)
    ):
        super().__init__()
        self.ird_temperatures, self.prd_temperatures = tuple(ird_temperatures), tuple(prd_temperatures)

    def forward(self, z, z_past, prototypes, alpha):
        return hsd(z, z_past, prototypes, alpha, self.ird_temperatures, self.prd_temperatures)

    def extra_repr(self) -> str:
        return f"ird_temperatures={self.ird_temperatures}, prd_temperatures={self.prd_temperatures}"
