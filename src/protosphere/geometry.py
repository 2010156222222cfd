"""Fixed prototypes on the unit hypersphere and running class means.

* :func:`simplex_etf` — the simplex equiangular tight frame of neural collapse (Papyan, Han & Donoho, "Prevalence of
  neural collapse during the terminal phase of deep learning training", PNAS 2020), built as in NC-FSCIL / Neural
  Collapse Terminus (Yang et al., ICLR 2023): ``M = sqrt(K/(K-1)) · U (I_K - 11ᵀ/K)``.
* :func:`orthonormal_prototypes` — K orthonormal anchors (CLOP).
* :func:`class_means` and :class:`RunningClassMeans` — normalised means of L2-normalised embeddings per class, the
  classifier weights of "Neural Collapse by Design".

Prototype generators draw from their own ``torch.Generator().manual_seed(seed)`` and never touch the global RNG.
They compute in float64 and return float32 tensors of shape (K, d) whose rows are the prototypes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from protosphere.errors import ConfigError

__all__ = [
    "PrototypeDimensionError",
    "simplex_etf",
    "orthonormal_prototypes",
    "class_means",
    "RunningClassMeans",
]


class PrototypeDimensionError(ConfigError, ValueError):
    """Prototype construction asked for too few classes or too small a dimension (a ``ValueError``)."""


def _check_sizes(num_classes: int, dim: int, min_dim: int, what: str) -> None:
    for name, value in (("num_classes", num_classes), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what}: {name} must be an int, got {type(value).__name__}.")
    if num_classes < 2:
        raise PrototypeDimensionError(f"{what} needs at least 2 classes, got num_classes={num_classes}.")
    if dim < min_dim:
        raise PrototypeDimensionError(
            f"{what} with {num_classes} classes needs dim >= {min_dim}, got dim={dim}; "
            f"increase the feature/projection dimension to at least {min_dim}."
        )


def _haar_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random (n, n) orthogonal matrix, Haar-distributed (QR of a Gaussian with the sign fix of Mezzadri 2007)."""
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs


def simplex_etf(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Simplex ETF prototypes, shape (K, d), float32; rows unit-norm, pairwise cosine -1/(K-1), rows sum to 0.

    ``M = sqrt(K/(K-1)) · U (I_K - 11ᵀ/K)`` (d, K) and the function returns ``Mᵀ``.

    * d ≥ K: U (d, K) is the Q factor of the reduced QR of a d×K standard-normal matrix drawn from
      ``torch.Generator().manual_seed(seed)`` (the NC-FSCIL construction).
    * d = K-1: ``U = R Bᵀ`` with B (K, K-1) an orthonormal basis of the complement of the all-ones vector and R a
      seeded random (K-1)×(K-1) orthogonal matrix (Haar).

    Args:
        num_classes: K ≥ 2, the size of the whole label space.
        dim: d ≥ K-1.
        seed: seed of the private generator; the global RNG is untouched.

    Raises:
        ValueError (:class:`PrototypeDimensionError`): K < 2 or d < K-1 (the message names the minimum, K-1).
    """
    _check_sizes(num_classes, dim, num_classes - 1, "simplex_etf")
    k = num_classes
    generator = torch.Generator().manual_seed(int(seed))
    centering = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    if dim >= k:
        gaussian = torch.randn(dim, k, generator=generator, dtype=torch.float64)
        u, _ = torch.linalg.qr(gaussian, mode="reduced")  # (d, K), orthonormal columns
    else:  # dim == k - 1
        # Orthonormal basis of {x : 1ᵀx = 0}: the first K-1 columns of the centering matrix span it.
        basis, _ = torch.linalg.qr(centering[:, : k - 1], mode="reduced")  # (K, K-1)
        rotation = _haar_orthogonal(k - 1, generator)
        u = rotation @ basis.T  # (K-1, K)
    m = math.sqrt(k / (k - 1)) * (u @ centering)  # (d, K)
    return m.T.contiguous().to(torch.float32)


def orthonormal_prototypes(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """K orthonormal prototypes in d ≥ K dimensions (CLOP), shape (K, d), float32: ``P Pᵀ = I_K``.

    The rows are the right singular vectors of a seeded K×d standard-normal matrix (drawn from
    ``torch.Generator().manual_seed(seed)``; the global RNG is untouched). Pairwise cosines are 0, so the anchors are
    less separated than the simplex ETF's -1/(K-1).

    Raises:
        ValueError (:class:`PrototypeDimensionError`): K < 2 or d < K (the message names the minimum, K).
    """
    _check_sizes(num_classes, dim, num_classes, "orthonormal_prototypes")
    generator = torch.Generator().manual_seed(int(seed))
    gaussian = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    _, _, vh = torch.linalg.svd(gaussian, full_matrices=False)  # (K, d)
    return vh.contiguous().to(torch.float32)


def _check_labels(labels: torch.Tensor, num_rows: int, num_classes: int, where: str) -> None:
    if labels.dim() != 1 or labels.shape[0] != num_rows:
        raise ValueError(f"{where}: labels must have shape ({num_rows},), got {tuple(labels.shape)}.")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{where}: labels must be an integer tensor, got {labels.dtype}.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{where}: labels must lie in [0, {num_classes - 1}], got range [{int(labels.min())}, {int(labels.max())}]."
        )


def _per_class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int):
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    return sums, counts


def class_means(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, normalize_inputs: bool = True
) -> torch.Tensor:
    """Normalised class means, shape (K, d): ``normalize(mean_{i: y_i = c} normalize(h_i))``.

    Args:
        features: (N, d) embeddings.
        labels: (N,) integer labels in [0, K).
        num_classes: K.
        normalize_inputs: L2-normalise each embedding before averaging (the NC-by-Design class-mean classifier).

    Returns:
        (K, d) tensor of features' dtype and device. A class with no sample gets a **zero row** (its cosine to any
        vector is 0; :func:`protosphere.evaluation.ncm_logits` gives it -inf).
    """
    if features.dim() != 2:
        raise ValueError(f"class_means: features must have shape (N, d), got {tuple(features.shape)}.")
    _check_labels(labels, features.shape[0], num_classes, "class_means")
    x = features.detach()
    if normalize_inputs:
        x = F.normalize(x, dim=1)
    sums, _ = _per_class_sums(x, labels.to(x.device), num_classes)
    # normalize(sum) == normalize(mean); zero rows stay zero.
    return F.normalize(sums, dim=1)


class RunningClassMeans(nn.Module):
    """Class means accumulated over batches, kept in buffers (so they live in ``state_dict`` and checkpoints).

    ``update(features, labels)`` first L2-normalises each row (``normalize_inputs``), then per class c present in the
    batch with batch mean m_c:

    * EMA (``momentum=μ``, 0.99 by default, "Neural Collapse by Design"):
      ``a_c ← m_c`` the first time c is seen, ``a_c ← μ·a_c + (1-μ)·m_c`` afterwards;
    * exact (``momentum=None``): ``a_c`` is the running sum, so ``means`` is the normalised mean over all samples seen.

    Attributes:
        means: (K, d) ``normalize(a_c)``; zero rows for classes never seen.
        seen: (K,) bool, classes with at least one sample.
        counts: buffer (K,) int64, samples seen per class.
        accumulator: buffer (K, d), ``a_c``.

    Under DDP, pass the globally gathered features so every rank keeps the same means. ``update`` performs no host
    sync on accelerators (label range is checked only for CPU tensors).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        momentum: float | None = 0.99,
        normalize_inputs: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1:
            raise ValueError(f"RunningClassMeans needs num_classes >= 1 and dim >= 1, got {num_classes}, {dim}.")
        if momentum is not None and not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"RunningClassMeans: momentum must be in [0, 1) or None, got {momentum}.")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.momentum = None if momentum is None else float(momentum)
        self.normalize_inputs = bool(normalize_inputs)
        self.register_buffer("accumulator", torch.zeros(num_classes, dim, dtype=dtype))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}"

    @torch.no_grad()
    def reset(self) -> None:
        self.accumulator.zero_()
        self.counts.zero_()

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate a batch: features (N, d), labels (N,) integers in [0, K)."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"RunningClassMeans.update: features must have shape (N, {self.dim}), got {tuple(features.shape)}."
            )
        if labels.device.type == "cpu":
            _check_labels(labels, features.shape[0], self.num_classes, "RunningClassMeans.update")
        elif labels.dim() != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"RunningClassMeans.update: labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}."
            )
        x = features.detach().to(device=self.accumulator.device, dtype=self.accumulator.dtype)
        if self.normalize_inputs:
            x = F.normalize(x, dim=1)
        y = labels.to(self.accumulator.device)
        sums, counts = _per_class_sums(x, y, self.num_classes)
        if self.momentum is None:
            self.accumulator.add_(sums)
        else:
            present = (counts > 0).unsqueeze(1)
            first = (self.counts == 0).unsqueeze(1)
            batch_mean = sums / counts.clamp_min(1).unsqueeze(1).to(sums.dtype)
            ema = self.momentum * self.accumulator + (1.0 - self.momentum) * batch_mean
            updated = torch.where(first, batch_mean, ema)
            self.accumulator.copy_(torch.where(present, updated, self.accumulator))
        self.counts.add_(counts)

    @property
    def seen(self) -> torch.Tensor:
        return self.counts > 0

    @property
    def means(self) -> torch.Tensor:
        return F.normalize(self.accumulator, dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine logits (N, K) of features against the current means (unseen classes get -inf)."""
        from protosphere.evaluation import ncm_logits

        return ncm_logits(features, self.means)
