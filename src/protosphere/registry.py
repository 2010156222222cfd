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

__all__ = [
    "Registry",
    "UnknownNameError",
    "METHODS",
    "DATASETS",
    "BACKBONES",
    "AUGMENTATIONS",
    "CORRUPTIONS",
    "PLUGIN_GROUP",
    "load_plugins",
]

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
                raise ValueError(
                    f"{self.kind} `{name}` is already registered (by {_origin(self._entries[name])}); "
                    f"choose another name or pass replace=True"
                )
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

    def in_order(self) -> tuple[str, ...]:
        """Every registered name in the order it was registered (built-ins first, as their module lists them)."""
        self._load_builtins()
        return tuple(self._entries)

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

CORRUPTIONS: Registry = Registry("corruption", builtins="protosphere.data.corruptions")
"""Test-set corruptions ``corruption(images_uint8, severity, generator=None) -> images_uint8``, by
``eval.corruptions``."""

AUGMENTATIONS: Registry = Registry("augmentation", builtins="protosphere.data.augment")
"""Augmentation recipes ``recipe(image_size, channels, **options) -> list[BatchTransform]`` (normalisation is added
after them), by ``train.augmentation``."""


PLUGIN_GROUP = "protosphere.plugins"
"""Entry-point group of installed packages that register entries: ``[project.entry-points."protosphere.plugins"]
mine = "mypackage.protosphere_plugin"`` in the package's pyproject.toml."""


class PluginLoadError(ImportError):
    """A plugin failed to import: an ``--import`` module (``installed`` False) or an installed entry point of
    :data:`PLUGIN_GROUP` (True). The message is one sentence naming the plugin, the error and where it was raised."""

    def __init__(self, message: str, plugin: str, installed: bool):
        super().__init__(message)
        self.plugin, self.installed = plugin, installed


def _failure(label: str, exc: BaseException, advice: str) -> str:
    """``label`` failed to load: the error, the plugin's line that raised it, and what to do."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "importlib" not in f.filename] or frames
    where = f" at {own[-1].filename}:{own[-1].lineno}" if own else ""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 120 else text[:119] + "…"
    return f"{label} failed to load ({type(exc).__name__}: {text}{where}); {advice}."


def import_module_or_file(name: str):
    """Import a dotted module name, or a Python file given by its path (``./my_plugin.py``) under its stem."""
    import importlib.util
    import sys
    from pathlib import Path

    if not (name.endswith(".py") or "/" in name or "\\" in name):
        return importlib.import_module(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise PluginLoadError(
            f"--import {name}: there is no such Python file; give the path of a .py file or a dotted module name.",
            name,
            installed=False,
        )
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # so that pickling, dataclasses and the module's own imports find it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(path.stem, None)
        raise
    return module


def load_plugins(modules: Iterable[str] = (), *, entry_points: bool = True) -> list[str]:
    """Import ``modules`` (dotted names or paths of .py files; importing one registers its entries), then, with
    ``entry_points``, every entry point of :data:`PLUGIN_GROUP` of the installed packages. Returns what was loaded,
    in order.

    A module that cannot be found raises :class:`ModuleNotFoundError`; any other failure of a plugin raises
    :class:`PluginLoadError` (for the entry points, after every other one was loaded, so that a broken package
    does not take the healthy ones with it).
    """
    loaded = []
    for name in modules:
        try:
            import_module_or_file(name)
        except PluginLoadError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                raise  # the module itself is not there (the command line says how to name it)
            raise PluginLoadError(
                _failure(f"--import {name}", exc, f"install `{exc.name}` or fix the module"), name, installed=False
            ) from exc
        except Exception as exc:
            raise PluginLoadError(_failure(f"--import {name}", exc, "fix the module"), name, installed=False) from exc
        loaded.append(name)
    if entry_points:
        failures = []
        for point in sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=lambda p: p.name):
            try:
                point.load()
            except Exception as exc:
                package = point.dist.name if getattr(point, "dist", None) is not None else "its package"
                failures.append(
                    PluginLoadError(
                        _failure(
                            f"The installed plugin `{point.name}` ({point.value}, from {package})",
                            exc,
                            f"fix or uninstall {package} (pip uninstall {package})",
                        ),
                        point.name,
                        installed=True,
                    )
                )
                continue
            loaded.append(point.value)
        if failures:
            raise failures[0]
    return loaded
