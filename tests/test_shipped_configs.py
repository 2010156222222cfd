"""Shipped configs by name, each method's recipe as its defaults, and the commands that show a config before a run:
``protosphere configs`` (list, --copy), ``protosphere config METHOD | FILE [overrides]`` and ``run --dry-run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from protosphere import cli
from protosphere.config import (
    RECIPE_SECTIONS,
    SHIPPED_CONFIGS,
    OptimizerConfig,
    TrainConfig,
    load_config,
    locate_config,
    read_yaml,
    shipped_configs,
    validate_config,
)
from protosphere.errors import ConfigError
from protosphere.methods import method_class
from protosphere.registry import METHODS

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_configs_folder_is_the_shipped_one():
    assert (REPO / "configs").resolve() == SHIPPED_CONFIGS  # one source of truth, not two copies
    on_disk = {p.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix() for p in SHIPPED_CONFIGS.rglob("*.yaml")}
    assert set(shipped_configs()) == on_disk and "default" in on_disk and "paper/fnc2-seq-cifar10-200" in on_disk


@pytest.mark.parametrize(
    "name", ["default", "seq-fmnist/fnc2", "seq-fmnist/fnc2.yaml", "configs/paper/fnc2-seq-cifar10-200.yaml"]
)
def test_a_shipped_config_is_found_by_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stem = Path(name).name.removesuffix(".yaml")
    path = locate_config(name)
    assert path.is_file() and path.is_relative_to(SHIPPED_CONFIGS) and path.stem == stem
    assert load_config(name).name == f"{stem}-seed0"


def test_a_file_that_exists_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("default").write_text("seed: 7\n")
    assert locate_config("default") == Path("default") and load_config("default").seed == 7


def test_an_unknown_name_suggests_the_closest_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"papr/fnc2-seq-cifar10-200 does not exist.*paper/fnc2-seq-cifar10-200"):
        locate_config("papr/fnc2-seq-cifar10-200")


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_a_config_naming_only_the_method_gets_its_recipe(name):
    recipe = method_class(name).recipe
    assert recipe is not None, f"{name} has no recipe"
    alone = validate_config({"method": {"name": name}}).model_dump(mode="json")
    shipped = load_config(recipe).model_dump(mode="json")
    written = read_yaml(locate_config(recipe))
    for section in RECIPE_SECTIONS:
        if section in written:
            assert alone[section] == shipped[section], f"{name}: {section} differs from its recipe {recipe}"
    assert alone["data"] == validate_config({}).model_dump(mode="json")["data"]  # the recipe never picks the data


def test_a_config_still_overrides_its_methods_recipe():
    config = validate_config({"method": {"name": "fnc2", "temperature": 0.3}, "train": {"epochs": 2}})
    assert config.train.epochs == 2 and config.method.temperature == 0.3
    assert config.train.batch_size == 128 and config.train.augmentation == "contrastive"  # the rest: the recipe's


def test_a_method_without_a_recipe_keeps_the_generic_defaults(monkeypatch):
    monkeypatch.setattr(method_class("er"), "recipe", None)
    config = validate_config({"method": {"name": "er"}})
    assert config.train == TrainConfig() and config.optimizer == OptimizerConfig()


def test_a_two_view_method_on_a_one_view_augmentation_is_told():
    from protosphere.runs.runner import build_scenario_from_config, scenario_notes

    config = load_config(None, ["method.name=co2l", "data.dataset=digits", "train.augmentation=supervised"])
    notes = scenario_notes(config, build_scenario_from_config(config))
    assert any("co2l contrasts two augmented views" in note and "contrastive" in note for note in notes)
    config = load_config(None, ["method.name=co2l", "data.dataset=digits"])
    assert not scenario_notes(config, build_scenario_from_config(config))
    config = load_config(None, ["method.name=er", "data.dataset=digits", "train.augmentation=none"])
    assert not scenario_notes(config, build_scenario_from_config(config))


# ------------------------------------------------------------------------------------------------------ commands
def test_config_of_a_file_prints_the_merged_config_that_run_would_train(capsys):
    assert cli.main(["config", "seq-fmnist/fnc2-200", "seed=3", "train.epochs=2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# ") and "seed=3 train.epochs=2" in text.splitlines()[0]
    printed = validate_config(yaml.safe_load(text))
    assert printed == load_config("seq-fmnist/fnc2-200", ["seed=3", "train.epochs=2"])


def test_run_dry_run_prints_the_config_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "default", "--dry-run", f"output_dir={tmp_path / 'runs'}"]) == 0
    assert validate_config(yaml.safe_load(capsys.readouterr().out)) == load_config(
        "default", [f"output_dir={tmp_path / 'runs'}"]
    )
    assert list(tmp_path.iterdir()) == []


def test_config_of_a_method_shows_its_recipe_defaults(capsys):
    assert cli.main(["config", "fnc2"]) == 0
    text = capsys.readouterr().out
    assert "configs/seq-fmnist/fnc2.yaml" in text.splitlines()[0]
    rows = {
        line.split("=")[0].strip(): line.split("=", 1)[1].split("[")[0].strip()
        for line in text.splitlines()
        if " = " in line
    }
    assert rows["train.augmentation"] == "contrastive" and rows["train.batch_size"] == "128"
    assert rows["optimizer.lr"] == "0.1" and rows["method.distill_predictor_hidden"] == "128"


def test_configs_lists_every_shipped_config(capsys):
    assert cli.main(["configs"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == list(shipped_configs())


def test_configs_copy_writes_a_standalone_file_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["configs", "--copy", "seq-fmnist/fnc2-200", "mine.yaml"]) == 0
    copied = Path("mine.yaml").read_text()
    assert "base:" not in copied and copied.startswith("# ")
    assert load_config("mine.yaml").model_dump(exclude={"name"}) == load_config("seq-fmnist/fnc2-200").model_dump(
        exclude={"name"}
    )
    Path("mine.yaml").write_text("seed: 1\n")
    assert cli.main(["configs", "--copy", "seq-fmnist/fnc2-200", "mine.yaml"]) == 2
    assert "already exists" in capsys.readouterr().err and Path("mine.yaml").read_text() == "seed: 1\n"


@pytest.mark.parametrize("command", list(cli.COMMAND_HELP))
def test_every_subcommand_help_has_a_description_and_examples(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    _, description, examples = cli.COMMAND_HELP[command]
    assert description.split()[0] in text and "examples:" in text
    assert all(example.split("#")[0].strip() in text for example in examples)


def test_a_closed_pipe_ends_the_command_quietly():
    reader = subprocess.run(
        f"{sys.executable} -m protosphere.cli config fnc2 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert reader.stdout.startswith("# every key") and "error" not in reader.stderr and "Traceback" not in reader.stderr
