"""Self-supervised contrastive losses: SimCLR NT-Xent, MoCo InfoNCE, Sy-CON/PNR and CaSSLe distillation.

All functions are pure: they take tensors and return a scalar, hold no state and never re-normalise. Every
embedding must have unit-norm rows. Tensors that carry no gradient (momentum keys, queues, past-model outputs) are
detached inside. Computation runs in float32 at least (float64 stays float64) with autocast off, so half/bfloat16
inputs give a float32 loss; every log-sum-exp subtracts its row maximum (``torch.logsumexp``).
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_matrix, check_unit_rows, compute_dtype
from .normalized import _autocast_off, _check_nonempty, _check_positive, _upcast

__all__ = [
    "nt_xent",
    "moco_infonce",
    "pnr_moco",
    "pnr_simclr",
    "cassle_distill",
    "NTXentLoss",
    "MoCoInfoNCELoss",
    "PNRMoCoLoss",
    "PNRSimCLRLoss",
    "CaSSLeDistillLoss",
]

_NEG_INF = float("-inf")


def _check_rows(tensors: dict, loss: str, rows: int | None = None, dim: int | None = None) -> None:
    """Shape checks for a group of row-aligned tensors, then unit-norm (and finiteness) checks."""
    for name, x in tensors.items():
        check_matrix(x, name, loss, rows=rows, dim=dim)
        if rows is None:
            _check_nonempty(x, name, loss)
            rows = x.shape[0]
        if dim is None:
            dim = x.shape[1]
    for name, x in tensors.items():
        check_unit_rows(x, name, loss)


def _info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """mean_i CE([a_i·p_i, a_i·Nᵀ] / τ, target 0) = mean_i [logsumexp(...) − a_i·p_i / τ]."""
    pos = (anchor * positive).sum(dim=1) / tau  # (B,)
    neg = anchor @ negatives.T / tau  # (B, M)
    lse = torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1)
    return (lse - pos).mean()


def _diag_mask(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, dtype=torch.bool, device=device)


@_autocast_off
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR NT-Xent (Chen et al., ICML 2020; as solo-learn ``solo/losses/simclr.py``).

    With ``z = cat(z1, z2)`` (2B, d) and ``s = z zᵀ / τ``, the positive of row i is the other view of the same image
    (row i ± B); the denominator sums over all 2B − 1 other rows, positive included:

    .. math:: \\mathcal{L} = \\frac{1}{2B}\\sum_{i=1}^{2B}
        \\Big[-s_{i,i\\pm B} + \\log\\sum_{j\\ne i} e^{s_{ij}}\\Big]

    Args:
        z1: (B, d) L2-normalised projections of view 1.
        z2: (B, d) L2-normalised projections of view 2, row-aligned with z1.
        temperature: τ > 0.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given; the engine gathers the global batch with gradients
    (``contrast_scope: global``). Official CaSSLe/PNR SimCLR losses are per-GPU, reproduced by
    ``contrast_scope: local``.
    """
    loss = "nt_xent"
    _check_rows({"z1": z1, "z2": z2}, loss)
    tau = _check_positive(temperature, "temperature", loss)
    z1, z2 = _upcast(compute_dtype(z1, z2), z1, z2)
    b = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)  # (2B, d)
    logits = (z @ z.T / tau).masked_fill(_diag_mask(2 * b, z.device), _NEG_INF)
    positive = (z * z.roll(b, dims=0)).sum(dim=1) / tau  # row i pairs with i ± B
    return (torch.logsumexp(logits, dim=1) - positive).mean()


@_autocast_off
def moco_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo v2+ InfoNCE (He et al., CVPR 2020; Chen et al., "Improved Baselines with Momentum Contrastive Learning",
    2020).

    .. math:: \\mathcal{L} = \\frac1B\\sum_i \\mathrm{CE}\\big([q_i\\cdot k_i,\\ q_i\\cdot Q^\\top] / \\tau,\\ 0\\big)

    With an empty queue (M = 0) the only logit is the positive and the loss is 0.

    Args:
        q: (B, d) L2-normalised queries; carry gradient.
        k: (B, d) L2-normalised momentum keys of the other view; detached inside.
        queue: (M, d) L2-normalised queued keys (read before this step's enqueue); detached inside.
        temperature: τ > 0.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given (the engine passes the gathered queries and keys); MoCo queues hold
    keys gathered from all ranks, so they are identical on every rank.
    """
    loss = "moco_infonce"
    _check_rows({"q": q, "k": k}, loss)
    check_matrix(queue, "queue", loss, dim=q.shape[1])
    check_unit_rows(queue, "queue", loss)
    tau = _check_positive(temperature, "temperature", loss)
    q, k, queue = _upcast(compute_dtype(q, k, queue), q, k.detach(), queue.detach())
    return _info_nce(q, k, queue, tau)


@_autocast_off
def pnr_moco(
    q: torch.Tensor,
    k: torch.Tensor,
    p: torch.Tensor,
    f: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
    distill_temperature: float = 0.2,
) -> torch.Tensor:
    """Sy-CON / PNR loss for one query view, MoCo base (Cha et al., ICML 2024, arXiv 2306.05101; csm9493/PNR
    ``cassle/losses/pnr.py``).

    .. math:: \\mathcal{L} = \\mathrm{CE}\\big([q\\cdot k,\\ q\\cdot N^\\top]/\\tau,\\ 0\\big)
        + \\mathrm{CE}\\big([p\\cdot f,\\ p\\cdot N^\\top]/\\tau_d,\\ 0\\big)

    each CE a mean over the B rows; the two terms are summed with weight 1. N (the pseudo-negatives) is the other
    view's slot of the current-key queue concatenated with the other view's slot of the past-model queue, both read
    before this step's enqueue.

    Args:
        q: (B, d) current model's normalised projection of view v; carries gradient.
        k: (B, d) momentum key of the other view; detached inside.
        p: (B, d) normalize(predictor(q)); carries gradient.
        f: (B, d) frozen past model's normalised projection of the same view v; detached inside.
        negatives: (M, d) unit-norm pseudo-negatives; detached inside.
        temperature: τ of the plasticity term.
        distill_temperature: τ_d of the stability (distillation) term.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given; the queues hold keys and past-model outputs gathered from all ranks,
    so they are identical on every rank.
    """
    loss = "pnr_moco"
    _check_rows({"q": q, "k": k, "p": p, "f": f}, loss)
    check_matrix(negatives, "negatives", loss, dim=q.shape[1])
    check_unit_rows(negatives, "negatives", loss)
    tau = _check_positive(temperature, "temperature", loss)
    tau_d = _check_positive(distill_temperature, "distill_temperature", loss)
    q, k, p, f, negatives = _upcast(
        compute_dtype(q, k, p, f, negatives), q, k.detach(), p, f.detach(), negatives.detach()
    )
    return _info_nce(q, k, negatives, tau) + _info_nce(p, f, negatives, tau_d)


@_autocast_off
def pnr_simclr(
    z1: torch.Tensor,
    z2: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    f1: torch.Tensor,
    f2: torch.Tensor,
    temperature: float = 0.2,
) -> torch.Tensor:
    """Sy-CON / PNR loss, in-batch SimCLR base (Cha et al., ICML 2024, arXiv 2306.05101; PNR's
    ``simclr_moco_loss_func``).

    With z = cat(z1, z2), p = cat(p1, p2), f = cat(f1, f2) (2B, d) and every dot product divided by τ:

    .. math::
        \\mathcal{L}_P = -\\frac{1}{2B}\\sum_i\\Big[z_i\\cdot z_{i\\pm B}
            - \\log\\sum_{j\\ne i}\\big(e^{z_i\\cdot z_j} + e^{z_i\\cdot f_j}\\big)\\Big],\\quad
        \\mathcal{L}_S = -\\frac{1}{2B}\\sum_i\\Big[p_i\\cdot f_i
            - \\log\\sum_{j\\ne i}\\big(e^{p_i\\cdot f_j} + e^{p_i\\cdot z_j}\\big)\\Big]

    loss = L_P + L_S. As in the official code the stability positive p_i·f_i is not in its own denominator (the loss
    may be negative), and z receives gradient from both terms.

    Args:
        z1, z2: (B, d) current model's normalised projections of the two views; carry gradient.
        p1, p2: (B, d) normalize(predictor(z)) of the two views; carry gradient.
        f1, f2: (B, d) frozen past model's normalised projections of the two views; detached inside.
        temperature: τ (the distillation temperature) for every term.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given; the engine gathers the global batch with gradients
    (``contrast_scope: global``). The official PNR SimCLR loss is per-GPU, reproduced by ``contrast_scope: local``.
    """
    loss = "pnr_simclr"
    _check_rows({"z1": z1, "z2": z2, "p1": p1, "p2": p2, "f1": f1, "f2": f2}, loss)
    tau = _check_positive(temperature, "temperature", loss)
    dtype = compute_dtype(z1, z2, p1, p2, f1, f2)
    z = torch.cat(_upcast(dtype, z1, z2), dim=0)  # (2B, d)
    p = torch.cat(_upcast(dtype, p1, p2), dim=0)
    f = torch.cat(_upcast(dtype, f1.detach(), f2.detach()), dim=0)
    b = z1.shape[0]
    diag = _diag_mask(2 * b, z.device)
    zf = torch.cat([z, f], dim=0)  # candidates of the plasticity term
    fz = torch.cat([f, z], dim=0)  # candidates of the stability term
    diag2 = torch.cat([diag, diag], dim=1)  # (2B, 4B): drops j = i in both blocks
    plastic_logits = (z @ zf.T / tau).masked_fill(diag2, _NEG_INF)
    plastic_pos = (z * z.roll(b, dims=0)).sum(dim=1) / tau
    stable_logits = (p @ fz.T / tau).masked_fill(diag2, _NEG_INF)
    stable_pos = (p * f).sum(dim=1) / tau
    plasticity = (torch.logsumexp(plastic_logits, dim=1) - plastic_pos).mean()
    stability = (torch.logsumexp(stable_logits, dim=1) - stable_pos).mean()
    return plasticity + stability


@_autocast_off
def cassle_distill(p: torch.Tensor, f: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """CaSSLe contrastive distillation (Fini et al., "Self-Supervised Models are Continual Learners", CVPR 2022;
    its ``simclr_distill_loss_func``).

    .. math:: D(a, b) = -\\frac{1}{2B}\\sum_i \\log\\frac{\\exp(a_i\\cdot b_i/\\tau)}{\\sum_{j=1}^{2B}
        \\exp(a_i\\cdot b_j/\\tau)},\\qquad \\mathcal{L} = \\tfrac12\\big[D(p, f) + D(f, p)\\big]

    (all 2B rows of b, positive included).

    Args:
        p: (2B, d) normalize(predictor(z)) of both views stacked; carries gradient.
        f: (2B, d) frozen past model's normalised projections, row-aligned with p; detached inside.
        temperature: τ > 0.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given; the engine gathers the global batch with gradients
    (``contrast_scope: global``). The official CaSSLe loss is per-GPU, reproduced by ``contrast_scope: local``.
    """
    loss = "cassle_distill"
    _check_rows({"p": p, "f": f}, loss)
    tau = _check_positive(temperature, "temperature", loss)
    p, f = _upcast(compute_dtype(p, f), p, f.detach())
    logits = p @ f.T / tau  # (2B, 2B): [i, j] = p_i·f_j / τ
    positive = (p * f).sum(dim=1) / tau
    d_pf = (torch.logsumexp(logits, dim=1) - positive).mean()  # anchors p, candidates f
    d_fp = (torch.logsumexp(logits, dim=0) - positive).mean()  # anchors f, candidates p (columns)
    return 0.5 * (d_pf + d_fp)


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent`: ``NTXentLoss(temperature=0.2)(z1, z2)``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class MoCoInfoNCELoss(nn.Module):
    """Module form of :func:`moco_infonce`: ``MoCoInfoNCELoss(temperature=0.2)(q, k, queue)``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        return moco_infonce(q, k, queue, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class PNRMoCoLoss(nn.Module):
    """Module form of :func:`pnr_moco`: ``PNRMoCoLoss(temperature, distill_temperature)(q, k, p, f, negatives)``."""

    def __init__(self, temperature: float = 0.2, distill_temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature
        self.distill_temperature = distill_temperature

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, p: torch.Tensor, f: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        return pnr_moco(
            q, k, p, f, negatives, temperature=self.temperature, distill_temperature=self.distill_temperature
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, distill_temperature={self.distill_temperature}"


class PNRSimCLRLoss(nn.Module):
    """Module form of :func:`pnr_simclr`: ``PNRSimCLRLoss(temperature=0.2)(z1, z2, p1, p2, f1, f2)``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self, z1: torch.Tensor, z2: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor
    ) -> torch.Tensor:
        return pnr_simclr(z1, z2, p1, p2, f1, f2, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class CaSSLeDistillLoss(nn.Module):
    """Module form of :func:`cassle_distill`: ``CaSSLeDistillLoss(temperature=0.2)(p, f)``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, p: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return cassle_distill(p, f, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
