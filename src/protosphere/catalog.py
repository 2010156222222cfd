"""What ``protosphere methods`` and ``protosphere config METHOD`` print: read from the registry and the schema.

Nothing here is written by hand per method: a method's line is the first paragraph of its class docstring (or of its
module's, which names the paper), and a config reference walks the pydantic models of :class:`RunConfig` with the
method's own settings under ``method``.
"""

from __future__ import annotations

import inspect
import sys
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _first_paragraph(text: str | None) -> str:
    if not text:
        return ""
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def method_summary(name: str) -> str:
    """One line for method ``name``: what it is and its paper (from the docstrings)."""
    from .methods import method_class

    cls = method_class(name)
    own = cls.__dict__.get("__doc__")
    module = sys.modules[cls.__module__]
    shared = len([c for c in _registry().values() if c.__module__ == cls.__module__]) > 1
    # a module holding several methods describes them together; the class docstring then says which one it is
    text = _first_paragraph(own) if own and shared else _first_paragraph(module.__doc__) or _first_paragraph(own)
    return text or cls.__name__


def _registry() -> dict:
    from .registry import METHODS

    return {name: METHODS.get(name) for name in METHODS.names()}


def method_summaries() -> list[tuple[str, str]]:
    from .methods import method_names

    return [(name, method_summary(name)) for name in method_names()]


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_text(a) for a in get_args(annotation))
    if origin in (list, tuple):
        args = get_args(annotation)
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args if a is not Ellipsis)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field) -> str:
    words = []
    for item in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None:
                words.append(f"{sign} {value}")
    return ", ".join(words)


def _default(field) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        value = field.default_factory()
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return None


def config_rows(method: str) -> list[tuple[str, str, str, str]]:
    """(dotted key, default, type, description) for every key of a run config of ``method``; the default is what a
    config naming only the method gets (its recipe over the generic defaults)."""
    from .config import MethodConfig, RunConfig, validate_config
    from .methods import method_config_class

    rows: list[tuple[str, str, str, str]] = []
    resolved = validate_config({"method": {"name": method}}).model_dump(mode="json")  # with the method's recipe

    def default_of(dotted: str, field) -> Any:
        node: Any = resolved
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return _default(field)  # inside an optional section that is off: the section's own default
            node = node[part]
        return node

    def walk(model: type[BaseModel], prefix: str) -> None:
        for key, field in model.model_fields.items():
            annotation = field.annotation
            if prefix == "" and key == "method":
                walk(method_config_class(method), "method.")
                continue
            sub = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if sub is not None and not issubclass(sub, MethodConfig):
                walk(sub, f"{prefix}{key}.")
                continue
            optional = next((a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if optional is not None and get_origin(annotation) is list:  # a list of sections: its entries' keys
                rows.append((f"{prefix}{key}", "[]", "list of mappings", field.description or ""))
                walk(optional, f"{prefix}{key}[k].")
                continue
            if optional is not None:  # an optional section (off when null): the switch, then its keys
                rows.append((f"{prefix}{key}", "null", "mapping | true | null", field.description or ""))
                walk(optional, f"{prefix}{key}.")
                continue
            default = default_of(f"{prefix}{key}", field)
            registered = next((m.registry for m in field.metadata if hasattr(m, "registry")), None)
            kind = " | ".join(registered.names()) if registered is not None else _type_text(annotation)
            limits = _constraints(field)
            description = field.description or (
                "the method (see `protosphere methods`)" if prefix == "method." and key == "name" else ""
            )
            if limits:
                description = f"{description} ({limits})" if description else limits
            rows.append((f"{prefix}{key}", "null" if default is None else _yaml_value(default), kind, description))

    walk(RunConfig, "")
    return rows


def _yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
