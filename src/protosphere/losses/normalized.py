"""Normalised supervised losses: NC-by-Design (NormFace, NTCE, NONL) and CLOP.

All functions are pure: they take tensors and return a scalar, hold no state and never re-normalise the embeddings.
Embeddings and prototypes must have unit-norm rows; class weights of NormFace/NTCE/NONL are raw and are
row-normalised inside (they carry gradient). Computation runs in float32 at least (float64 stays float64) with autocast
off, so half/bfloat16 inputs give a float32 loss. Every log-sum-exp subtracts its row maximum (``torch.logsumexp``).
Unit-norm checks accept low-precision rows to the format's precision (bfloat16 rows are unit only to ~4e-3).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (
    autocast_off,
    check_finite,
    check_labels,
    check_matrix,
    check_unit_rows,
    compute_dtype,
    validation_enabled,
)

__all__ = [
    "normface",
    "ntce",
    "nonl",
    "clop",
    "supervised_ntxent",
    "NormFaceLoss",
    "NTCELoss",
    "NONLLoss",
    "CLOPLoss",
    "SupervisedNTXentLoss",
]

_NEG_INF = float("-inf")


_F = TypeVar("_F", bound=Callable[..., torch.Tensor])


def _autocast_off(fn: _F) -> _F:
    """Run a loss with autocast disabled on its first tensor's device: under autocast a matmul of float32 inputs would
    run in half precision, and the temperature-scaled log-sum-exp needs float32 at least."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = args[0] if args else next(iter(kwargs.values()), None)
        if not isinstance(first, torch.Tensor):
            return fn(*args, **kwargs)
        with autocast_off(first):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _upcast(dtype: torch.dtype, *tensors: torch.Tensor) -> Sequence[torch.Tensor]:
    return tuple(t.to(dtype) for t in tensors)


def _check_positive(value: float, name: str, loss: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{loss}: `{name}` must be a positive number, got {value!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{loss}: `{name}` must be a positive finite number, got {value}.")
    return value


def _check_nonempty(x: torch.Tensor, name: str, loss: str) -> None:
    if x.shape[0] == 0:
        raise ValueError(f"{loss}: `{name}` has no rows; a loss needs at least one sample.")


def _prepare_classwise(u, labels, weights, temperature, loss):
    """Shared validation and casting of (u, labels, weights) for NormFace / NTCE / NONL."""
    check_matrix(u, "u", loss)
    _check_nonempty(u, "u", loss)
    check_matrix(weights, "weights", loss, dim=u.shape[1])
    if weights.shape[0] == 0:
        raise ValueError(f"{loss}: `weights` has no rows; pass one weight vector per class.")
    check_labels(labels, u.shape[0], loss, num_classes=weights.shape[0])
    check_unit_rows(u, "u", loss)
    check_finite(weights, "weights", loss)
    tau = _check_positive(temperature, "temperature", loss)
    dtype = compute_dtype(u, weights)
    u, weights = _upcast(dtype, u, weights)
    w_hat = F.normalize(weights, dim=1)
    return u, labels.long(), w_hat, tau


@_autocast_off
def normface(u: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, temperature: float) -> torch.Tensor:
    """NormFace: cross-entropy on cosine logits with row-normalised class weights.

    From NormFace (Wang et al., ACM MM 2017), used as a baseline in "Neural Collapse by Design" (NC by Design):

    .. math:: \\mathcal{L} = \\frac{1}{N}\\sum_i \\mathrm{CE}\\big(u_i \\hat W^\\top / \\tau,\\ y_i\\big),
        \\qquad \\hat w_c = w_c / \\lVert w_c \\rVert

    Args:
        u: (N, d) L2-normalised features (never re-normalised here).
        labels: (N,) integer class indices in [0, K).
        weights: (K, d) raw class weights; row-normalised inside, they carry gradient.
        temperature: τ > 0 (0.2 on CIFAR, 0.1 in the NONL recipe).

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given; per-row terms are independent, so the engine's gathered global batch
    gives the same value as the mean over ranks of equal size.
    """
    loss = "normface"
    u, labels, w_hat, tau = _prepare_classwise(u, labels, weights, temperature, loss)
    return F.cross_entropy(u @ w_hat.T / tau, labels)


@_autocast_off
def ntce(u: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, temperature: float) -> torch.Tensor:
    """NTCE: normalised-temperature cross-entropy with the class weight as anchor (NC by Design).

    The class weight of the sample's label is the anchor; the candidates are all N batch features, same-class
    ones included:

    .. math:: \\mathcal{L} = -\\frac{1}{N}\\sum_i \\log
        \\frac{\\exp(\\hat w_{y_i}\\cdot u_i/\\tau)}{\\sum_{j=1}^{N}\\exp(\\hat w_{y_i}\\cdot u_j/\\tau)}

    Args:
        u: (N, d) L2-normalised features.
        labels: (N,) integer class indices in [0, K).
        weights: (K, d) raw class weights, row-normalised inside (carry gradient).
        temperature: τ > 0.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given (the denominator sums over those rows); the engine gathers the global
    batch with gradients so the denominator covers every rank's features.
    """
    loss = "ntce"
    u, labels, w_hat, tau = _prepare_classwise(u, labels, weights, temperature, loss)
    anchors = w_hat[labels]  # (N, d)
    logits = anchors @ u.T / tau  # (N, N): row i = ŵ_{y_i}·u_j / τ
    positive = (anchors * u).sum(dim=1) / tau
    return (torch.logsumexp(logits, dim=1) - positive).mean()


@_autocast_off
def nonl(
    u: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, temperature: float, bidirectional: bool = False
) -> torch.Tensor:
    """NONL: normalised loss with only other-class samples in the denominator (NC by Design).

    .. math:: \\mathcal{L} = -\\frac{1}{N}\\sum_i \\log \\frac{\\exp(\\hat w_{y_i}\\cdot u_i/\\tau)}{D_i},\\qquad
        D_i = \\sum_{b:\\,y_b\\ne y_i}\\exp(\\hat w_{y_i}\\cdot u_b/\\tau)
        \\;\\Big[+ \\sum_{c\\ne y_i}\\exp(u_i\\cdot\\hat w_c/\\tau)\\ \\text{if bidirectional}\\Big]

    ``bidirectional=True`` is the official ``--symmetric`` form. The loss may be negative (the positive is not in its
    own denominator).

    Args:
        u: (N, d) L2-normalised features.
        labels: (N,) integer class indices in [0, K).
        weights: (K, d) raw class weights, row-normalised inside (carry gradient).
        temperature: τ > 0 (0.1 in the NONL recipe).
        bidirectional: add the other class weights to each denominator.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Raises:
        ValueError: "NONL needs ≥ 2 classes in the batch" when some D_i is an empty sum (the official loss is −∞);
            checked while validation is enabled (see ``_checks``), otherwise the loss is non-finite.

    Under DDP: computed on the rows it is given; the engine gathers the global batch with gradients, so D_i covers the
    other-class samples of every rank.
    """
    loss = "nonl"
    u, labels, w_hat, tau = _prepare_classwise(u, labels, weights, temperature, loss)
    num_classes = w_hat.shape[0]
    anchors = w_hat[labels]  # (N, d)
    same = labels[:, None] == labels[None, :]  # (N, N) bool
    if validation_enabled():
        others = (~same).sum(dim=1) + (num_classes - 1 if bidirectional else 0)
        if bool((others == 0).any()):
            raise ValueError(
                "nonl: NONL needs ≥ 2 classes in the batch: a row has no other-class sample, so its denominator is "
                "empty and the loss is −∞; use larger or class-balanced batches, or bidirectional=True."
            )
    positive = (anchors * u).sum(dim=1) / tau
    sample_logits = (anchors @ u.T / tau).masked_fill(same, _NEG_INF)  # (N, N)
    if bidirectional:
        class_logits = u @ w_hat.T / tau  # (N, K)
        own = F.one_hot(labels, num_classes).bool()
        logits = torch.cat([sample_logits, class_logits.masked_fill(own, _NEG_INF)], dim=1)
    else:
        logits = sample_logits
    return (torch.logsumexp(logits, dim=1) - positive).mean()


@_autocast_off
def clop(
    z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, lam: float = 1.0
) -> torch.Tensor:
    """CLOP prototype-alignment loss (Li et al., arXiv 2403.18699).

    .. math:: \\mathcal{L} = \\lambda\\cdot\\frac{1}{|L|}\\sum_{i\\in L}
        \\Big[1 - \\tfrac12\\big(z^1_i\\cdot a_{y_i} + z^2_i\\cdot a_{y_i}\\big)\\Big],\\qquad L = \\{i: y_i \\ne -1\\}

    Label −1 marks an unlabeled row (any other negative label is an error). With no labelled row the result is a 0
    that keeps its graph (the official code returns a detached 0). Prototypes are not detached (they are normally a
    fixed buffer, so they get no gradient anyway).

    Args:
        z1: (N, d) L2-normalised embeddings of view 1.
        z2: (N, d) L2-normalised embeddings of view 2, row-aligned with z1.
        labels: (N,) integer labels in [0, K) or −1 for unlabeled.
        prototypes: (K, d) unit-norm class anchors (orthonormal in CLOP).
        lam: weight λ of the loss.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given; the engine passes the gathered global batch, so the mean is over the
    global labelled rows (the official code averages per-rank means instead).
    """
    loss = "clop"
    check_matrix(z1, "z1", loss)
    _check_nonempty(z1, "z1", loss)
    check_matrix(z2, "z2", loss, rows=z1.shape[0], dim=z1.shape[1])
    check_matrix(prototypes, "prototypes", loss, dim=z1.shape[1])
    check_labels(labels, z1.shape[0], loss, num_classes=prototypes.shape[0], allow_unlabeled=True)
    check_unit_rows(z1, "z1", loss)
    check_unit_rows(z2, "z2", loss)
    check_unit_rows(prototypes, "prototypes", loss)
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"{loss}: `lam` must be a number, got {lam!r}.") from None
    dtype = compute_dtype(z1, z2, prototypes)
    z1, z2, prototypes = _upcast(dtype, z1, z2, prototypes)
    labels = labels.long()
    labelled = labels != -1
    anchors = prototypes[labels.clamp(min=0)]  # (N, d); unlabeled rows masked below
    per_row = 1.0 - 0.5 * ((z1 * anchors).sum(dim=1) + (z2 * anchors).sum(dim=1))
    weight = labelled.to(dtype)
    return lam * (per_row * weight).sum() / weight.sum().clamp(min=1.0)


@_autocast_off
def supervised_ntxent(
    z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, temperature: float = 0.5
) -> torch.Tensor:
    """CLOP's supervised NT-Xent (its ``Supervised_NTXentLoss``; Li et al., arXiv 2403.18699) — not Khosla SupCon.

    Anchors are the rows of z1, candidates all rows of z2, ``s = z1 z2ᵀ / τ``:

    .. math:: \\ell_i = -\\log\\frac{\\sum_{j\\in P(i)} e^{s_{ij}}}{\\sum_j e^{s_{ij}} + 10^{-8}},\\qquad
        P(i) = \\{i\\}\\cup\\{j: y_j = y_i \\ne -1\\},\\qquad \\mathcal{L} = \\frac1N\\sum_i \\ell_i

    One direction, the sum inside the log; unlabeled rows (label −1) are instance-discriminated (their only positive
    is the other view of the same image). The 1e−8 is added exactly, as ``logaddexp(lse_j s_ij, log 1e−8)``.

    Args:
        z1: (N, d) L2-normalised anchors (view 1).
        z2: (N, d) L2-normalised candidates (view 2), row-aligned with z1.
        labels: (N,) integer labels, −1 for unlabeled.
        temperature: τ > 0 (0.5 on CIFAR-10, 0.2 on CIFAR-100).

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Under DDP: computed on the rows it is given; the engine gathers the global batch with gradients, so every anchor
    contrasts with all ranks' candidates.
    """
    loss = "supervised_ntxent"
    check_matrix(z1, "z1", loss)
    _check_nonempty(z1, "z1", loss)
    check_matrix(z2, "z2", loss, rows=z1.shape[0], dim=z1.shape[1])
    check_labels(labels, z1.shape[0], loss, allow_unlabeled=True)
    check_unit_rows(z1, "z1", loss)
    check_unit_rows(z2, "z2", loss)
    tau = _check_positive(temperature, "temperature", loss)
    dtype = compute_dtype(z1, z2)
    z1, z2 = _upcast(dtype, z1, z2)
    labels = labels.long()
    n = z1.shape[0]
    logits = z1 @ z2.T / tau  # (N, N)
    positives = (labels[:, None] == labels[None, :]) & (labels != -1)[:, None]
    positives |= torch.eye(n, dtype=torch.bool, device=z1.device)
    numerator = torch.logsumexp(logits.masked_fill(~positives, _NEG_INF), dim=1)
    denominator = torch.logaddexp(
        torch.logsumexp(logits, dim=1), torch.tensor(math.log(1e-8), dtype=dtype, device=z1.device)
    )
    return (denominator - numerator).mean()


class NormFaceLoss(nn.Module):
    """Module form of :func:`normface`: ``NormFaceLoss(temperature)(u, labels, weights)``."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, u: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return normface(u, labels, weights, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NTCELoss(nn.Module):
    """Module form of :func:`ntce`: ``NTCELoss(temperature)(u, labels, weights)``."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, u: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return ntce(u, labels, weights, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NONLLoss(nn.Module):
    """Module form of :func:`nonl`: ``NONLLoss(temperature, bidirectional=False)(u, labels, weights)``."""

    def __init__(self, temperature: float, bidirectional: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.bidirectional = bidirectional

    def forward(self, u: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return nonl(u, labels, weights, self.temperature, bidirectional=self.bidirectional)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, bidirectional={self.bidirectional}"


class CLOPLoss(nn.Module):
    """Module form of :func:`clop`: ``CLOPLoss(lam=1.0)(z1, z2, labels, prototypes)``."""

    def __init__(self, lam: float = 1.0) -> None:
        super().__init__()
        self.lam = lam

    def forward(
        self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor
    ) -> torch.Tensor:
        return clop(z1, z2, labels, prototypes, lam=self.lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


class SupervisedNTXentLoss(nn.Module):
    """Module form of :func:`supervised_ntxent`: ``SupervisedNTXentLoss(temperature=0.5)(z1, z2, labels)``."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return supervised_ntxent(z1, z2, labels, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
