"""The package's import graph has no cycle, and every import points down the layers of docs/architecture.md.

Every ``import`` / ``from ... import`` statement of every module under ``src/protosphere`` counts, wherever it stands
(module level, inside a function, under ``TYPE_CHECKING``), relative imports included. ``from package import name``
is an edge to ``package.name`` when that is a module of the package and to ``package`` otherwise. Importing a module
runs its parent packages' ``__init__`` too; that implicit step is not an edge (otherwise every module would depend on
``protosphere/__init__``), so a package ``__init__`` that imports its children is fine as long as no child imports
the package back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "protosphere"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_files(root: Path = SOURCE) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file under ``root`` (a package's name is its ``__init__``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that ``module`` (at ``path``) imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        # the longest prefix of ``name`` that is a module of the package (``pkg.mod.Class`` → ``pkg.mod``)
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        if parts:
            found.add(".".join(parts))

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_relative(module, is_package, node.level, node.module) if node.level else node.module or ""
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                child = f"{source}.{alias.name}"
                add(child if child in modules else source)
    found.discard(module)
    return found


def import_graph(root: Path = SOURCE) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through every strongly connected component of more than one module (Tarjan's algorithm), each
    written as a closed path ``a → b → … → a``; see :func:`tangles` for every module of each component."""
    return [_closed_path(graph, component) for component in tangles(graph)]


def tangles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module: every module in one lies on a cycle with every
    other, so each must be untangled."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0

    def visit(node: str) -> None:  # recursive: the package has well under the recursion limit of modules
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the smallest-named module of ``component`` (breadth-first inside it)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    found = tangles(graph)
    text = "\n".join(
        f"  {' → '.join(_closed_path(graph, component))}\n    (all {len(component)} modules of this "
        f"tangle: {', '.join(sorted(component))})"
        for component in found
    )
    assert not found, f"{len(found)} import cycle(s) in src/{PACKAGE}:\n{text}"


# The layers, lowest first. A module may import its own layer and the layers below it, never one above: a method
# never reaches the engine, the engine never reaches a loss, the config never reaches a dataset.
LAYERS: list[tuple[str, list[str]]] = [
    ("leaves", ["errors", "version", "registry", "validation", "threads", "provenance"]),
    ("config", ["config"]),
    (
        "building blocks",
        ["data", "models", "geometry", "losses", "metrics", "buffer", "evaluation", "optim", "distributed"],
    ),
    ("methods", ["methods"]),
    (
        "run records",
        ["runs.record", "runs.rundir", "runs.interrupt", "runs.loggers", "runs.progress", "runs.protocol", "runs"],
    ),  # "runs": the subpackage's __init__
    ("report", ["report"]),
    ("running", ["runs.engine", "runs.runner", "runs.sweep"]),
    ("entry points", ["api", "cli", "bench", "catalog", ""]),  # "": the package's __init__
]


def layer_of(module: str, layers: list[tuple[str, list[str]]] = LAYERS) -> int:
    """Index in ``layers`` of the longest member (a module or subpackage, dotted below the package) that ``module``
    is or lies in: ``protosphere.runs.engine`` is in ``runs.engine``, ``protosphere.data.augment`` in ``data``."""
    inner = module.split(".", 1)[1] if "." in module else ""
    best, best_length = None, -1
    for index, (_, members) in enumerate(layers):
        for member in members:
            inside = inner == member or (member and inner.startswith(member + "."))
            if inside and len(member) > best_length:
                best, best_length = index, len(member)
    if best is None:
        raise KeyError(f"{module} is in no layer of tests/test_architecture.py LAYERS: place it")
    return best


def upward_imports(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]] = LAYERS) -> list[str]:
    return sorted(
        f"{a} ({layers[layer_of(a, layers)][0]}) imports {b} ({layers[layer_of(b, layers)][0]})"
        for a, targets in graph.items()
        for b in targets
        if layer_of(b, layers) > layer_of(a, layers)
    )


def test_every_module_has_a_layer():
    unplaced = []
    for module in import_graph():
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"modules in no layer of LAYERS (place them): {', '.join(sorted(unplaced))}"
    with pytest.raises(KeyError, match="place it"):
        layer_of("protosphere.not_a_module")


def test_imports_only_point_down_the_layers():
    found = upward_imports(import_graph())
    assert not found, "imports up the layers:\n  " + "\n  ".join(found)


# ------------------------------------------------------------------------------------- the checker checks itself
def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / PACKAGE


def test_function_level_and_relative_imports_are_edges(tmp_path):
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "config.py": "def f():\n    from .methods import method_class\n",
            "methods/__init__.py": "from . import er\n",
            "methods/er.py": "from ..config import X\nimport protosphere.geometry as g\n",
            "geometry.py": "",
        },
    )
    graph = import_graph(root)
    assert graph["protosphere.config"] == {"protosphere.methods"}
    assert graph["protosphere.methods"] == {"protosphere.methods.er"}
    assert graph["protosphere.methods.er"] == {"protosphere.config", "protosphere.geometry"}
    assert cycles(graph) == [
        ["protosphere.config", "protosphere.methods", "protosphere.methods.er", "protosphere.config"]
    ]


def test_every_cycle_is_reported_and_a_dag_has_none(tmp_path):
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "from .a import thing\n",
            "c.py": "from protosphere import d\n",
            "d.py": "def g():\n    import protosphere.c\n",
            "e.py": "from . import a, c\n",
            "pkg/__init__.py": "from .leaf import x\n",
            "pkg/leaf.py": "from ..a import y\n",
        },
    )
    found = cycles(import_graph(root))
    assert sorted(found) == [
        ["protosphere.a", "protosphere.b", "protosphere.a"],
        ["protosphere.c", "protosphere.d", "protosphere.c"],
    ]
    assert cycles({"x": {"y"}, "y": {"z"}, "z": set()}) == []


@pytest.mark.parametrize(
    "module, is_package, level, target, expected",
    [
        ("protosphere.methods.er", False, 1, None, "protosphere.methods"),
        ("protosphere.methods.er", False, 2, "config", "protosphere.config"),
        ("protosphere.methods", True, 1, "er", "protosphere.methods.er"),
        ("protosphere.methods", True, 2, "config", "protosphere.config"),
    ],
)
def test_relative_imports_resolve_like_python(module, is_package, level, target, expected):
    assert _resolve_relative(module, is_package, level, target) == expected
    import importlib.util

    package = module if is_package else module.rpartition(".")[0]
    assert importlib.util.resolve_name("." * level + (target or ""), package) == expected


def test_an_upward_import_is_caught_even_inside_a_function(tmp_path):
    root = _write(
        tmp_path,
        {
            "__init__.py": "",
            "config.py": "def check():\n    from .data.corruptions import CORRUPTIONS\n",  # config → building blocks
            "data/__init__.py": "",
            "data/corruptions.py": "from ..registry import X\n",
            "registry.py": "",
        },
    )
    found = upward_imports(import_graph(root))
    assert found == ["protosphere.config (config) imports protosphere.data.corruptions (building blocks)"]
