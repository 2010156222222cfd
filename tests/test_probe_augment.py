"""``eval.probe_augment``: the linear probe of the two-stage methods sees freshly augmented views of its training images
every epoch, as the Co2L and FNC2 authors' linear stages load them (samix ``src/datasets/evaluate_dataloader.py``,
Co2L ``main_linear_buffer.py`` → ``main_ce_buffer.set_loader``); on by default for co2l and fnc2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from protosphere.cli import main
from protosphere.config import load_config
from protosphere.evaluation import fit_linear_probe

ROOT = Path(__file__).resolve().parents[1]


def data(n=60, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return torch.randn(n, d, generator=g) + 2 * torch.nn.functional.one_hot(y, d).float(), y


def test_epoch_features_feed_every_epoch_one_view_per_draw():
    x, y = data()
    calls = []

    def same(epoch, rows):
        calls.append(epoch)
        return x[rows]  # the clean features of the rows drawn, in the order drawn

    plain = fit_linear_probe(x, y, 3, epochs=4, batch_size=16, seed=3)
    fed = fit_linear_probe(x, y, 3, epochs=4, batch_size=16, seed=3, epoch_features=same)
    assert calls == [0, 1, 2, 3]
    torch.testing.assert_close(fed.weight, plain.weight, rtol=0, atol=0)  # the same features give the same probe

    def shifted(epoch, rows):
        return x[rows] + 0.5 * (epoch + 1)

    moved = fit_linear_probe(x, y, 3, epochs=4, batch_size=16, seed=3, epoch_features=shifted)
    assert not torch.equal(moved.weight, plain.weight)  # each epoch's features are the ones trained on
    again = fit_linear_probe(x, y, 3, epochs=4, batch_size=16, seed=3, epoch_features=shifted)
    torch.testing.assert_close(again.weight, moved.weight, rtol=0, atol=0)


def test_class_balanced_draws_each_get_their_own_view():
    """The authors' WeightedRandomSampler draws with replacement and the dataset augments at every draw: a rare class's
    rows come back many times per epoch, each time as a new view. epoch_features receives every draw."""
    x, y = data(n=64)
    y = torch.where(torch.arange(64) < 4, torch.tensor(2), torch.arange(64) % 2)  # class 2: 4 rows of 64
    seen = []

    def views(epoch, rows):
        seen.append(rows.clone())
        return x[rows] + 0.01 * torch.randn(len(rows), x.shape[1], generator=torch.Generator().manual_seed(epoch))

    fit_linear_probe(x, y, 3, epochs=2, batch_size=16, seed=0, class_balanced=True, epoch_features=views)
    assert len(seen) == 2 and all(len(r) == 64 for r in seen)
    rare = torch.cat(seen)[y[torch.cat(seen)] == 2]
    assert len(rare) > 20 and len(rare.unique()) <= 4  # ~a third of the draws, from 4 rows: repeats, one view each
    with pytest.raises(ValueError, match="one feature row per drawn row"):
        fit_linear_probe(x, y, 3, epochs=1, epoch_features=lambda epoch, rows: x[:10])


def test_on_by_default_for_co2l_and_fnc2_only():
    expected = {"fnc2": True, "co2l": True, "nct": False, "er": False, "supcon": False, "simclr": False}
    for name, on in expected.items():
        assert load_config(None, [f"method={{name: {name}}}"]).eval.probe_augment is on, name
    assert load_config(None, ["method={name: fnc2}", "eval.probe_augment=false"]).eval.probe_augment is False
    assert load_config(None, ["method={name: nct}", "eval.probe_augment=true"]).eval.probe_augment is True


def test_paper_and_cpu_fnc2_configs_follow_the_authors_scripts():
    """The distillation predictor (--predictor_hidden_dim 128; 256 on Tiny-ImageNet) and the augmented probe in every
    shipped FNC2 config except the labelled ablation without the predictor."""
    configs = [p for p in sorted((ROOT / "configs").rglob("*.yaml")) if load_config(p).method.name == "fnc2"]
    assert len(configs) > 20
    for path in configs:
        config = load_config(path)
        assert config.eval.probe_augment, path
        if path.name == "fnc2-no-predictor.yaml":
            assert config.method.distill_predictor_hidden is None
        else:
            assert config.method.distill_predictor_hidden == (256 if "tinyimagenet" in path.name else 128), path


def test_augmented_probe_changes_the_probe_only(tmp_path):
    """Same seed with and without the augmented probe: the same training (the probe's augmentation has its own
    generator, the run's RNG is untouched), the same NCM and nearest-prototype scores, another linear probe."""
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "data: {dataset: digits, train_fraction: 0.3}\n"
        "scenario: {num_tasks: 2}\n"
        "model: {backbone: mlp, mlp_hidden: [32]}\n"
        "method: {name: fnc2, projection_dim: 16, probe_epochs: 3, probe_min_steps: 0}\n"
        "train: {epochs: 1, batch_size: 16, augmentation: contrastive}\n"
        "eval: {neural_collapse: false, random_init_baseline: false, report: off}\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        "fabric: {threads: 1}\n"
    )
    runs = {}
    for name, value in (("augmented", "true"), ("fixed", "false")):
        assert main(["run", str(config), f"name={name}", f"eval.probe_augment={value}", "--no-progress"]) == 0
        run_dir = tmp_path / "runs" / name
        runs[name] = (
            json.loads((run_dir / "results.json").read_text()),
            torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["method"],
        )
    (aug, aug_weights), (fixed, fixed_weights) = runs["augmented"], runs["fixed"]
    assert aug_weights.keys() == fixed_weights.keys()
    assert all(
        torch.equal(aug_weights[k], fixed_weights[k]) for k in aug_weights if isinstance(aug_weights[k], torch.Tensor)
    )
    for name in ("ncm", "nearest_prototype", "linear_probe_seen"):
        assert aug["accuracy"][name] == fixed["accuracy"][name], name
    assert aug["accuracy"]["linear_probe"] != fixed["accuracy"]["linear_probe"]
    # the un-augmented probe reported beside the augmented one is the probe of a run without augmentation
    assert aug["accuracy"]["linear_probe_unaugmented"] == fixed["accuracy"]["linear_probe"]
    assert fixed["accuracy"]["linear_probe_unaugmented"] == fixed["accuracy"]["linear_probe"]
    assert "augmented" in aug["classifier_data"]["linear_probe"]
    assert "augmented" not in fixed["classifier_data"]["linear_probe"]
    assert aug["config"]["eval"]["probe_augment"] is True and fixed["config"]["eval"]["probe_augment"] is False
