"""What a short run spends outside training: the report can leave the run's wall time (background / off), and the
options added for the Mammoth protocol leave earlier runs' fingerprints unchanged."""

import hashlib
import json
import time

from protosphere.config import config_fingerprint, validate_config
from protosphere.runs.runner import run


def tiny_config(tmp_path, report):
    return validate_config(
        {
            "output_dir": str(tmp_path / "runs"),
            "name": f"r-{report}",
            "data": {"dataset": "digits"},
            "scenario": {"num_tasks": 2},
            "model": {"backbone": "mlp"},
            "method": {"name": "finetune"},
            "train": {"epochs": 1, "batch_size": 32, "augmentation": "none"},
            "eval": {"report": report, "random_init_baseline": False},
            "fabric": {"threads": 1},
        }
    )


def test_background_report_is_written_after_the_run_returns(tmp_path):
    results, run_dir = run(tiny_config(tmp_path, "background"), show_progress=False)
    assert (run_dir / "results.json").exists()
    deadline = time.time() + 120
    while not (run_dir / "report.html").exists() and time.time() < deadline:
        time.sleep(0.5)
    assert (run_dir / "report.html").exists(), (run_dir / "report.log").read_text()
    assert any((run_dir / "plots").glob("*.png"))


def test_report_off_writes_everything_else(tmp_path):
    _, run_dir = run(tiny_config(tmp_path, "off"), show_progress=False)
    assert not (run_dir / "report.html").exists()
    assert all((run_dir / name).exists() for name in ("results.json", "config.yaml", "metrics.csv"))
    assert (run_dir / "checkpoints" / "task-1.ckpt").exists()


def test_report_off_as_written_on_the_command_line():
    from protosphere.config import load_config

    assert load_config(None, ["eval.report=off"]).eval.report == "off"  # YAML's `off` is the boolean false


def test_report_mode_and_new_defaults_leave_the_fingerprint_alone():
    config = validate_config({"method": {"name": "er"}})
    data = config.model_dump(mode="json")
    for key in ("name", "output_dir", "fabric", "logging"):  # keys added later are absent from the old form
        data.pop(key)
    for key in ("log_every_n_steps", "checkpoint_every_n_steps", "normalize"):
        data["train"].pop(key)
    data["train"]["keep_checkpoints"] = True  # the old default
    data["model"].pop("init")
    data["model"].pop("stem")
    data["train"].pop("augment")
    for key in ("domains", "workers", "device_budget"):
        data["data"].pop(key)
    for key in ("report", "probe_buffer_size", "probe_augment"):
        data["eval"].pop(key)
    before = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]  # the fingerprint's old form
    assert config_fingerprint(config) == before
    assert config_fingerprint(validate_config({"method": {"name": "er"}, "eval": {"report": "off"}})) == before
    for where in ({"data": {"workers": 1}}, {"data": {"device_budget": "1kB"}}):  # they change no number
        assert config_fingerprint(validate_config({"method": {"name": "er"}, **where})) == before
    assert config_fingerprint(validate_config({"method": {"name": "er"}, "model": {"init": "xavier"}})) != before
    assert config_fingerprint(validate_config({"method": {"name": "er"}, "train": {"normalize": False}})) != before
    assert config_fingerprint(validate_config({"method": {"name": "er"}, "eval": {"probe_buffer_size": 0}})) != before
    assert config_fingerprint(validate_config({"method": {"name": "er"}, "eval": {"probe_augment": True}})) != before


def test_cli_freezes_the_collector_only_in_its_own_process(tmp_path, capsys):
    import gc

    from protosphere.cli import main

    before = gc.get_freeze_count()
    assert main(["datasets"]) == 0  # called with argv (tests, scripts): the caller's process is left alone
    assert gc.get_freeze_count() == before


def test_nct_classifier_at_its_default_keeps_earlier_fingerprints():
    from unittest import mock

    import protosphere.runs.engine as engine

    config = validate_config({"method": {"name": "nct"}})
    dump = config.model_dump(mode="json")
    assert dump["method"].pop("classifier") == "etf"
    # the config before the key existed
    with mock.patch.object(engine.RunConfig, "model_dump", lambda self, **kw: dump):
        before = config_fingerprint(config)
    assert config_fingerprint(config) == before
    learnable = validate_config({"method": {"name": "nct", "classifier": "learnable", "head_loss": "ce"}})
    assert config_fingerprint(learnable) != before
