"""The scripts in examples/ run as a user runs them and do what their docstrings say.

Each runs as its own process from an empty temporary folder, with ``PYTHONPATH`` set to this tree's ``src`` and one
thread, on scikit-learn's bundled digits. The checks are on what a script prints and writes: the files, accuracies
well above chance (10 classes: 10 %), the numbers a script prints against the run's own results.json, the registered
names usable from the command line (and refused without ``--import``), and that the examples use only public API.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
# what an example may import from protosphere: the documented API (README.md, docs/architecture.md)
PUBLIC = {
    "protosphere",
    "protosphere.config",
    "protosphere.geometry",
    "protosphere.losses",
    "protosphere.methods.base",
    "protosphere.methods.parts",
    "protosphere.models",
    "protosphere.registry",
}


def run(arguments: list[str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",  # torch's thread count, and so protosphere's default for a run
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
    }
    result = subprocess.run([sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == expect, (
        f"{' '.join(arguments)} exited {result.returncode}, expected {expect}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def final_accuracy(record: dict, classifier: str) -> float:
    return record["metrics"][classifier]["class_il"]["final_average_accuracy"]


def printed(pattern: str, text: str) -> list[tuple[str, ...]]:
    found = re.findall(pattern, text, flags=re.MULTILINE)
    assert found, f"no line matching {pattern!r} in:\n{text}"
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_example_says_how_to_run_and_scale_it_and_uses_only_public_api(script):
    tree = ast.parse((EXAMPLES / script).read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc and f"python {script}" in doc and "Scale it up" in doc
    used = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    used |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {m for m in used if m.split(".")[0] == "protosphere"} <= PUBLIC
    names = [
        alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names
    ]
    assert not [n for n in names if n.split(".")[-1].startswith("_")]


def test_the_readme_lists_every_example_with_a_command_that_exists():
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert SCRIPTS == ["losses_in_your_loop.py", "my_backbone.py", "my_method.py", "train_and_plot_features.py"]
    for script in SCRIPTS:
        assert f"[{script}]({script})" in text and f"python {script}" in text
    for command in re.findall(r"python (\S+\.py)", text):
        assert (EXAMPLES / command).is_file(), command


def test_train_and_plot_features(tmp_path):
    from PIL import Image

    out = run([str(EXAMPLES / "train_and_plot_features.py"), "out"], tmp_path).stdout
    record = results(tmp_path / "out" / "fnc2-seed0")
    assert record["method"] == "fnc2" and record["config"]["data"]["dataset"] == "digits"
    headline = record["headline_classifier"]
    # every final accuracy printed is the run's own
    finals = dict(printed(r"^final average class-IL accuracy, (\w+): ([\d.]+) %$", out))
    assert finals == {name: f"{final_accuracy(record, name):.2f}" for name in record["accuracy"]}
    assert final_accuracy(record, headline) > 30  # measured 62.9 (chance 10)
    # predict reproduces the last row of the run's accuracy matrix, task by task
    rows = printed(r"^task (\d) \(classes .*\): predict ([\d.]+) %, run ([\d.]+) %$", out)
    last_row = record["accuracy"][headline]["class_il"][-1]
    assert [int(task) for task, _, _ in rows] == list(range(5))
    for task, predicted, recorded in rows:
        assert predicted == recorded == f"{last_row[int(task)]:.2f}"
    # the plot: a real picture (points in ten class colours), not an empty canvas
    with Image.open(tmp_path / "features.png") as picture:
        assert picture.format == "PNG" and min(picture.size) > 300
        assert len(picture.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.png", "out"]  # nothing else in the working folder


def test_my_method_from_python_and_from_the_command_line(tmp_path):
    script = EXAMPLES / "my_method.py"
    out = run([str(script), "py"], tmp_path).stdout
    record = results(tmp_path / "py" / "prototype_pull-seed0")
    assert record["method"] == "prototype_pull" and record["headline_classifier"] == "nearest_prototype"
    accuracy = final_accuracy(record, "nearest_prototype")
    assert printed(r"^final average class-IL accuracy: ([\d.]+) %$", out) == [f"{accuracy:.2f}"]
    assert accuracy > 50  # measured 86.4 (chance 10)

    # the command line of the docstring, the module imported by name from its folder (a user's copy)
    shutil.copy(script, tmp_path / "my_method.py")
    command = "seq-fmnist/er-200 method.name=prototype_pull data.dataset=digits train.epochs=20 train.flip=false"
    refused = run(["-m", "protosphere.cli", "run", *command.split(), "output_dir=cli"], tmp_path, expect=2)
    assert "unknown method `prototype_pull`" in refused.stderr and not (tmp_path / "cli").exists()
    run(
        [
            "-m",
            "protosphere.cli",
            "--import",
            "my_method",
            "run",
            *command.split(),
            "output_dir=cli",
            "eval.report=off",
        ],
        tmp_path,
    )
    cli = results(tmp_path / "cli" / "er-200-seed0")
    assert (
        cli["config"]["method"]
        == record["config"]["method"]
        == {
            "name": "prototype_pull",
            "projection_dim": 32,
            "temperature": 0.1,
            "buffer_size": 200,
        }
    )
    assert cli["accuracy"] == record["accuracy"]  # the same experiment as the Python run

    # by path, from any folder: the merged config names the method with its defaults
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    merged = run(["-m", "protosphere.cli", "--import", str(script), "config", *command.split()], elsewhere).stdout
    assert "name: prototype_pull" in merged and "projection_dim: 32" in merged


def test_my_backbone(tmp_path):
    script = EXAMPLES / "my_backbone.py"
    out = run([str(script), "out"], tmp_path).stdout
    record = results(tmp_path / "out" / "er-200-seed0")
    assert record["config"]["model"]["backbone"] == "tiny_convnet" and record["method"] == "er"
    parameters = printed(r"^tiny_convnet: out_dim 64, ([\d,]+) parameters$", out)
    assert printed(r"^trained backbone: (\w+) \(([\d,]+) parameters\)$", out) == [("TinyConvNet", parameters[0])]
    # 3·3·1·32 + 2·32 (BN) + 3·3·32·64 + 2·64 (BN): the network of the file, not a built-in one
    assert parameters == [f"{9 * 32 + 64 + 9 * 32 * 64 + 128:,}"]
    assert final_accuracy(record, "head") > 50  # measured 80.5 (chance 10)

    command = ["config", "seq-fmnist/er-200", "model.backbone=tiny_convnet"]
    refused = run(["-m", "protosphere.cli", *command], tmp_path, expect=2)
    assert "tiny_convnet" in refused.stderr
    merged = run(["-m", "protosphere.cli", "--import", str(script), *command], tmp_path).stdout
    assert "backbone: tiny_convnet" in merged


def test_losses_in_your_loop(tmp_path):
    out = run([str(EXAMPLES / "losses_in_your_loop.py")], tmp_path).stdout
    losses = [float(v) for _, v in printed(r"^epoch (\d+): loss ([\d.]+)$", out)]
    assert len(losses) == 10 and losses[-1] < 0.9 * losses[0]  # measured 29.19 -> 22.53
    (accuracy,) = printed(r"^nearest-prototype test accuracy: ([\d.]+) %", out)
    assert float(accuracy) > 80  # measured 93.9 (chance 10)
    assert list(tmp_path.iterdir()) == []  # writes nothing
