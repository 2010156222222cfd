"""The switch for value checks of inputs (unit norm, finiteness, label range) that cost a device-to-host sync.

A leaf, so that the losses that check and the engine that switches the checks off after a run's first step both
depend on it rather than on each other. On by default: a direct call of a loss is always checked.
"""

from __future__ import annotations

import contextlib

_VALIDATE = True


def validation_enabled() -> bool:
    return _VALIDATE


def set_validation(enabled: bool) -> None:
    """Turn the value checks (unit norm, NaN, label range) of every loss on or off."""
    global _VALIDATE
    _VALIDATE = bool(enabled)


@contextlib.contextmanager
def validation(enabled: bool):
    """Context manager form of :func:`set_validation`."""
    previous = _VALIDATE
    set_validation(enabled)
    try:
        yield
    finally:
        set_validation(previous)
