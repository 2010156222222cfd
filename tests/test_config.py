import pytest

from protosphere.config import apply_overrides, load_config, validate_config
from protosphere.errors import ConfigError


def test_defaults_and_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  name: er\n  buffer_size: 200\ntrain:\n  epochs: 1\n")
    config = load_config(path, ["train.epochs=3", "optimizer.lr=0.1", "method.buffer_size=500", "seed=4"])
    assert config.train.epochs == 3 and config.optimizer.lr == 0.1 and config.method.buffer_size == 500
    assert config.seed == 4 and config.name == "c-seed4"
    assert type(config.method).__name__ == "ERConfig"


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"Unknown config key `train.epoch`: did you mean `train.epochs`\?"):
        validate_config({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"`method.bufer_size`: did you mean `method.buffer_size`"):
        validate_config({"method": {"name": "er", "bufer_size": 3}})
    with pytest.raises(ConfigError, match=r"`optimiser`: did you mean `optimizer`"):
        validate_config({"optimiser": {"lr": 0.1}})


def test_unknown_method_suggests_a_registered_one():
    with pytest.raises(ConfigError, match="did you mean `der\\+\\+`"):
        validate_config({"method": {"name": "derpp+"}})


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"train": {"epochs": 0}}, "`train.epochs` (got 0)"),
        ({"train": {"epochs": "many"}}, "`train.epochs` (got 'many')"),
        ({"optimizer": {"lr": -1}}, "`optimizer.lr` (got -1)"),
        ({"method": {"name": "er", "buffer_size": 0}}, "`method.buffer_size` (got 0)"),
        ({"data": {"dataset": "imagenet-1k"}}, "`data.dataset`"),
        ({"scenario": {"num_tasks": 2, "classes_per_task": [5]}}, "classes_per_task has 1 entries"),
    ],
)
def test_bad_values_give_one_sentence(data, fragment):
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
