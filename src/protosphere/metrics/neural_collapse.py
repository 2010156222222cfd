"""Neural-collapse metrics, effective ranks, prototype alignment and class-mean drift.

Definitions follow Papyan, Han & Donoho, "Prevalence of neural collapse during the terminal phase of deep learning
training" (PNAS 2020) and Han, Papyan & Donoho, "Neural collapse under MSE loss: proximity to and dynamics on the
central path" (ICLR 2022). Effective rank is that of Roy & Vetterli, "The effective rank: a measure of effective
dimensionality" (EUSIPCO 2007).

Notation: N samples h_i ∈ R^d with labels y_i ∈ {0..C-1}; μ_c the class means, μ_G the mean of the class means,
Ṁ = [μ_c - μ_G] (d, C), Σ_W = (1/N) Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})ᵀ, Σ_B = (1/C) Ṁ Ṁᵀ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["neural_collapse", "effective_rank", "prototype_alignment", "mean_drift"]


def _spectral_effective_rank(values: torch.Tensor) -> float:
    """exp(H(p)) with p = s/‖s‖₁ for non-negative spectrum s; 0 for an all-zero spectrum."""
    s = values.clamp_min(0).to(torch.float64)
    total = s.sum()
    if not bool(total > 0):
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def effective_rank(matrix: torch.Tensor) -> float:
    """Effective rank of a matrix (Roy & Vetterli 2007): ``exp(-Σ_k p_k log p_k)``, ``p_k = σ_k / Σ_j σ_j``.

    Args:
        matrix: (N, d) — e.g. a batch of embeddings, to detect dimensional collapse (a value near 1 means the
            embeddings span about one direction). Singular values are those of the matrix as given (no centring; centre
            it yourself for a covariance-style measure). Computed in float64.

    Returns:
        A float in [1, min(N, d)], or 0.0 for the zero matrix (where Roy & Vetterli leave it undefined).
    """
    if matrix.dim() != 2:
        raise ValueError(f"effective_rank: expected a 2-D matrix, got shape {tuple(matrix.shape)}.")
    if matrix.numel() == 0:
        raise ValueError("effective_rank: the matrix is empty.")
    s = torch.linalg.svdvals(matrix.detach().to(torch.float64))
    return _spectral_effective_rank(s)


def _cosine_matrix(rows: torch.Tensor) -> torch.Tensor:
    unit = rows / rows.norm(dim=1, keepdim=True)
    return unit @ unit.T


def neural_collapse(
    features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
) -> dict[str, float]:
    """NC1–NC4 and effective ranks of features as given (float64, no normalisation).

    Args:
        features: (N, d) embeddings h_i.
        labels: (N,) integer labels; every class 0..C-1 must be present, C ≥ 2.
        weights: optional (C, d) bias-free linear classifier W (rows w_c), e.g. the fixed prototypes.

    Returns:
        ``nc1`` = Tr(Σ_W Σ_B⁺)/C, Σ_B⁺ = ``torch.linalg.pinv(Σ_B, hermitian=True)`` (relative cut-off d·eps);
        ``equinorm`` = std/mean of ‖μ_c - μ_G‖ (unbiased std);
        ``equiangularity`` = unbiased std of the C(C-1) off-diagonal cos(μ_c - μ_G, μ_c' - μ_G);
        ``max_angle`` = mean over the C(C-1) ordered pairs of |cos + 1/(C-1)|;
        ``within_class_effective_rank`` / ``between_class_effective_rank`` = effective rank (Roy & Vetterli 2007) of
        the eigenvalues of Σ_W / Σ_B (0.0 if the matrix is zero);
        and only when ``weights`` is given:
        ``nc3`` = ‖W/‖W‖_F - Ṁᵀ/‖Ṁ‖_F‖_F² (Han et al. 2022),
        ``nc4`` = 1 - (1/N) Σ_i 1[argmax_c w_c·h_i = argmin_c ‖h_i - μ_c‖₂] (uncentred class means).
        Every value is a Python float; all are 0 at exact simplex-ETF collapse (weights = prototypes).

    Raises:
        ValueError: bad shapes, fewer than 2 classes, or a class in 0..C-1 with no sample.
    """
    if features.dim() != 2:
        raise ValueError(f"neural_collapse: features must have shape (N, d), got {tuple(features.shape)}.")
    n, d = features.shape
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"neural_collapse: labels must have shape ({n},), got {tuple(labels.shape)}.")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"neural_collapse: labels must be integers, got {labels.dtype}.")
    if n == 0:
        raise ValueError("neural_collapse: no samples.")
    h = features.detach().to(device="cpu", dtype=torch.float64)
    y = labels.detach().to("cpu", torch.long)
    if int(y.min()) < 0:
        raise ValueError(f"neural_collapse: labels must be non-negative, got {int(y.min())}.")
    c = int(y.max()) + 1
    counts = torch.bincount(y, minlength=c)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        raise ValueError(
            f"neural_collapse: labels must cover every class 0..{c - 1}; classes {missing[:10]} have no sample "
            "(relabel the classes present to 0..C-1)."
        )
    if c < 2:
        raise ValueError("neural_collapse: needs at least 2 classes.")
    if weights is not None and (weights.dim() != 2 or tuple(weights.shape) != (c, d)):
        raise ValueError(f"neural_collapse: weights must have shape ({c}, {d}), got {tuple(weights.shape)}.")

    means = torch.zeros(c, d, dtype=torch.float64).index_add_(0, y, h) / counts.unsqueeze(1).to(torch.float64)
    global_mean = means.mean(dim=0)
    centred = means - global_mean  # Ṁᵀ, (C, d)
    within = h - means[y]
    sigma_w = within.T @ within / n
    sigma_b = centred.T @ centred / c
    nc1 = torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / c

    norms = centred.norm(dim=1)
    equinorm = norms.std(unbiased=True) / norms.mean()
    cos = _cosine_matrix(centred)
    off = cos[~torch.eye(c, dtype=torch.bool)]
    equiangularity = off.std(unbiased=True)
    max_angle = (off + 1.0 / (c - 1)).abs().mean()

    result = {
        "nc1": float(nc1),
        "equinorm": float(equinorm),
        "equiangularity": float(equiangularity),
        "max_angle": float(max_angle),
        "within_class_effective_rank": _spectral_effective_rank(torch.linalg.eigvalsh(sigma_w)),
        "between_class_effective_rank": _spectral_effective_rank(torch.linalg.eigvalsh(sigma_b)),
    }
    if weights is not None:
        w = weights.detach().to(device="cpu", dtype=torch.float64)
        nc3 = (w / w.norm() - centred / centred.norm()).pow(2).sum()
        classifier = (h @ w.T).argmax(dim=1)
        nearest = torch.cdist(h, means).argmin(dim=1)
        nc4 = 1.0 - (classifier == nearest).to(torch.float64).mean()
        result["nc3"] = float(nc3)
        result["nc4"] = float(nc4)
    return result


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names}: expected two (C, d) tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def prototype_alignment(class_means: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Per-class cosine between each class mean and its prototype: ``cos(μ_c, w_c)``, shape (C,), float64.

    Args:
        class_means: (C, d) class means (normalised or not).
        prototypes: (C, d) prototypes of the same classes, row-aligned (e.g. ``simplex_etf(K, d)[classes]``).

    A zero row (class never seen) has cosine 0.
    """
    _check_pair(class_means, prototypes, "prototype_alignment")
    a = F.normalize(class_means.detach().to(torch.float64), dim=1)
    b = F.normalize(prototypes.detach().to(device=a.device, dtype=torch.float64), dim=1)
    return (a * b).sum(dim=1)


def mean_drift(old_means: torch.Tensor, new_means: torch.Tensor) -> torch.Tensor:
    """Per-class cosine distance ``1 - cos(μ_c^old, μ_c^new)``, shape (C,), float64, in [0, 2].

    Used to track how the means of old classes move across tasks (0 = no drift). A zero row gives 1.
    """
    _check_pair(old_means, new_means, "mean_drift")
    return 1.0 - prototype_alignment(old_means, new_means)
