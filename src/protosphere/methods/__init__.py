"""Methods, one file each; ``register`` adds a method and its settings schema under a name."""

from __future__ import annotations

import difflib

from ..errors import ConfigError

_REGISTRY: dict = {}


def register(name: str):
    def decorate(cls):
        _REGISTRY[name] = cls
        return cls

    return decorate


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str):
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), method_names(), n=1, cutoff=0.4)
        hint = f"did you mean `{close[0]}`?" if close else f"available: {', '.join(method_names())}."
        raise ConfigError(f"Unknown method `method.name={name}`: {hint}")
    return _REGISTRY[name]


def method_config_class(name: str):
    return method_class(name).config_class


from . import derpp, er, finetune, joint, lwf, ce, supcon, normalized, clop, co2l, fnc2, nct, simclr, moco, cassle, sycon  # noqa: E402,F401  (fill the registry)
