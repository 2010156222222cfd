"""Methods, one file each; each registers its class (and so its settings schema) under a name in
:data:`protosphere.registry.METHODS`. Importing the package imports every module of this folder, so a new method is
one new file here and nothing else."""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import ConfigError
from ..registry import METHODS, UnknownNameError

register = METHODS.register  # ``@register("name")`` on a Method subclass; user code may use it too


def method_names() -> list[str]:
    return list(METHODS.names())


def method_class(name: str):
    try:
        return METHODS.get(name)
    except UnknownNameError as exc:
        raise ConfigError(f"Invalid value for `method.name` (got {name!r}): {exc}") from None


def method_config_class(name: str):
    return method_class(name).config_class


def import_all() -> list[str]:
    """Import every module of the package's folder (``__path__``), in name order so that what registers first does
    not depend on the file system; returns their names."""
    names = sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


import_all()
