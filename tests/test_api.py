"""The Python API (protosphere.run / load_run / Run) and the catalogue commands (--version, methods, config)."""

from __future__ import annotations

import pytest
import torch

import protosphere
from protosphere import cli
from protosphere.api import resolve_config
from protosphere.errors import ConfigError, RunError

TINY = {
    "data": {"dataset": "digits"},
    "scenario": {"num_tasks": 2},
    "model": {"backbone": "mlp"},
    "train": {"epochs": 1, "batch_size": 64},
    "eval": {"random_init_baseline": False},
    "fabric": {"threads": 1},
}


@pytest.fixture(scope="module")
def fnc2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    return protosphere.run(
        TINY,
        output_dir=str(out),
        progress=False,
        method={
            "name": "fnc2",
            "buffer_size": 20,
            "projection_dim": 16,
            "probe_epochs": 1,
            "probe_min_steps": 10,
            "classifiers": ["nearest_prototype", "ncm", "linear_probe"],
        },
    )


def test_run_returns_a_run_with_config_results_and_report(fnc2_run):
    assert isinstance(fnc2_run, protosphere.Run)
    assert fnc2_run.config.method.name == "fnc2" and fnc2_run.config.name == "fnc2-seed0"
    assert fnc2_run.results["status"] == "complete"
    assert fnc2_run.headline_classifier == "nearest_prototype" == fnc2_run.classifiers[0]
    assert fnc2_run.report_path.is_file()


def test_load_run_predicts_what_the_run_measured_with_every_classifier(fnc2_run):
    run = protosphere.load_run(fnc2_run.run_dir)
    tasks = run.scenario.tasks
    for classifier in run.classifiers:
        measured = run.accuracy(classifier)[-1]
        for j, task in enumerate(tasks):
            predicted = run.predict(task.test_images, classifier)
            accuracy = 100.0 * float((predicted == task.test_labels).double().mean())
            assert accuracy == pytest.approx(measured[j], abs=1e-6), (classifier, j)
    # the headline classifier by default; float images in [0, 1] give the same answer as uint8 ones
    images = tasks[0].test_images[:32]
    assert torch.equal(run.predict(images), run.predict(images, run.headline_classifier))
    assert torch.equal(run.predict(images.float() / 255), run.predict(images))


def test_encode_gives_encoder_features_and_checks_its_input(fnc2_run):
    run = protosphere.load_run(fnc2_run.run_dir)
    images = run.scenario.tasks[1].test_images[:10]
    features = run.encode(images)
    assert features.shape == (10, 100) and torch.isfinite(features).all()
    assert torch.allclose(run.encode(images.float() / 255), features)
    with pytest.raises(ValueError, match="shape"):
        run.encode(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run.encode(images.float())
    with pytest.raises(ValueError, match="unknown classifier"):
        run.predict(images, classifier="knn")


def test_load_run_falls_back_to_the_last_task_checkpoint(fnc2_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(fnc2_run.run_dir, copy)
    (copy / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
    run = protosphere.load_run(copy)
    images = run.scenario.tasks[0].test_images[:16]
    assert torch.equal(run.predict(images), protosphere.load_run(fnc2_run.run_dir).predict(images))
    for path in (copy / "checkpoints").glob("*.ckpt"):
        path.unlink()
    with pytest.raises(RunError, match="Cannot load the model"):
        _ = protosphere.load_run(copy).model


def test_load_run_refuses_a_folder_without_a_run(tmp_path):
    with pytest.raises(RunError, match="no finished run"):
        protosphere.load_run(tmp_path)


def test_overrides_in_every_form(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 3\ntrain: {epochs: 4, batch_size: 16}\nmethod: {name: er, buffer_size: 50}\n")
    config = resolve_config(path, seed=1, train={"epochs": 2}, method__buffer_size=10, **{"optimizer.lr": 0.2})
    assert (config.seed, config.train.epochs, config.train.batch_size) == (1, 2, 16)
    assert (config.method.buffer_size, config.optimizer.lr) == (10, 0.2)
    assert config.name == "cfg-seed1"  # the default name follows the overridden seed
    assert resolve_config({"method": {"name": "er"}}, seed=2).name == "er-seed2"
    assert resolve_config(config, seed=5).seed == 5
    with pytest.raises(ConfigError, match="did you mean `train.epochs`"):
        resolve_config(path, train={"epoch": 2})
    with pytest.raises(ConfigError, match="YAML path, a mapping or a RunConfig"):
        resolve_config(42)


# --------------------------------------------------------------------------------------------------- catalogue
def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"protosphere {protosphere.__version__}"


def test_methods_lists_every_method_with_its_paper(capsys):
    from protosphere.methods import method_names

    assert cli.main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == method_names()
    by_name = {line.split()[0]: line for line in lines}
    assert "WACV 2025" in by_name["fnc2"] and "ICCV 2021" in by_name["co2l"] and "ICML 2024" in by_name["sycon"]
    assert "NormFace" in by_name["normface"] and "NTCE" in by_name["ntce"]
    assert len(set(by_name.values())) == len(lines)  # no two methods share a line


def test_config_lists_every_key_with_default_and_description(capsys):
    from protosphere.catalog import config_rows

    assert cli.main(["config", "fnc2"]) == 0
    out = capsys.readouterr().out
    rows = config_rows("fnc2")
    for key, _default, _, _ in rows:
        assert f"\n{key} " in out, key
    keys = {key: (default, description) for key, default, _, description in rows}
    assert keys["method.gamma"][0] == "1" and "focal" in keys["method.gamma"][1]
    assert keys["train.epochs"] == ("5", "epochs per task (≥ 1)")  # fnc2's recipe, configs/seq-fmnist/fnc2.yaml
    assert keys["method.name"][0] == "fnc2"
    assert "logging.tensorboard" in keys and "logging.wandb.mode" in keys
    assert keys["train.augment.views"][0] == "[]" and keys["train.augment.views[k].blur_p"][0] == "null"
    assert keys["train.augment.scale"][0] == "[0.2, 1.0]" and keys["model.stem"][0] == "cifar"
    assert cli.main(["config", "fcn2"]) == 2
    assert "did you mean `fnc2`" in capsys.readouterr().err


def test_empty_batches_non_finite_images_and_a_checkpoint_without_its_model(fnc2_run, tmp_path):
    import shutil

    run = protosphere.load_run(fnc2_run.run_dir)
    shape = tuple(run.scenario.image_shape)
    empty = torch.zeros((0, *shape), dtype=torch.uint8)
    assert run.predict(empty).shape == (0,) and run.predict(empty).dtype == torch.int64
    assert run.encode(empty).shape == (0, 100) and run.encode(empty.float()).shape == (0, 100)
    for bad in (float("nan"), float("inf")):
        images = torch.full((2, *shape), 0.5)
        images[1, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="images hold 1 NaN/inf"):
            run.predict(images)
    copy = tmp_path / "copy"
    shutil.copytree(fnc2_run.run_dir, copy)
    for path in (copy / "checkpoints").glob("*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        del state["method"]
        torch.save(state, path)
    with pytest.raises(RunError, match="no `method` entry"):
        _ = protosphere.load_run(copy).model
