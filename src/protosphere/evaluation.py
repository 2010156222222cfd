"""Classifiers on (frozen) features: linear probe, class-mean (NCM), nearest prototype, weighted kNN, task-IL masking.

Pure torch, batched, no I/O. Every function works on the device of its inputs. Logits are (M, C) tensors where M is
the number of test rows and C the number of classes; :func:`accuracy` turns them into a percentage.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "extract_features",
    "class_balanced_indices",
    "fit_linear_probe",
    "ncm_logits",
    "nearest_prototype_logits",
    "knn_logits",
    "accuracy",
]


def extract_features(
    fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Apply ``fn`` to ``images`` in batches under ``torch.no_grad()`` and concatenate the outputs.

    Args:
        fn: maps a batch (B, ...) to features (B, d). It receives the slice of ``images`` exactly as given — same
            dtype (uint8 or float) and device — so any conversion, normalisation or device transfer is ``fn``'s job;
            put the model in eval mode before calling.
        images: (N, ...) tensor.
        batch_size: rows per call of ``fn``.

    Returns:
        (N, d) features, detached, on the device ``fn`` returns them on.
    """
    if batch_size < 1:
        raise ValueError(f"extract_features: batch_size must be >= 1, got {batch_size}.")
    n = images.shape[0]
    if n == 0:
        raise ValueError("extract_features: no images.")
    outputs = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            out = fn(images[start : start + batch_size])
            if out.dim() != 2 or out.shape[0] != min(batch_size, n - start):
                raise ValueError(
                    f"extract_features: fn must return (B, d) features for a batch of B rows, got {tuple(out.shape)}."
                )
            outputs.append(out.detach())
    return torch.cat(outputs, dim=0)


def _check_features_labels(features: torch.Tensor, labels: torch.Tensor, num_classes: int, where: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"{where}: features must have shape (N, d), got {tuple(features.shape)}.")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"{where}: labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}.")
    if features.shape[0] == 0:
        raise ValueError(f"{where}: no samples.")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{where}: labels must lie in [0, {num_classes - 1}], got range [{lo}, {hi}].")


def class_balanced_indices(
    labels: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``num_samples`` indices with replacement, sample i having weight 1/N_{y_i} (N_c = count of class c).

    Every class present is then drawn with equal probability — PyTorch's ``WeightedRandomSampler`` as used by Co2L's
    class-balanced linear stage (Cha, Lee & Shin, "Co2L: Contrastive continual learning", ICCV 2021).

    Returns:
        (num_samples,) int64 indices on CPU.
    """
    y = labels.detach().to("cpu", torch.long)
    counts = torch.bincount(y)
    weights = 1.0 / counts[y].to(torch.float64)
    return torch.multinomial(weights, num_samples, replacement=True, generator=generator)


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    class_balanced: bool = False,
    seed: int = 0,
    schedule: str = "cosine",
    milestones: Sequence[int] = (60, 75, 90),
    gamma: float = 0.2,
    momentum: float = 0.9,
    min_steps: int = 0,
    epoch_features: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> nn.Linear:
    """Train a linear classifier ``nn.Linear(d, num_classes)`` on frozen features with cross-entropy.

    SGD (momentum 0.9) for ``epochs`` epochs of ceil(N / batch_size) steps, or for as many more epochs as make
    at least ``min_steps`` steps (a probe on a few hundred labelled rows would otherwise take a handful of steps).
    Each epoch is a random permutation of the rows, or — with ``class_balanced`` — N indices drawn with replacement
    with per-sample weights 1/N_class (:func:`class_balanced_indices`; the Co2L protocol over current task +
    buffer). The learning rate follows ``schedule``: ``"cosine"`` (per step, from ``lr`` to 0), ``"step"``
    (×``gamma`` at each epoch in ``milestones``; Co2L: lr 1, ×0.2 at 60/75/90) or ``"constant"``.
    Features are used as given (no normalisation), in float32 (float64 for float64 features).
    ``epoch_features(epoch, rows)``, when given, returns features (len(rows), d) of a fresh view of each drawn row,
    in the order drawn — one view per draw, so a row drawn twice in an epoch is seen twice, differently — and every
    epoch trains on those (``features`` then only fixes N, d and the dtype). This is how the Co2L / FNC2 authors'
    linear stages load their images: a ``WeightedRandomSampler`` draws indices with replacement and the dataset
    augments at every draw, so the few stored images of an old class come back under many views per epoch
    (:meth:`~protosphere.methods.representation.RepresentationMethod.augmented_probe_features`).

    Deterministic given ``seed``: initialisation (nn.Linear's uniform ±1/sqrt(d)) and sampling use a private
    ``torch.Generator``; the global RNG is untouched.

    Args:
        features: (N, d). labels: (N,) integers in [0, num_classes).

    Returns:
        The trained ``nn.Linear`` (on the features' device, float32 or float64, eval mode, ``requires_grad`` off).
    """
    _check_features_labels(features, labels, num_classes, "fit_linear_probe")
    if schedule not in ("cosine", "step", "constant"):
        raise ValueError(f"fit_linear_probe: schedule must be 'cosine', 'step' or 'constant', got {schedule!r}.")
    if epochs < 1 or batch_size < 1 or min_steps < 0:
        raise ValueError(
            f"fit_linear_probe: epochs and batch_size must be >= 1 and min_steps >= 0, got {epochs}, "
            f"{batch_size}, {min_steps}."
        )
    device = features.device
    dtype = torch.promote_types(features.dtype, torch.float32)
    x_all = features.detach().to(dtype)
    y_all = labels.detach().to(device=device, dtype=torch.long)
    n, d = x_all.shape
    generator = torch.Generator().manual_seed(int(seed))

    probe = nn.utils.skip_init(nn.Linear, d, num_classes, device=device, dtype=dtype)  # no draw from the global RNG
    bound = 1.0 / math.sqrt(d)
    with torch.no_grad():  # drawn in float32 whatever the dtype, so a float64 probe starts where a float32 one does
        single = torch.float32
        probe.weight.copy_(torch.empty(num_classes, d, dtype=single).uniform_(-bound, bound, generator=generator))
        probe.bias.copy_(torch.empty(num_classes, dtype=single).uniform_(-bound, bound, generator=generator))
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    steps_per_epoch = math.ceil(n / batch_size)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    step = 0
    probe.train()
    for epoch in range(epochs):
        if schedule == "step":
            epoch_lr = lr * gamma ** sum(1 for m in milestones if epoch >= m)
        if class_balanced:
            order = class_balanced_indices(y_all, n, generator)
        else:
            order = torch.randperm(n, generator=generator)
        order = order.to(device)
        x_epoch, y_epoch = x_all, y_all
        if epoch_features is not None:  # one fresh view per draw, rows in the order drawn
            x_epoch = epoch_features(epoch, order).detach().to(device=device, dtype=dtype)
            if x_epoch.shape != (n, d):
                raise ValueError(
                    f"fit_linear_probe: epoch_features returned {tuple(x_epoch.shape)} for {n} drawn rows "
                    f"of dimension {d}; it must return one feature row per drawn row."
                )
            y_epoch, order = y_all[order], torch.arange(n, device=device)
        for start in range(0, n, batch_size):
            if schedule == "cosine":
                current_lr = 0.5 * lr * (1.0 + math.cos(math.pi * step / total_steps))
            elif schedule == "step":
                current_lr = epoch_lr
            else:
                current_lr = lr
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            idx = order[start : start + batch_size]
            with torch.enable_grad():  # callers (the engine's evaluation) run under no_grad
                loss = F.cross_entropy(probe(x_epoch[idx]), y_epoch[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    probe.eval()
    probe.requires_grad_(False)
    return probe


def _cosine_logits(features: torch.Tensor, centers: torch.Tensor, where: str) -> torch.Tensor:
    if features.dim() != 2 or centers.dim() != 2 or features.shape[1] != centers.shape[1]:
        raise ValueError(
            f"{where}: expected features (M, d) and class vectors (C, d), got {tuple(features.shape)} and "
            f"{tuple(centers.shape)}."
        )
    dtype = torch.promote_types(torch.promote_types(features.dtype, centers.dtype), torch.float32)
    c = centers.detach().to(device=features.device, dtype=dtype)
    norms = c.norm(dim=1)
    logits = F.normalize(features.to(dtype), dim=1) @ (c / norms.clamp_min(1e-12).unsqueeze(1)).T
    return logits.masked_fill((norms == 0).unsqueeze(0), float("-inf"))


def ncm_logits(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Class-mean (NCM) classifier: cosine between L2-normalised features (M, d) and class means (C, d) → (M, C).

    Classes whose mean is the zero vector (never seen; see :func:`protosphere.geometry.class_means`) get -inf, so they
    are never predicted. With normalised means this is the "class means as classifier weights" rule of
    Neural Collapse by Design (and iCaRL's nearest-mean-of-exemplars up to the metric).
    """
    return _cosine_logits(features, means, "ncm_logits")


def nearest_prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine between L2-normalised features (M, d) and fixed prototypes (C, d) (e.g. simplex ETF rows) → (M, C)."""
    return _cosine_logits(features, prototypes, "nearest_prototype_logits")


def knn_logits(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Weighted kNN scores on cosine similarity (Wu et al., "Unsupervised feature learning via non-parametric
    instance discrimination", CVPR 2018; the solo-learn / InstDisc evaluation).

    For each test row, the k most cosine-similar training rows (k clipped to N) vote for their class with weight
    ``exp(s / temperature)``: ``score[m, c] = Σ_{i ∈ topk(m), y_i = c} exp(s_mi / τ)``.

    Args:
        train_features: (N, d); train_labels: (N,) in [0, num_classes); test_features: (M, d).
        chunk_size: test rows per similarity block (memory O(chunk_size · N)).

    Returns:
        (M, num_classes) float scores (non-negative; argmax = prediction).
    """
    _check_features_labels(train_features, train_labels, num_classes, "knn_logits")
    if test_features.dim() != 2 or test_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"knn_logits: test_features must have shape (M, {train_features.shape[1]}), got "
            f"{tuple(test_features.shape)}."
        )
    if k < 1 or temperature <= 0 or chunk_size < 1:
        raise ValueError(
            f"knn_logits: need k >= 1, temperature > 0, chunk_size >= 1; got {k}, {temperature}, {chunk_size}."
        )
    device = test_features.device
    dtype = torch.promote_types(test_features.dtype, torch.float32)
    train = F.normalize(train_features.detach().to(device=device, dtype=dtype), dim=1)
    test = F.normalize(test_features.detach().to(dtype), dim=1)
    y = train_labels.detach().to(device=device, dtype=torch.long)
    k = min(k, train.shape[0])
    out = torch.zeros(test.shape[0], num_classes, device=device, dtype=dtype)
    for start in range(0, test.shape[0], chunk_size):
        sim = test[start : start + chunk_size] @ train.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        out[start : start + chunk_size].scatter_add_(1, y[top_idx], weights)
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent: ``100 · mean(argmax logits == labels)``; logits (M, C), labels (M,)."""
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"accuracy: expected logits (M, C) and labels (M,), got {tuple(logits.shape)} and {tuple(labels.shape)}."
        )
    if labels.numel() == 0:
        raise ValueError("accuracy: no samples.")
    correct = (logits.argmax(dim=1) == labels.to(logits.device)).sum()
    return 100.0 * float(correct) / labels.numel()
