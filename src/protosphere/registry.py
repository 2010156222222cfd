"""Named registries of methods, datasets, backbones and augmentations: the one place a name becomes an object.

Every registry is a :class:`Registry`; the config schema accepts exactly the names registered in it, so user code can
add its own entries before a config is validated::

    from protosphere.registry import BACKBONES, DATASETS

    @BACKBONES.register("tiny_mlp")
    def tiny_mlp(in_channels: int, image_size: int, **options) -> torch.nn.Module: ...

    @DATASETS.register("my_data")
    def my_data(root, download, *, image_size=None) -> protosphere.data.ImageDataset: ...

and then run ``protosphere --import mymodule run config.yaml model.backbone=tiny_mlp data.dataset=my_data`` (or
expose ``mymodule`` under the ``protosphere.plugins`` entry-point group, loaded when the CLI starts).

This module is a leaf: it imports nothing from protosphere, so every layer may import it without a cycle. The
built-in entries live beside the code they name (``protosphere.methods``, ``protosphere.data.registry``,
``protosphere.models.backbones``, ``protosphere.data.augment``); a registry imports its built-in module by name the
first time it is asked for a name, so a config validates the same whether or not that module was imported before.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from typing import Callable, Generic, Iterable, Iterator, TypeVar

__all__ = ["Registry", "UnknownNameError", "METHODS", "DATASETS", "BACKBONES", "AUGMENTATIONS", "PLUGIN_GROUP",
           "load_plugins"]

T = TypeVar("T")


class UnknownNameError(LookupError):
    """A name is not registered; the message lists the available names and suggests the closest one."""


class Registry(Generic[T]):
    """A mapping from names to objects of one ``kind`` (e.g. ``"backbone"``), filled by :meth:`register`.

    Args:
        kind: what the entries are, used in error messages ("unknown backbone `x`").
        builtins: dotted module whose import registers the built-in entries; imported on the first look-up.
    """

    def __init__(self, kind: str, builtins: str | None = None):
        self.kind = kind
        self._builtins = builtins
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, replace: bool = False) -> Callable[[T], T] | T:
        """Register ``entry`` under ``name``; without ``entry``, a decorator that registers what it decorates.

        A name registered twice is refused (two plugins claiming one name would silently shadow each other) unless
        ``replace=True``.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} is registered under a non-empty string, got {name!r}")

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj and not replace:
                raise ValueError(f"{self.kind} `{name}` is already registered (by {_origin(self._entries[name])}); "
                                 f"choose another name or pass replace=True")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (e.g. a test's temporary entry); a missing name is ignored."""
        self._entries.pop(name, None)

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None  # first, so that the module's own look-ups do not recurse
            try:
                importlib.import_module(module)
            except BaseException:
                self._builtins = module
                raise

    def names(self) -> tuple[str, ...]:
        """Every registered name, sorted."""
        self._load_builtins()
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def closest(self, name: str) -> str | None:
        """The registered name most like ``name`` (None when nothing is close)."""
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.4)
        return close[0] if close else None

    def unknown(self, name: object) -> str:
        """The sentence for an unregistered ``name`` (without its final full stop): the closest name, then every
        available one."""
        close = self.closest(str(name))
        hint = f"did you mean `{close}`? " if close else ""
        return f"unknown {self.kind} `{name}`; {hint}available: {', '.join(self.names())}"

    def get(self, name: str) -> T:
        """The entry registered under ``name``; :class:`UnknownNameError` (see :meth:`unknown`) if there is none."""
        self._load_builtins()
        if name not in self._entries:
            raise UnknownNameError(self.unknown(name) + ".")
        return self._entries[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self.names())})"


def _origin(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", type(obj).__qualname__)
    return f"{module}.{qualname}" if module else qualname


METHODS: Registry = Registry("method", builtins="protosphere.methods")
"""Method classes (subclasses of ``protosphere.methods.base.Method`` with a ``config_class``), by ``method.name``."""

DATASETS: Registry = Registry("dataset", builtins="protosphere.data.registry")
"""Dataset loaders ``loader(root, download, *, image_size=None) -> ImageDataset``, by ``data.dataset``."""

BACKBONES: Registry = Registry("backbone", builtins="protosphere.models.backbones")
"""Backbone factories ``factory(in_channels, image_size, **options) -> nn.Module`` (with ``out_dim``), by
``model.backbone``."""

AUGMENTATIONS: Registry = Registry("augmentation", builtins="protosphere.data.augment")
"""Augmentation recipes ``recipe(image_size, channels, **options) -> list[BatchTransform]`` (normalisation is added
after them), by ``train.augmentation``."""


PLUGIN_GROUP = "protosphere.plugins"
"""Entry-point group of installed packages that register entries: ``[project.entry-points."protosphere.plugins"]
mine = "mypackage.protosphere_plugin"`` in the package's pyproject.toml."""


def load_plugins(modules: Iterable[str] = (), *, entry_points: bool = True) -> list[str]:
    """Import ``modules`` (dotted names; importing one registers its entries), then, with ``entry_points``, every
    entry point of :data:`PLUGIN_GROUP` of the installed packages. Returns what was loaded, in order.

    A module that cannot be found raises :class:`ModuleNotFoundError`; errors inside a plugin propagate unchanged.
    """
    loaded = []
    for name in modules:
        importlib.import_module(name)
        loaded.append(name)
    if entry_points:
        for point in sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=lambda p: p.name):
            point.load()
            loaded.append(point.value)
    return loaded
