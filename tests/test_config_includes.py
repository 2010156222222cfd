"""Config files that start from a base file (``base: fnc2.yaml`` + overrides deep-merged on top).

``tests/data/resolved_configs.json`` holds every shipped config as it resolved before any config used ``base:`` (its
full RunConfig and its fingerprint); the shipped configs must still resolve to exactly that. A config changed on
purpose (a paper config following its source more closely) is re-recorded in the same commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from protosphere.config import config_fingerprint, deep_merge, dump_config, load_config, read_yaml
from protosphere.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RESOLVED = json.loads((ROOT / "tests" / "data" / "resolved_configs.json").read_text())


@pytest.mark.parametrize("relative", sorted(RESOLVED))
def test_every_config_resolves_as_before(relative, monkeypatch):
    monkeypatch.chdir(ROOT)  # the stored paths (and so the default run names) are relative to the repository
    config = load_config(relative, [])
    assert config.model_dump(mode="json") == RESOLVED[relative]["config"]
    assert config_fingerprint(config) == RESOLVED[relative]["fingerprint"]


def test_configs_use_bases_and_keep_their_header():
    with_base = [
        path for path in (ROOT / "configs").rglob("*.yaml") if "base" in (yaml.safe_load(path.read_text()) or {})
    ]
    assert len(with_base) >= 40  # the families of configs that differ in a few values
    for path in with_base:
        text = path.read_text()
        assert text.startswith("# "), f"{path} lost its header comment"
        assert (path.parent / yaml.safe_load(text)["base"]).is_file()


def test_deep_merge():
    base = {"method": {"name": "fnc2", "buffer_size": 0, "marks": [0.3, 0.8]}, "train": {"epochs": 5}, "seed": 0}
    merged = deep_merge(base, {"method": {"buffer_size": 200, "marks": [0.4]}, "seed": None, "name": "x"})
    assert merged == {
        "method": {"name": "fnc2", "buffer_size": 200, "marks": [0.4]},
        "train": {"epochs": 5},
        "seed": None,
        "name": "x",
    }
    assert base["method"]["buffer_size"] == 0  # the base is not modified
    assert deep_merge({"eval": None}, {"eval": {"batch_size": 8}}) == {"eval": {"batch_size": 8}}
    assert deep_merge({"eval": {"batch_size": 8}}, {"eval": 3}) == {"eval": 3}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_chain_of_bases_relative_to_each_file(tmp_path):
    write(tmp_path, "root.yaml", "seed: 3\ntrain: {epochs: 4, batch_size: 64}\nmethod: {name: er, buffer_size: 100}\n")
    write(tmp_path, "family/middle.yaml", "base: ../root.yaml\ntrain: {epochs: 2}\n")
    leaf = write(
        tmp_path,
        "family/ablations/leaf.yaml",
        "# a header\nbase: ../middle.yaml\nmethod: {buffer_size: 500}\nscenario: {num_tasks: 2}\n",
    )
    assert read_yaml(leaf) == {
        "seed": 3,
        "train": {"epochs": 2, "batch_size": 64},
        "method": {"name": "er", "buffer_size": 500},
        "scenario": {"num_tasks": 2},
    }
    config = load_config(leaf, ["train.epochs=7"])
    assert (config.seed, config.train.epochs, config.train.batch_size) == (3, 7, 64)
    assert config.method.buffer_size == 500 and config.name == "leaf-seed3"
    written = yaml.safe_load(dump_config(config))  # what a run directory's config.yaml holds: fully merged
    assert "base" not in written and written["method"]["buffer_size"] == 500 and written["train"]["batch_size"] == 64


def test_a_run_directory_holds_the_merged_config(tmp_path):
    from protosphere.cli import main

    write(
        tmp_path,
        "tiny.yaml",
        "data: {dataset: digits, train_fraction: 0.2}\nscenario: {num_tasks: 2}\nmodel: {backbone: mlp, "
        "mlp_hidden: [8]}\nmethod: {name: finetune}\ntrain: {epochs: 1, batch_size: 32, augmentation: none}\n"
        "eval: {neural_collapse: false, random_init_baseline: false, embeddings: false, report: 'off'}\n"
        "fabric: {threads: 1}\n",
    )
    child = write(tmp_path, "child.yaml", f"base: tiny.yaml\noutput_dir: {tmp_path / 'runs'}\nmethod: {{name: er}}\n")
    assert main(["run", str(child), "--no-progress"]) == 0
    saved = yaml.safe_load((tmp_path / "runs" / "child-seed0" / "config.yaml").read_text())
    assert "base" not in saved
    assert saved["method"]["name"] == "er" and saved["data"]["dataset"] == "digits"
    assert saved["model"]["mlp_hidden"] == [8]


@pytest.mark.parametrize(
    "files, start, fragment",
    [
        ({"a.yaml": "base: a.yaml\n"}, "a.yaml", "a.yaml includes itself through `base` ("),
        (
            {"a.yaml": "base: b.yaml\n", "b.yaml": "base: ./a.yaml\nseed: 1\n"},
            "a.yaml",
            "includes itself through `base`",
        ),
        ({"a.yaml": "base: missing.yaml\n"}, "a.yaml", "its base missing.yaml does not exist"),
        ({"a.yaml": "base: [b.yaml]\n"}, "a.yaml", "`base` must be the path of another YAML file"),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "- not a mapping\n"}, "a.yaml", "must be a YAML mapping"),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "train: {epoch: 2}\n"}, "a.yaml", "did you mean `train.epochs`"),
    ],
)
def test_bad_bases_are_one_clear_sentence(tmp_path, files, start, fragment):
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / start, [])
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_the_cli_refuses_a_base_cycle_in_one_line(tmp_path, capsys):
    from protosphere.cli import main

    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    assert main(["run", str(tmp_path / "a.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert f"{tmp_path / 'a.yaml'} → {tmp_path / 'b.yaml'} → {tmp_path / 'a.yaml'}" in err
