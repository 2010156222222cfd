"""Continual-learning metrics from an accuracy matrix.

``A`` is a (T, T) array of percentages in [0, 100]: ``A[t, j]`` is the accuracy on task j's test data after training
task t (row t = after task t; future tasks j > t are evaluated too). References: Chaudhry, Dokania, Ajanthan & Torr,
"Riemannian walk for incremental learning" (ECCV 2018) for forgetting; Lopez-Paz & Ranzato, "Gradient episodic memory
for continual learning" (NeurIPS 2017) for BWT and FWT; Rebuffi et al., "iCaRL" (CVPR 2017) for average incremental
accuracy.

With a single task (T = 1) the metrics that need an earlier or a later task do not exist: ``forgetting`` returns an
empty array and ``average_forgetting``, ``backward_transfer`` and ``forward_transfer`` return ``None``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "final_average_accuracy",
    "average_incremental_accuracy",
    "forgetting",
    "average_forgetting",
    "backward_transfer",
    "forward_transfer",
    "summarize",
]


def _matrix(a: Any) -> np.ndarray:
    m = np.asarray(a, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be a non-empty square (T, T) array, got shape {m.shape}.")
    if not np.all(np.isfinite(m)):
        raise ValueError("accuracy matrix contains NaN or inf; every task must be evaluated after every task.")
    if m.min() < 0.0 or m.max() > 100.0:
        raise ValueError(
            f"accuracy matrix must hold percentages in [0, 100], got values in [{m.min():g}, {m.max():g}]."
        )
    return m


def final_average_accuracy(A: Any) -> float:
    """``(1/T) Σ_j A[T-1, j]``: mean accuracy over all tasks after the last one."""
    m = _matrix(A)
    return float(m[-1].mean())


def average_incremental_accuracy(A: Any) -> float:
    """``(1/T) Σ_t (1/(t+1)) Σ_{j≤t} A[t, j]``: mean over time of the average accuracy on the tasks seen so far."""
    m = _matrix(A)
    t = m.shape[0]
    return float(np.mean([m[i, : i + 1].mean() for i in range(t)]))


def forgetting(A: Any) -> np.ndarray:
    """Per-task forgetting (Chaudhry et al. 2018), shape (T-1,).

    ``f_j = max_{j ≤ t ≤ T-2} A[t, j] - A[T-1, j]`` for j < T-1: the best accuracy on task j at any evaluation after
    it was learned and before the last task, minus the final accuracy. Rows t < j (before task j was trained, which the
    full matrix also holds) do not count. Negative values mean the task improved. Empty for T = 1.
    """
    m = _matrix(A)
    t = m.shape[0]
    return np.array([m[j : t - 1, j].max() - m[t - 1, j] for j in range(t - 1)], dtype=np.float64)


def average_forgetting(A: Any) -> float | None:
    """Mean of :func:`forgetting` over the T-1 earlier tasks; ``None`` for T = 1."""
    f = forgetting(A)
    return float(f.mean()) if f.size else None


def backward_transfer(A: Any) -> float | None:
    """BWT (Lopez-Paz & Ranzato 2017): ``(1/(T-1)) Σ_{j<T-1} (A[T-1, j] - A[j, j])``; ``None`` for T = 1."""
    m = _matrix(A)
    t = m.shape[0]
    if t == 1:
        return None
    return float(np.mean([m[t - 1, j] - m[j, j] for j in range(t - 1)]))


def forward_transfer(A: Any, random_init: Any) -> float | None:
    """FWT (Lopez-Paz & Ranzato 2017): ``(1/(T-1)) Σ_{j≥1} (A[j-1, j] - b_j)``; ``None`` for T = 1.

    Args:
        A: (T, T) accuracy matrix.
        random_init: (T,) accuracies b_j of the randomly initialised model on each task's test data.
    """
    m = _matrix(A)
    t = m.shape[0]
    b = np.asarray(random_init, dtype=np.float64)
    if b.shape != (t,):
        raise ValueError(f"random_init must have shape ({t},) to match the ({t}, {t}) accuracy matrix, got {b.shape}.")
    if not np.all(np.isfinite(b)) or b.min() < 0.0 or b.max() > 100.0:
        raise ValueError("random_init must hold finite percentages in [0, 100].")
    if t == 1:
        return None
    return float(np.mean([m[j - 1, j] - b[j] for j in range(1, t)]))


def summarize(A: Any, random_init: Any = None) -> dict[str, Any]:
    """Every metric above in a JSON-serialisable dict (floats, lists, ``None``).

    Keys: ``num_tasks``, ``final_average_accuracy``, ``average_incremental_accuracy``, ``forgetting`` (list of T-1
    floats), ``average_forgetting``, ``backward_transfer``, ``forward_transfer`` (``None`` without ``random_init`` or
    for T = 1; ``average_forgetting`` and ``backward_transfer`` are ``None`` for T = 1).
    """
    m = _matrix(A)
    return {
        "num_tasks": int(m.shape[0]),
        "final_average_accuracy": final_average_accuracy(m),
        "average_incremental_accuracy": average_incremental_accuracy(m),
        "forgetting": [float(v) for v in forgetting(m)],
        "average_forgetting": average_forgetting(m),
        "backward_transfer": backward_transfer(m),
        "forward_transfer": None if random_init is None else forward_transfer(m, random_init),
    }
