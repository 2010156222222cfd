"""Properties of the source code that keep two refactors in place: the run folder has one owner
(:mod:`protosphere.runs.rundir` alone spells the names of a run's files), and the run's main loop stays readable (no
function of the engine, the runner or the protocol is over 60 lines)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "protosphere"
OWNER = SOURCE / "runs" / "rundir.py"
# a string that is a path to a file of a run: its name alone, or the end of a path
RUN_FILE = re.compile(
    r"(?:.*/)?(?:config\.yaml|results\.json|metrics\.csv|report\.html|report\.log|embeddings\.npz|"
    r"run\.lock|\.write-test|checkpoints|[^/\s]*\.ckpt)"
)
LONGEST = 60


def strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string the code uses (an f-string with ``{}`` for its values), not docstrings and bare strings."""
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if id(node) in bare:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            found.append(
                (node.lineno, "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values))
            )
    return found


def run_file_names(path: Path) -> list[str]:
    return [
        f"{path.relative_to(SOURCE.parent)}:{line}: {text!r}"
        for line, text in strings(ast.parse(path.read_text()))
        if RUN_FILE.fullmatch(text)
    ]


def test_only_the_run_folder_owner_spells_the_names_of_a_runs_files():
    spelt = [found for path in sorted(SOURCE.rglob("*.py")) if path != OWNER for found in run_file_names(path)]
    assert not spelt, "file names of a run outside rundir.py (use RunDir's):\n" + "\n".join(spelt)


def test_the_check_sees_the_names_where_they_are_spelt():
    names = "".join(run_file_names(OWNER))
    for name in ("config.yaml", "results.json", "metrics.csv", "last.ckpt", "task-{}.ckpt", "checkpoints"):
        assert repr(name) in names
    found = [text for _, text in strings(ast.parse('x = f"{run_dir / \'last.ckpt\'} is gone"\n"results.json"\n'))]
    assert [text for text in found if RUN_FILE.fullmatch(text)] == ["last.ckpt"]  # the path, not the prose


@pytest.mark.parametrize("module", ["runs/engine.py", "runs/runner.py", "runs/protocol.py"])
def test_no_function_of_the_run_loop_is_over_60_lines(module):
    tree = ast.parse((SOURCE / module).read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, from line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > LONGEST
    ]
    assert not long, f"{module}: split " + ", ".join(long)
