"""Input checks shared by the losses.

Shape checks are free and always run. Value checks (unit norm, finiteness, label range) need a device-to-host sync, so
they run only while :func:`protosphere.validation.validation_enabled` is true. It is on by default, so direct calls are
always checked; the engine checks the first training step of a run and then switches the value checks off for speed
(its non-finite-loss guard covers the rest of the run).
"""

from __future__ import annotations

import contextlib

import torch

from ..validation import set_validation, validation, validation_enabled  # noqa: F401 (protosphere.losses re-exports)

UNIT_NORM_TOLERANCE = 1e-3


def check_matrix(x: torch.Tensor, name: str, loss: str, rows: int | None = None, dim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{loss}: `{name}` must be a 2-D tensor (rows, dim), got {shape}.")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{loss}: `{name}` has {x.shape[0]} rows but {rows} were expected; pass row-aligned tensors.")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"{loss}: `{name}` has dimension {x.shape[1]} but {dim} was expected; use the same embedding size."
        )
    if not x.is_floating_point():
        raise ValueError(f"{loss}: `{name}` must be a floating-point tensor, got {x.dtype}.")


def check_finite(x: torch.Tensor, name: str, loss: str) -> None:
    if validation_enabled() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{loss}: `{name}` contains NaN or inf; check the model output and the learning rate.")


def check_unit_rows(x: torch.Tensor, name: str, loss: str) -> None:
    """Rows must be L2-normalised: losses never re-normalise, so a raw input is an error, not a fix.

    The tolerance is ``UNIT_NORM_TOLERANCE``, widened to twice the format's epsilon for float16/bfloat16 rows, which
    are only unit to about that precision after normalisation.
    """
    check_finite(x, name, loss)
    if validation_enabled() and x.numel():
        tolerance = UNIT_NORM_TOLERANCE
        if x.dtype in (torch.float16, torch.bfloat16):
            tolerance = max(tolerance, 2 * torch.finfo(x.dtype).eps)
        norms = x.detach().float().norm(dim=1)
        worst = float((norms - 1).abs().max())
        if worst > tolerance:
            raise ValueError(
                f"{loss}: rows of `{name}` must have unit L2 norm (largest deviation {worst:.3g}); "
                f"apply torch.nn.functional.normalize(x, dim=1) before the loss."
            )


def check_labels(
    labels: torch.Tensor, rows: int, loss: str, num_classes: int | None = None, allow_unlabeled: bool = False
) -> None:
    """Labels are a 1-D integer tensor of length `rows`, in [0, num_classes) (or -1 for unlabeled when allowed)."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != rows:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{loss}: `labels` must be a 1-D tensor with one entry per row ({rows}), got {shape}.")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{loss}: `labels` must be an integer tensor, got {labels.dtype}.")
    if not validation_enabled() or labels.numel() == 0:
        return
    low = -1 if allow_unlabeled else 0
    lo, hi = int(labels.min()), int(labels.max())
    if lo < low:
        what = "-1 (unlabeled) or a class index" if allow_unlabeled else "a class index >= 0"
        raise ValueError(f"{loss}: label {lo} is invalid; every label must be {what}.")
    if num_classes is not None and hi >= num_classes:
        raise ValueError(
            f"{loss}: label {hi} is outside the {num_classes} prototypes (valid labels 0..{num_classes - 1}); "
            f"build the prototypes for the whole label space."
        )


# --- numerics helpers shared by the losses (added with contrastive/distillation/prototype losses) -------------------


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype a loss computes in: float64 if any input is float64, else float32 (half/bfloat16 are promoted)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def autocast_off(x: torch.Tensor):
    """A context that disables autocast on `x`'s device while a loss runs (no-op when autocast is off).

    Under autocast a matmul would run in half precision even on float32 inputs; the losses' log-sum-exp over
    temperature-scaled similarities needs float32 at least.
    """
    device_type = x.device.type
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # older torch or a device type autocast does not know
        enabled = device_type == "cuda" and torch.is_autocast_enabled()
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def check_temperature(value: float, name: str, loss: str) -> None:
    """Temperatures are positive finite numbers (checked always; they are Python numbers, no sync)."""
    try:
        ok = float(value) > 0 and float(value) != float("inf")
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{loss}: `{name}` must be a positive number, got {value!r}.")
