"""protosphere as its users get it from a package index: the wheel is built from this tree, installed into a fresh
virtual environment, and used from an empty folder — shipped configs by name, the README's Python snippet as written.

The fresh environment takes protosphere only from the wheel; its dependencies (torch and the rest) come from the
environment running the tests, added as a plain path, so no network is needed and the editable install of this tree is
not visible there (its ``.pth`` hooks are not processed outside a site directory).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=digits", "train.epochs=1", "fabric.threads=1", "eval.report=off", "--no-progress"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("protosphere-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, wheel) -> dict:
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of this tree on the path
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, env=env)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        # --ignore-installed: the test environment's own protosphere (an editable install) must not count as installed
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        check=True,
        capture_output=True,
        env=env,
    )
    empty = root / "empty"
    empty.mkdir()
    return {"python": python, "protosphere": venv / "bin" / "protosphere", "cwd": empty, "env": env}


def _run(fresh: dict, *command, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command],
        cwd=fresh["cwd"],
        env=fresh["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_wheel_ships_the_configs_license_and_type_marker(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n for n in names if n.startswith("protosphere/configs/") and n.endswith(".yaml")}
    in_tree = {
        f"protosphere/configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*.yaml")
    }
    assert shipped == in_tree and "protosphere/configs/default.yaml" in shipped
    assert "protosphere/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    from protosphere import __version__

    assert f"Version: {__version__}" in metadata and "License-Expression: MIT" in metadata


def test_installed_protosphere_comes_from_the_wheel(fresh):
    where = _run(fresh, fresh["python"], "-c", "import protosphere; print(protosphere.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(fresh["python"].parents[1]), where.stdout


def test_a_shipped_recipe_runs_by_name_from_an_empty_folder(fresh):
    listed = _run(fresh, fresh["protosphere"], "configs")
    assert listed.returncode == 0 and "paper/fnc2-seq-cifar10-200" in listed.stdout
    shown = _run(fresh, fresh["protosphere"], "config", "paper/fnc2-seq-cifar10-200")
    assert shown.returncode == 0 and "dataset: cifar10" in shown.stdout, shown.stderr
    done = _run(fresh, fresh["protosphere"], "run", "seq-fmnist/er-200", *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (fresh["cwd"] / "runs" / "er-200-seed0" / "results.json").is_file()


def test_the_readme_python_snippet_runs_as_written(fresh):
    readme = (REPO / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "protosphere.run(" in block)
    # as written, but on the bundled digits with one thread: the dataset and the threads are the only changes
    script = "import protosphere.config as _c\n" + snippet.replace(
        "import protosphere\n",
        "import protosphere\n"
        "_validate = _c.validate_config\n"
        "_c.validate_config = lambda data, source='config': _validate(\n"
        "    _c.deep_merge(data, {'data': {'dataset': 'digits'}, 'fabric': {'threads': 1}}), source)\n",
    )
    done = _run(fresh, fresh["python"], "-c", script, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
