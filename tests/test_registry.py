"""One registry type for methods, datasets, backbones and augmentations; user code registers its own and the CLI
imports it (``--import`` or the ``protosphere.plugins`` entry points)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from protosphere.cli import main
from protosphere.config import validate_config
from protosphere.errors import ConfigError
from protosphere.registry import AUGMENTATIONS, BACKBONES, DATASETS, METHODS, Registry, UnknownNameError, load_plugins

TESTS = Path(__file__).parent

TOY_RUN = (
    "data: {dataset: toy_quadrants}\n"
    "scenario: {num_tasks: 2}\n"
    "model: {backbone: toy_linear}\n"
    "method: {name: finetune}\n"
    "train: {epochs: 1, batch_size: 16, augmentation: none}\n"
    "eval: {neural_collapse: false, random_init_baseline: false, embeddings: false, report: 'off'}\n"
    "fabric: {threads: 1}\n"
    "output_dir: runs\n"
    "name: toy\n"
)


@pytest.fixture
def clean_registries(monkeypatch):
    """Whatever a test registers or imports is gone afterwards (sys.path too)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = {registry: set(registry.names()) for registry in (METHODS, DATASETS, BACKBONES, AUGMENTATIONS)}
    modules = set(sys.modules)
    yield
    for registry, names in before.items():
        for name in set(registry.names()) - names:
            registry.unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith(("toy_", "entry_plugin")):
            del sys.modules[name]


# ------------------------------------------------------------------------------------------------- the type itself
def test_register_get_and_the_unknown_name_sentence():
    things = Registry("thing")
    assert things.names() == () and "a" not in things

    @things.register("square")
    def square(x):
        return x * x

    things.register("cube", lambda x: x**3)
    assert things.get("square") is square and things.get("cube")(2) == 8
    assert things.names() == ("cube", "square") and list(things) == ["cube", "square"] and len(things) == 2
    with pytest.raises(UnknownNameError) as caught:
        things.get("squere")
    assert str(caught.value) == "unknown thing `squere`; did you mean `square`? available: cube, square."
    assert things.unknown("zzzzzz") == "unknown thing `zzzzzz`; available: cube, square"
    with pytest.raises(ValueError, match="`cube` is already registered"):
        things.register("cube", lambda x: x)
    things.register("cube", square, replace=True)
    assert things.get("cube") is square
    things.register("cube", square)  # the same object again (a module imported twice) is no conflict
    things.unregister("cube")
    assert things.names() == ("square",)
    with pytest.raises(ValueError, match="non-empty string"):
        things.register("", square)


def test_built_ins_are_imported_on_the_first_look_up(tmp_path, monkeypatch, clean_registries):
    (tmp_path / "toy_builtins.py").write_text(
        "from protosphere.registry import Registry\n"
        "import sys\n"
        "sys.modules['toy_builtins_registry'].register('alpha', 1)\n"
    )
    things = Registry("thing", builtins="toy_builtins")
    monkeypatch.setitem(sys.modules, "toy_builtins_registry", things)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "toy_builtins" not in sys.modules
    assert things.get("alpha") == 1 and things.names() == ("alpha",)
    assert "toy_builtins" in sys.modules


def test_the_built_in_names():
    assert set(METHODS.names()) >= {"er", "der++", "fnc2", "co2l", "nct", "sycon", "cassle", "clop", "ntce"}
    assert set(DATASETS.names()) == {
        "fashion_mnist",
        "mnist",
        "digits",
        "cifar10",
        "cifar100",
        "tiny_imagenet",
        "imagenet100",
        "domainnet",
    }
    assert set(BACKBONES.names()) == {"mlp", "small_cnn", "resnet18", "resnet18_reduced"}
    assert set(AUGMENTATIONS.names()) == {"none", "supervised", "contrastive"}


# ------------------------------------------------------------------------------------ config schemas follow them
@pytest.mark.parametrize(
    "section, key, registry, wrong, closest",
    [
        ("data", "dataset", DATASETS, "cifar1000", "cifar100"),
        ("model", "backbone", BACKBONES, "resnet-18", "resnet18"),
        ("train", "augmentation", AUGMENTATIONS, "contrastiv", "contrastive"),
        ("method", "name", METHODS, "fcn2", "fnc2"),
    ],
)
def test_config_names_come_from_the_registry(section, key, registry, wrong, closest, clean_registries):
    with pytest.raises(ConfigError) as caught:
        validate_config({section: {key: wrong}})
    message = str(caught.value)
    assert f"`{section}.{key}` (got '{wrong}')" in message and f"did you mean `{closest}`?" in message
    assert f"available: {', '.join(registry.names())}." in message
    registry.register(wrong, object() if registry is not METHODS else METHODS.get(closest))
    config = validate_config({section: {key: wrong}})
    assert getattr(getattr(config, section), key) == wrong


def test_a_registered_backbone_and_augmentation_are_built(clean_registries):
    import torch

    from protosphere.data.augment import RandomHorizontalFlip, build_augmentation
    from protosphere.models import build_backbone

    @BACKBONES.register("toy_identity")
    def toy_identity(in_channels, image_size, **options):
        net = torch.nn.Flatten()
        net.out_dim = in_channels * image_size * image_size
        net.options = options
        return net

    AUGMENTATIONS.register("toy_flip_only", lambda image_size, channels, **options: [RandomHorizontalFlip(1.0)])
    net = build_backbone("toy_identity", in_channels=1, image_size=4, width=3)
    assert net.out_dim == 16 and net.options == {"width": 3}
    augment = build_augmentation("toy_flip_only", image_size=4, channels=1, mean=0.0, std=1.0)
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    assert torch.equal(augment(x), x.flip(-1).float() / 255)
    with pytest.raises(ConfigError, match="did you mean `toy_identity`"):
        build_backbone("toy_identiy", in_channels=1, image_size=4)


# -------------------------------------------------------------------------------------------- the CLI imports them
def test_a_run_with_a_user_dataset_and_backbone_through_import(tmp_path, monkeypatch, capsys, clean_registries):
    shutil.copy(TESTS / "toy_plugin.py", tmp_path / "toy_plugin.py")  # beside the config, as a user keeps it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy.yaml").write_text(TOY_RUN)
    assert main(["run", "toy.yaml", "--no-progress"]) == 2  # unknown without the import
    err = capsys.readouterr().err
    assert "unknown dataset `toy_quadrants`" in err and len(err.strip().splitlines()) == 1

    assert main(["--import", "toy_plugin", "--import", "json", "run", "toy.yaml", "--no-progress"]) == 0
    plugin = sys.modules["toy_plugin"]
    assert plugin.CALLS["dataset"] == 1 and plugin.CALLS["backbone"] >= 1
    run = tmp_path / "runs" / "toy"
    results = json.loads((run / "results.json").read_text())
    assert results["scenario"]["class_names"] == ["tl", "tr", "bl", "br"]
    assert results["scenario"]["tasks"] == [[0, 1], [2, 3]]
    assert results["config"]["data"]["dataset"] == "toy_quadrants"
    assert results["config"]["model"]["backbone"] == "toy_linear"
    import torch

    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any("toy_layer" in key for key in state["method"])  # the user's network was trained


def test_import_of_a_missing_module_is_one_sentence(tmp_path, monkeypatch, capsys, clean_registries):
    monkeypatch.chdir(tmp_path)
    assert main(["--import", "toy_no_such_module", "methods"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: --import toy_no_such_module: no module named `toy_no_such_module` on the Python path; "
        "give a dotted module name importable from the current folder or an installed package, or the "
        "path of a .py file."
    )


def test_entry_point_plugins_are_loaded_when_the_cli_starts(tmp_path, monkeypatch, capsys, clean_registries):
    (tmp_path / "entry_plugin_toy.py").write_text(
        "from protosphere.registry import AUGMENTATIONS\n"
        "AUGMENTATIONS.register('toy_from_entry_point', lambda image_size, channels, **options: [])\n"
    )
    info = tmp_path / "entry_plugin_toy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: entry-plugin-toy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[protosphere.plugins]\ntoy = entry_plugin_toy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "toy_from_entry_point" not in AUGMENTATIONS
    assert main(["methods"]) == 0
    assert "toy_from_entry_point" in AUGMENTATIONS
    capsys.readouterr()
    assert load_plugins([], entry_points=True) == ["entry_plugin_toy"]
    assert (
        validate_config({"train": {"augmentation": "toy_from_entry_point"}}).train.augmentation
        == "toy_from_entry_point"
    )


def broken_entry_point(folder: Path) -> None:
    """An installed package whose protosphere.plugins entry point raises when imported."""
    (folder / "entry_plugin_broken.py").write_text("import json\nraise RuntimeError('the plugin is broken')\n")
    info = folder / "entry_plugin_broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: entry-plugin-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[protosphere.plugins]\nbroken = entry_plugin_broken\n")


def test_a_broken_installed_plugin_is_one_line_and_methods_still_work(tmp_path, monkeypatch, capsys, clean_registries):
    broken_entry_point(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["methods"]) == 0
    captured = capsys.readouterr()
    warning = captured.err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: The installed plugin `broken`")
    assert "RuntimeError: the plugin is broken" in warning[0] and "entry_plugin_broken.py:2" in warning[0]
    assert "pip uninstall entry-plugin-broken" in warning[0] and "finetune" in captured.out
    (tmp_path / "cfg.yaml").write_text("method: {name: finetune}\n")
    assert main(["run", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 2  # a run needs its plugins
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: The installed plugin `broken`")


def test_import_of_a_file_path_and_of_a_broken_module(tmp_path, monkeypatch, capsys, clean_registries):
    shutil.copy(TESTS / "toy_plugin.py", tmp_path / "toy_file_plugin.py")
    monkeypatch.chdir(tmp_path)
    assert main(["--import", "./toy_file_plugin.py", "methods"]) == 0
    assert "toy_quadrants" in DATASETS
    assert main(["--import", "./toy_nowhere.py", "methods"]) == 2
    assert "no such Python file" in capsys.readouterr().err
    (tmp_path / "toy_needs_more.py").write_text("import toy_dependency_not_installed\n")
    assert main(["--import", "toy_needs_more", "methods"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--import toy_needs_more failed" in err[0]
    assert "install `toy_dependency_not_installed`" in err[0]


# ------------------------------------------------------------------------------- a method is one file in methods/
ONE_FILE_METHOD = '''"""Fine-tuning with a label-smoothed cross-entropy: a method added as one file of methods/."""

import torch.nn.functional as F

from ..config import MethodConfig
from ..registry import METHODS
from .base import StepOutput, SupervisedMethod


class SmoothedConfig(MethodConfig):
    name: str = "toy_smoothed"
    smoothing: float = 0.1


@METHODS.register("toy_smoothed")
class Smoothed(SupervisedMethod):
    config_class = SmoothedConfig

    def training_step(self, images, labels, step):
        logits = self(self.transforms.train(images))
        loss = F.cross_entropy(logits, labels, label_smoothing=self.config.smoothing)
        return StepOutput(loss, {"smoothed_ce": loss.detach()})
'''


def test_a_new_file_in_the_methods_folder_is_a_method_the_cli_runs(tmp_path, monkeypatch, clean_registries):
    """As docs/architecture.md says: one new file in methods/, nothing else edited. The file lies in a temporary
    folder added to the package's search path, so the source tree stays as it is."""
    import protosphere.methods as methods

    folder = tmp_path / "more_methods"
    folder.mkdir()
    (folder / "toy_smoothed.py").write_text(ONE_FILE_METHOD)
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(folder)])
    shutil.copy(TESTS / "toy_plugin.py", tmp_path / "toy_plugin.py")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy.yaml").write_text(TOY_RUN.replace("{name: finetune}", "{name: toy_smoothed, smoothing: 0.2}"))
    try:
        assert "toy_smoothed" in methods.import_all()
        assert main(["--import", "toy_plugin", "run", "toy.yaml", "--no-progress"]) == 0
    finally:
        sys.modules.pop("protosphere.methods.toy_smoothed", None)
        vars(methods).pop("toy_smoothed", None)
    run = tmp_path / "runs" / "toy"
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["method"] == {"name": "toy_smoothed", "smoothing": 0.2}
    assert len(results["accuracy"]["head"]["class_il"]) == 2
    assert "smoothed_ce" in (run / "metrics.csv").read_text()


def test_importing_the_methods_package_imports_every_module_of_its_folder():
    import protosphere.methods as methods

    files = sorted(p.stem for p in Path(methods.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    assert methods.import_all() == files
    assert all(f"protosphere.methods.{name}" in sys.modules for name in files)
