import pytest

from protosphere.config import AugmentConfig, apply_overrides, config_fingerprint, load_config, validate_config
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


CONTRASTIVE = {"augmentation": "contrastive"}


def test_augment_section_options_and_views():
    config = validate_config({"train": CONTRASTIVE})
    assert config.train.augment == AugmentConfig()
    assert config.train.augment.options() == {} and config.train.augment.view_options() is None
    asymmetric = load_config(
        None,
        [
            "train.augmentation=contrastive",
            "train.augment.scale=[0.08, 1.0]",
            "train.augment.jitter=[0.4, 0.4, 0.2, 0.1]",
            "train.augment.views=[{blur_p: 1.0}, {blur_p: 0.1, solarize_p: 0.2}]",
        ],
    ).train.augment
    assert asymmetric.options() == {"scale": (0.08, 1.0), "jitter": (0.4, 0.4, 0.2, 0.1)}
    assert asymmetric.view_options() == [{"blur_p": 1.0}, {"blur_p": 0.1, "solarize_p": 0.2}]


@pytest.mark.parametrize(
    "augment, fragment",
    [
        ({"scale": [0.5, 0.2]}, "`train.augment.scale` (got [0.5, 0.2]): scale must be [min, max] with 0 < min"),
        ({"ratio": [0, 1]}, "`train.augment.ratio`"),
        ({"jitter": [0.4, 0.4, 0.4]}, "`train.augment.jitter`"),
        ({"jitter": [0.4, 0.4, 0.4, 0.6]}, "hue ≤ 0.5"),
        ({"blur_p": 1.5}, "`train.augment.blur_p` (got 1.5)"),
        ({"blur_kernel": 8}, "must be odd"),
        ({"blur_sigma": [2.0, 0.1]}, "`train.augment.blur_sigma`"),
        ({"views": [{"blur_p": 1.0}]}, "views has 1 entry; give one entry per view"),
        ({"views": [{"blurp": 1.0}, {}]}, "Unknown config key `train.augment.views.0.blurp`: did you mean "),
        ({"views": [{}, {"solarize_p": -0.1}]}, "`train.augment.views.1.solarize_p`"),
        ({"solarise_p": 0.2}, "did you mean `train.augment.solarize_p`"),
    ],
)
def test_augment_section_bad_values(augment, fragment):
    with pytest.raises(ConfigError) as info:
        validate_config({"train": {**CONTRASTIVE, "augment": augment}})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_augment_options_need_the_contrastive_recipe_and_stems_a_resnet():
    with pytest.raises(ConfigError, match="train.augmentation is 'supervised', which does not use them"):
        validate_config({"train": {"augment": {"blur_p": 0.5}}})
    validate_config({"train": {"augment": {"blur_p": 0.0}}})  # the defaults written out are fine
    with pytest.raises(ConfigError, match="applies to the ResNet-18 backbones"):
        validate_config({"model": {"stem": "imagenet"}})
    with pytest.raises(ConfigError, match="`model.stem`"):
        validate_config({"model": {"backbone": "resnet18", "stem": "imagenet100"}})
    assert validate_config({"model": {"backbone": "resnet18", "stem": "imagenet"}}).model.stem == "imagenet"


def test_new_keys_at_their_defaults_keep_the_fingerprint():
    """Runs from before model.stem and train.augment existed keep their fingerprints; setting either changes it."""
    base = {"model": {"backbone": "resnet18"}, "train": CONTRASTIVE}
    plain = config_fingerprint(validate_config(base))
    written = {
        "model": {"backbone": "resnet18", "stem": "cifar"},
        "train": {**CONTRASTIVE, "augment": {"scale": [0.2, 1.0], "blur_p": 0.0, "views": []}},
    }
    assert config_fingerprint(validate_config(written)) == plain
    for change in (
        {"model": {"backbone": "resnet18", "stem": "imagenet"}, "train": CONTRASTIVE},
        {"model": {"backbone": "resnet18"}, "train": {**CONTRASTIVE, "augment": {"scale": [0.08, 1.0]}}},
        {"model": {"backbone": "resnet18"}, "train": {**CONTRASTIVE, "augment": {"views": [{"blur_p": 1}, {}]}}},
    ):
        assert config_fingerprint(validate_config(change)) != plain
