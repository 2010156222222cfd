"""Metrics: continual-learning accuracy-matrix metrics and neural-collapse geometry."""

from protosphere.metrics.continual import (
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    final_average_accuracy,
    forgetting,
    forward_transfer,
    summarize,
)
from protosphere.metrics.neural_collapse import effective_rank, mean_drift, neural_collapse, prototype_alignment

__all__ = [
    "average_forgetting",
    "average_incremental_accuracy",
    "backward_transfer",
    "effective_rank",
    "final_average_accuracy",
    "forgetting",
    "forward_transfer",
    "mean_drift",
    "neural_collapse",
    "prototype_alignment",
    "summarize",
]
