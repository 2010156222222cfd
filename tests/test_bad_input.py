"""The bad-input catalogue, through the CLI: every problem a user can cause ends with exit status 2, exactly one line on
stderr starting with ``error:``, and nothing half-written (no results.json, no new run directory for problems found
before training, existing checkpoints untouched)."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from protosphere.cli import main
from protosphere.config import MethodConfig
from protosphere.methods import register
from protosphere.methods.base import StepOutput, SupervisedMethod
from protosphere.registry import METHODS

DIGITS = (
    "data: {dataset: digits, train_fraction: 0.3}\n"
    "scenario: {num_tasks: 2}\n"
    "model: {backbone: mlp, mlp_hidden: [16]}\n"
    "method: {name: finetune}\n"
    "train: {epochs: 1, batch_size: 16, augmentation: none, log_every_n_steps: 50}\n"
    "eval: {neural_collapse: false, random_init_baseline: false}\n"
    "fabric: {threads: 1}\n"
)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated world: empty PROTOSPHERE_DATA and download cache, a config file and an output folder."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    cache.mkdir()
    monkeypatch.setenv("PROTOSPHERE_DATA", str(data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    config = tmp_path / "cfg.yaml"
    config.write_text(DIGITS + f"output_dir: {tmp_path / 'runs'}\nname: run\n")
    return {"tmp": tmp_path, "data": data, "cache": cache, "config": str(config), "run": tmp_path / "runs" / "run"}


def fails(capsys, args: list[str]) -> str:
    """Run the CLI, check exit 2 and one `error:` line on stderr, return that line."""
    capsys.readouterr()
    code = main(["run", *args, "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------------------- datasets
def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, images: int = 60000, gz: bool = True) -> dict[str, Path]:
    """The four MNIST files with the right headers (zero pixels; small test split for speed where allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": np.zeros((images, 28, 28)),
        "train-labels-idx1-ubyte": np.zeros(images),
        "t10k-images-idx3-ubyte": np.zeros((10, 28, 28)),
        "t10k-labels-idx1-ubyte": np.zeros(10),
    }
    paths = {}
    for stem, array in arrays.items():
        path = folder / (stem + (".gz" if gz else ""))
        payload = idx_bytes(array)
        path.write_bytes(gzip.compress(payload, compresslevel=1) if gz else payload)
        paths[stem] = path
    return paths


def test_missing_dataset(env, capsys):
    line = fails(capsys, [env["config"], "data.dataset=mnist"])
    assert "MNIST" in line or "mnist" in line
    assert not env["run"].exists()


def test_truncated_gz(env, capsys):
    paths = write_mnist(env["data"] / "mnist", images=10)
    data = paths["train-images-idx3-ubyte"].read_bytes()
    paths["train-images-idx3-ubyte"].write_bytes(data[: len(data) // 2])
    line = fails(capsys, [env["config"], "data.dataset=mnist"])
    assert "train-images" in line
    assert not env["run"].exists()


def test_wrong_magic_number(env, capsys):
    paths = write_mnist(env["data"] / "mnist", images=10, gz=False)
    raw = bytearray(paths["train-images-idx3-ubyte"].read_bytes())
    raw[:4] = b"\x12\x34\x56\x78"
    paths["train-images-idx3-ubyte"].write_bytes(bytes(raw))
    line = fails(capsys, [env["config"], "data.dataset=mnist"])
    assert "magic" in line and "train-images" in line
    assert not env["run"].exists()


def test_checksum_mismatch(env, capsys):
    write_mnist(env["cache"] / "protosphere" / "mnist", images=10)  # the download cache holds only official files
    line = fails(capsys, [env["config"], "data.dataset=mnist"])
    assert "MD5" in line or "checksum" in line.lower()
    assert not env["run"].exists()


@pytest.mark.parametrize(
    "dataset,archive", [("cifar10", "cifar-10-python.tar.gz"), ("tiny_imagenet", "tiny-imagenet-200.zip")]
)
def test_corrupt_archive(env, capsys, dataset, archive):
    root = env["tmp"] / "archives"
    root.mkdir()
    (root / archive).write_bytes(b"PK\x03\x04 this is not a real archive" * 10)
    line = fails(capsys, [env["config"], f"data.dataset={dataset}", f"data.root={root}"])
    assert archive in line or str(root) in line
    assert not env["run"].exists()


# --------------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "override,needle",
    [
        ("trian.epochs=2", "did you mean `train`"),
        ("train.epoch=2", "did you mean `train.epochs`"),
        ("train.epochs=many", "train.epochs"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("fabric.precision=fp8", "fabric.precision"),
        ("method.buffer_size=10", "method.buffer_size"),  # finetune has no buffer
        ("fabric.strategy=warp_drive", "fabric"),
    ],
)
def test_unknown_or_ill_typed_config(env, capsys, override, needle):
    line = fails(capsys, [env["config"], override])
    assert needle in line
    assert not env["run"].exists()


def test_etf_dimension_too_small(env, capsys):
    from protosphere.geometry import simplex_etf

    with pytest.raises(ValueError, match="9"):
        simplex_etf(10, 8)
    if "fnc2" in METHODS:  # digits has 10 classes: the ETF needs projection_dim >= 9
        line = fails(capsys, [env["config"], "method.name=fnc2", "method.projection_dim=8"])
        assert "9" in line
        assert not env["run"].exists()


# ------------------------------------------------------------------------------------------------------- scenario
@pytest.mark.parametrize(
    "override",
    [
        "scenario.class_order=[0,0,1,2,3,4,5,6,7,8]",
        "scenario.class_order=[0,1,2,3,4,5,6,7,8,12]",
        "scenario.class_order=[0,1,2]",
    ],
)
def test_labels_outside_the_scenario(env, capsys, override):
    fails(capsys, [env["config"], override])
    assert not env["run"].exists()


def test_empty_task(env, capsys):
    line = fails(capsys, [env["config"], "scenario.num_tasks=11"])
    assert "task" in line.lower()
    assert not env["run"].exists()


# ------------------------------------------------------------------------------------------------ output / resume
def test_output_directory_conflicts(env, capsys):
    assert main(["run", env["config"], "--no-progress"]) == 0
    before = snapshot(env["run"])
    assert "--resume" in fails(capsys, [env["config"]])  # exists: refuse without --resume / --overwrite
    fails(capsys, [env["config"], "--resume", "--overwrite"])
    # a changed config must not resume the run, finished or interrupted, and must not touch it
    assert "different config" in fails(capsys, [env["config"], "--resume", "seed=1"])
    (env["run"] / "results.json").unlink()
    before.pop("results.json")
    assert "different config" in fails(capsys, [env["config"], "--resume", "optimizer.lr=0.5"])
    assert snapshot(env["run"]) == before
    other = env["tmp"] / "runs" / "other"
    assert "holds no run" in fails(capsys, [env["config"], "name=other", "--resume"])
    assert not other.exists()


def test_unwritable_output_directory(env, capsys):
    blocker = env["tmp"] / "a-file"
    blocker.write_text("not a folder")
    line = fails(capsys, [env["config"], f"output_dir={blocker / 'x'}"])
    assert "output" in line.lower()
    assert blocker.read_text() == "not a folder"


# ----------------------------------------------------------------------------------------------------- NaN / inf
class NaNConfig(MethodConfig):
    name: str = "nan_at_step"
    nan_task: int = 1
    nan_step: int = 4


@pytest.fixture
def nan_method():
    @register("nan_at_step")
    class NaNAtStep(SupervisedMethod):
        config_class = NaNConfig

        def training_step(self, images, labels, step):
            loss, _ = self.cross_entropy(images, labels)
            if (step.task, step.step) == (self.config.nan_task, self.config.nan_step):
                bad = loss * float("nan")
                return StepOutput(loss + bad, {"ce": loss.detach(), "exploding": bad.detach()})
            return StepOutput(loss, {"ce": loss.detach(), "exploding": torch.zeros(())})

    yield
    METHODS.unregister("nan_at_step")


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(env, capsys, nan_method):
    line = fails(
        capsys,
        [env["config"], "method.name=nan_at_step", "train.checkpoint_every_n_steps=3", "train.log_every_n_steps=100"],
    )
    assert "NaN/inf" in line and "task 1, step 4" in line and "exploding" in line and "last.ckpt" in line
    assert not (env["run"] / "results.json").exists()
    state = torch.load(env["run"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (state["task"], state["phase"], state["step"]) == (1, "in_task", 3)  # saved before the bad step
    assert all(
        torch.isfinite(v).all()
        for v in state["method"].values()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    )
    assert (env["run"] / "checkpoints" / "task-0.ckpt").exists()


def test_absurd_learning_rate(env, capsys):
    line = fails(capsys, [env["config"], "optimizer.lr=1e30", "optimizer.momentum=0"])
    assert "NaN/inf" in line and "task 0" in line
    assert not (env["run"] / "results.json").exists()


# ------------------------------------------------------------------------------------------- nothing lost, ever
def fake_run_folder(folder: Path, name: str) -> None:
    """What a protosphere run leaves: a config.yaml naming the run, and its results."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"name: {name}\nseed: 0\n")
    (folder / "results.json").write_text(f'{{"name": "{name}", "status": "complete"}}')


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "runs with space", "a:b"])
def test_run_name_is_one_plain_folder_name(env, capsys, name):
    fake_run_folder(env["tmp"] / "runs" / "earlier", "earlier")
    (env["tmp"] / "notes.txt").write_text("the user's own file")
    before = snapshot(env["tmp"])
    line = fails(capsys, [env["config"], f"name={name}", "--overwrite"])
    assert "`name`" in line and "plain folder name" in line
    assert snapshot(env["tmp"]) == before


def test_overwrite_removes_only_a_run_folder(env, capsys):
    env["run"].mkdir(parents=True)
    (env["run"] / "thesis.tex").write_text("months of work")
    (env["run"] / "config.yaml").write_text("name: something-else\n")  # not the config of a run named `run`
    before = snapshot(env["run"])
    line = fails(capsys, [env["config"], "--overwrite"])
    assert "not" in line and "run folder" in line and str(env["run"]) in line
    assert snapshot(env["run"]) == before
    link = env["tmp"] / "runs" / "linked"
    link.symlink_to(env["run"], target_is_directory=True)
    (env["run"] / "config.yaml").write_text("name: linked\n")
    fails(capsys, [env["config"], "name=linked", "--overwrite"])  # a link is never followed into a removal
    assert (env["run"] / "thesis.tex").exists()


def test_run_folder_marker(tmp_path):
    from protosphere.runs.rundir import RunDir

    def holds_run(path):
        return RunDir(path).holds_run()

    fake_run_folder(tmp_path / "mine", "mine")
    assert holds_run(tmp_path / "mine")
    (tmp_path / "mine" / "config.yaml").unlink()
    assert holds_run(tmp_path / "mine")  # results.json alone names it too
    (tmp_path / "mine" / "results.json").write_text("[1, 2]")
    assert not holds_run(tmp_path / "mine") and not holds_run(tmp_path / "absent")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.yaml").write_text("data: {dataset: digits}\n")  # a user's config, no run name
    assert not holds_run(tmp_path / "home")


def test_derived_run_name_is_a_plain_folder_name(tmp_path):
    from protosphere.config import load_config, plain_name

    path = tmp_path / "my exp (v2).yaml"
    path.write_text(DIGITS)
    assert load_config(path).name == "my-exp-v2-seed0"
    assert plain_name("nct-cifar100-50+5x10") == "nct-cifar100-50-5x10" and plain_name("der++") == "der"
    (tmp_path / "nct-50+5x10.yaml").write_text(DIGITS)
    assert load_config(tmp_path / "nct-50+5x10.yaml", ["seed=2"]).name == "nct-50-5x10-seed2"


# ------------------------------------------------------------------------------ NaN/inf state and resumed NaN/inf
class PoisonConfig(MethodConfig):
    name: str = "poison"
    poison_task: int = 1
    poison_step: int = 3
    what: str = "buffer"  # buffer: a NaN buffer with a finite loss; input: NaN rows into a checked loss


@pytest.fixture
def poison_method():
    import torch.nn.functional as F

    from protosphere.losses import supcon

    @register("poison")
    class Poison(SupervisedMethod):
        config_class = PoisonConfig

        def __init__(self, *args):
            super().__init__(*args)
            self.register_buffer("running_means", torch.zeros(3))

        def training_step(self, images, labels, step):
            loss, _ = self.cross_entropy(images, labels)
            poisoned = (step.task, step.step) == (self.config.poison_task, self.config.poison_step)
            if self.config.what == "buffer":
                self.running_means.add_(float("nan") if poisoned else 0.0)  # the loss itself stays finite
                return StepOutput(loss, {"ce": loss.detach()})
            z = F.normalize(self.backbone(self.transforms.train(images)), dim=1)
            contrast = supcon(z * float("nan") if poisoned else z, labels)  # the loss checks its inputs when asked
            return StepOutput(loss + contrast, {"ce": loss.detach(), "supcon": contrast.detach()})

    yield
    METHODS.unregister("poison")


def finite_checkpoint(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from tensors(value)

    assert all(torch.isfinite(t).all() for t in tensors(state["method"]) if t.is_floating_point())
    return state


def test_nonfinite_state_is_never_checkpointed(env, capsys, poison_method):
    args = [env["config"], "method.name=poison", "train.checkpoint_every_n_steps=3", "train.log_every_n_steps=100"]
    line = fails(capsys, args)
    assert "NaN/inf" in line and "running_means" in line and "task 1" in line and "last.ckpt" in line
    assert "optimizer.lr=0.005" in line and "--resume" not in line  # advice the user can follow
    state = finite_checkpoint(env["run"] / "checkpoints" / "last.ckpt")
    assert (state["task"], state["phase"], state["step"]) == (1, "in_task", 3)
    assert not (env["run"] / "results.json").exists()
    # resuming repeats the same steps, so it stops the same way: one line, the good checkpoint untouched
    before = snapshot(env["run"] / "checkpoints")
    assert "running_means" in fails(capsys, [*args, "--resume"])
    assert snapshot(env["run"] / "checkpoints") == before


def test_resume_into_a_nonfinite_step_stops_cleanly(env, capsys, poison_method):
    # the poisoned step is the first one a resumed run takes: a NaN/inf stop, not a loss's input-check traceback
    args = [
        env["config"],
        "method.name=poison",
        "method.what=input",
        "train.checkpoint_every_n_steps=3",
        "train.log_every_n_steps=100",
    ]
    assert "supcon" in fails(capsys, args)
    assert finite_checkpoint(env["run"] / "checkpoints" / "last.ckpt")["step"] == 3
    line = fails(capsys, [*args, "--resume"])
    assert "NaN/inf" in line and "task 1, step 3" in line


# ------------------------------------------------------------------------------------ checkpoint fallback on resume
def test_missing_or_corrupt_last_checkpoint_falls_back_to_a_task_checkpoint(env, capsys):
    import json
    import shutil

    args = [env["config"], "scenario.num_tasks=3", "scenario.classes_per_task=[4,3,3]", "train.keep_checkpoints=true"]
    assert main(["run", *args, "--no-progress"]) == 0
    full = json.loads((env["run"] / "results.json").read_text())
    runs = env["tmp"] / "runs"
    for name, damage in (("missing", "unlink"), ("truncated", "truncate")):
        run = runs / name
        shutil.copytree(env["run"], run)
        (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("name: run", f"name: {name}"))
        (run / "results.json").unlink()
        (run / "checkpoints" / "task-2.ckpt").unlink()  # the newest task checkpoint that reads is task-1
        last = run / "checkpoints" / "last.ckpt"
        if damage == "unlink":
            last.unlink()
        else:
            last.write_bytes(last.read_bytes()[:1000])
        capsys.readouterr()
        assert main(["run", *args, f"name={name}", "--resume", "--no-progress"]) == 0
        assert "task-1.ckpt" in capsys.readouterr().out
        resumed = json.loads((run / "results.json").read_text())
        assert resumed["accuracy"] == full["accuracy"] and resumed["metrics"] == full["metrics"]
    # nothing readable at all: one line naming what was tried, nothing touched
    run = runs / "truncated"
    (run / "results.json").unlink()
    for path in (run / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"not a checkpoint")
    before = snapshot(run)
    line = fails(capsys, [*args, "name=truncated", "--resume"])
    assert "no checkpoint" in line and "last.ckpt" in line and "task-0.ckpt" in line and "--overwrite" in line
    assert snapshot(run) == before


# ------------------------------------------------------------------------------------- configs without a method
@pytest.mark.parametrize("text", ["", "# nothing yet\n", "seed: 1\n", "method:\n"])
def test_config_without_a_method_is_the_validated_default(tmp_path, text):
    from protosphere.config import load_config
    from protosphere.methods import method_class

    path = tmp_path / "c.yaml"
    path.write_text(text)
    config = load_config(path)
    assert type(config.method) is method_class("er").config_class and config.method.buffer_size == 200
    assert load_config(path, ["method.buffer_size=50"]).method.buffer_size == 50


@pytest.mark.parametrize("text", ["42\n", "just a sentence\n", "- data\n- method\n", "false\n"])
def test_config_that_is_not_a_mapping(env, capsys, text):
    path = env["tmp"] / "scalar.yaml"
    path.write_text(text)
    for overrides in ([], ["seed=1"]):
        line = fails(capsys, [str(path), *overrides])
        assert str(path) in line and "mapping" in line
    assert not (env["tmp"] / "runs").exists()


# ------------------------------------------------------------------------------- processes, class split, data hints
def test_sizes_the_processes_must_divide():
    from protosphere.config import load_config
    from protosphere.distributed import check_processes
    from protosphere.errors import ConfigError
    from protosphere.runs.runner import build_method, build_scenario_from_config

    config = load_config(
        None,
        ["data.dataset=digits", "model.backbone=mlp", "method.name=er", "method.buffer_size=40", "train.batch_size=16"],
    )
    for world in (1, 2, 4, 8):
        check_processes(config, world)
    config.method.buffer_size = 42
    with pytest.raises(ConfigError, match=r"method.buffer_size=42 is the global replay memory.*divisible by 4.*40"):
        check_processes(config, 4)
    config.method.buffer_size = 40
    config.train.batch_size = 15
    with pytest.raises(ConfigError, match="train.batch_size=15 is the global batch"):
        check_processes(config, 2)
    scenario = build_scenario_from_config(config)
    assert build_method(config, scenario).buffer.capacity == 40
    assert build_method(config, scenario, world_size=4).buffer.capacity == 10  # each rank's share of the memory
    assert config.method.buffer_size == 40  # the run's config (config.yaml, fingerprint) keeps the global value


def test_uneven_class_split_is_said(env, capsys):
    from protosphere.config import load_config
    from protosphere.runs.runner import build_scenario_from_config, scenario_notes

    config = load_config(env["config"], ["scenario.num_tasks=3"])
    notes = scenario_notes(config, build_scenario_from_config(config))
    assert notes and "10 classes" in notes[0] and "4/3/3" in notes[0] and "scenario.classes_per_task" in notes[0]
    config = load_config(env["config"], ["scenario.num_tasks=3", "scenario.classes_per_task=[4,3,3]"])
    assert scenario_notes(config, build_scenario_from_config(config)) == []
    assert main(["run", env["config"], "scenario.num_tasks=3", "--no-progress"]) == 0
    assert "4/3/3" in capsys.readouterr().out


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "tiny_imagenet", "mnist"])
def test_missing_dataset_hint_speaks_the_cli(env, capsys, dataset):
    line = fails(capsys, [env["config"], f"data.dataset={dataset}"])
    assert f"protosphere datasets --ensure {dataset}" in line and "data.download=true" in line
    assert not env["run"].exists()


# ------------------------------------------------------------------------------------ the catalogue, end to end
def test_bad_input_catalogue_end_to_end(tmp_path):
    """Every bad input of the README's error contract, each as its own process (tests/bad_inputs.py): exit status
    2, one `error:` line, no traceback, its folder unchanged; and the README states how many cases it covers."""
    import json
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    script = [sys.executable, str(root / "tests" / "bad_inputs.py")]
    out = tmp_path / "verdicts.json"
    proc = subprocess.run([*script, "--json", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    cases = json.loads(out.read_text())["cases"]
    assert all(case["ok"] and case["exit"] == 2 for case in cases)
    stated = re.search(r"the catalogue, (\d+) bad inputs", " ".join((root / "README.md").read_text().split()))
    assert stated and int(stated.group(1)) == len(cases) >= 40
    # two cases as a user starts them: a new interpreter running `python -m protosphere.cli run ...`
    proc = subprocess.run(
        [*script, "--fresh", "--only", "name-dotdot", "config-scalar"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "2/2 bad inputs" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
