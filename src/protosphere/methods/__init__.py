"""Methods, one file each; each registers its class (and so its settings schema) under a name in
:data:`protosphere.registry.METHODS`."""

from __future__ import annotations

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


from . import (  # noqa: E402,F401  (fill the registry)
    cassle,
    ce,
    clop,
    co2l,
    derpp,
    er,
    finetune,
    fnc2,
    joint,
    lwf,
    moco,
    nct,
    normalized,
    simclr,
    supcon,
    sycon,
)
