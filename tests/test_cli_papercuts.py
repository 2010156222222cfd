"""CLI paper cuts: evaluation progress, dataset hints in CLI terms, DomainNet in a config, bench --out FILE and its
exit status, and keeping only the checkpoints a run needs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import protosphere
from protosphere import cli
from protosphere.errors import ConfigError, DatasetError

TINY = {
    "data": {"dataset": "digits"},
    "scenario": {"num_tasks": 3},
    "model": {"backbone": "mlp"},
    "method": {"name": "er", "buffer_size": 20},
    "train": {"epochs": 1, "batch_size": 64},
    "eval": {"embeddings": False},
    "fabric": {"threads": 1},
}


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    """A 3-task run that records what the evaluation bar was told."""
    from protosphere.runs.progress import RunProgress

    calls = []
    start, step = RunProgress.start_evaluation, RunProgress.evaluation_step

    def start_evaluation(self, what, units, count=True):
        calls.append({"what": what, "units": units, "count": count, "advanced": 0, "descriptions": []})
        return start(self, what, units, count)

    def evaluation_step(self, description, advance=1):
        calls[-1]["advanced"] += advance
        calls[-1]["descriptions"].append(description)
        return step(self, description, advance)

    mp = pytest.MonkeyPatch()
    mp.setattr(RunProgress, "start_evaluation", start_evaluation)
    mp.setattr(RunProgress, "evaluation_step", evaluation_step)
    try:
        run = protosphere.run(TINY, output_dir=str(tmp_path_factory.mktemp("papercuts")), progress=False)
    finally:
        mp.undo()
    return run, calls


def test_evaluation_progress_covers_every_unit(evaluations):
    _, calls = evaluations
    assert [c["what"] for c in calls] == [
        "evaluating the untrained model",
        "evaluating after task 1",
        "evaluating after task 2",
        "evaluating after task 3",
    ]
    assert [c["count"] for c in calls] == [False, True, True, True]
    for call in calls:
        assert call["advanced"] == call["units"], call  # the bar ends full: no unit is missed or counted twice
    assert "head: test task 3/3" in calls[1]["descriptions"] and "fitting classifiers" in calls[1]["descriptions"]
    assert "neural-collapse metrics" in calls[2]["descriptions"]


def test_only_the_checkpoints_a_resume_needs_are_kept(evaluations, tmp_path):
    run, _ = evaluations
    assert sorted(p.name for p in (run.run_dir / "checkpoints").iterdir()) == ["last.ckpt", "task-2.ckpt"]
    kept = protosphere.run(
        TINY,
        output_dir=str(tmp_path),
        progress=False,
        train={"keep_checkpoints": True},
        scenario={"num_tasks": 2},
        eval={"neural_collapse": False, "random_init_baseline": False},
    )
    assert sorted(p.name for p in (kept.run_dir / "checkpoints").iterdir()) == [
        "last.ckpt",
        "task-0.ckpt",
        "task-1.ckpt",
    ]
    from protosphere.config import config_fingerprint, load_config

    # the setting changes no number: a run with either value is the same run
    assert config_fingerprint(load_config(None, ["train.keep_checkpoints=true"])) == config_fingerprint(
        load_config(None, [])
    )


def test_missing_dataset_hints_speak_cli(monkeypatch, tmp_path):
    from protosphere.data import dataset_status, format_dataset_status, load_dataset

    monkeypatch.setenv("PROTOSPHERE_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10")
    assert "protosphere datasets --ensure cifar10" in str(info.value)
    listing = format_dataset_status(dataset_status())
    for line in listing.split("To get the missing datasets:")[1].splitlines():
        if line.strip().startswith(("cifar10:", "cifar100:", "tiny_imagenet:")):
            name = line.split(":")[0].strip()
            assert f"protosphere datasets --ensure {name}" in line
    assert "data.dataset=domainnet" in listing or "domainnet" not in listing


def write_domainnet(root: Path, domains=("clipart", "sketch"), per_class=6) -> None:
    from PIL import Image

    colours = {"apple": (250, 10, 10), "bus": (10, 10, 250)}
    for k, d in enumerate(domains):
        for cls, colour in colours.items():
            for i in range(per_class):
                path = root / d / cls / f"{d}_{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12, 10), tuple(min(255, c + 20 * k + i) for c in colour)).save(path)


def test_domainnet_is_selectable_in_a_config(tmp_path):
    write_domainnet(tmp_path / "dn")
    base = {
        "data": {
            "dataset": "domainnet",
            "root": str(tmp_path / "dn"),
            "domains": ["clipart", "sketch"],
            "image_size": 8,
        },
        "scenario": {"kind": "domain_il", "num_tasks": 2},
        "model": {"backbone": "mlp"},
        "method": {"name": "finetune"},
        "train": {"epochs": 1, "batch_size": 4, "augmentation": "none"},
        "eval": {"embeddings": False},
        "fabric": {"threads": 1},
        "output_dir": str(tmp_path / "runs"),
    }
    run = protosphere.run(base, progress=False)
    scenario = run.results["scenario"]
    assert scenario["kind"] == "domain_il" and scenario["domains"] == ["clipart", "sketch"]
    assert scenario["class_names"] == ["apple", "bus"] and len(run.results["accuracy"]["head"]["class_il"]) == 2
    with pytest.raises(ConfigError, match="scenario.kind=domain_il"):
        protosphere.run({**base, "scenario": {"kind": "class_il", "num_tasks": 2}}, name="x", progress=False)
    with pytest.raises(ConfigError, match="one task per domain"):
        protosphere.run({**base, "scenario": {"kind": "domain_il", "num_tasks": 3}}, name="y", progress=False)
    with pytest.raises(ConfigError, match="not a DomainNet domain"):
        protosphere.run(base, name="z", data={"domains": ["clipart", "sketchy"]}, progress=False)


def fake_benchmark(report: str, code: int):
    """Stands in for a packaged benchmark's ``main(argv)``: writes ``report`` to its --out and returns ``code``."""
    calls = []

    def main(argv):
        calls.append(list(argv))
        Path(argv[argv.index("--out") + 1]).write_text(report)
        return code

    main.calls = calls
    return main


@pytest.fixture
def fake_benchmarks(monkeypatch):
    from protosphere.bench import losses, throughput

    fakes = {
        "throughput": fake_benchmark("throughput ok\n", 0),
        "losses": fake_benchmark("ratio 0.9 (target <= 0.67) FAIL\n", 1),
    }
    monkeypatch.setattr(throughput, "main", fakes["throughput"])
    monkeypatch.setattr(losses, "main", fakes["losses"])
    return fakes


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_bench_writes_only_to_out_and_fails_on_a_missed_target(tmp_path, monkeypatch, capsys, fake_benchmarks):
    monkeypatch.chdir(tmp_path)
    source = Path(protosphere.__file__).resolve().parent
    before = files_under(source)
    out = tmp_path / "results" / "bench.txt"
    assert cli.main(["bench", "--out", str(out)]) == 1
    assert files_under(tmp_path) == {out}  # nothing beside it, no default folder
    assert files_under(source) == before  # nothing written into the package either
    assert out.read_text() == "throughput ok\n\nthroughput ok\n\nratio 0.9 (target <= 0.67) FAIL\n"
    assert len(fake_benchmarks["throughput"].calls) == 2  # batch 256, then the batch-10 Mammoth protocol
    assert "--batch-size" in fake_benchmarks["throughput"].calls[1]
    assert "targets missed in python -m protosphere.bench.losses" in capsys.readouterr().err
    assert cli.main(["bench", "--out", str(out), "--only", "throughput"]) == 0
    assert out.read_text() == "throughput ok\n\nthroughput ok\n"
    out.unlink()
    assert cli.main(["bench", "--only", "throughput"]) == 0  # without --out the reports are only printed
    assert files_under(tmp_path) == set()


def test_bench_never_overwrites_a_tracked_file_or_a_folder(tmp_path, capsys, fake_benchmarks):
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    committed = repo / "benchmarks" / "losses.txt"
    committed.write_text("committed reference numbers\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    assert cli.main(["bench", "--out", str(committed)]) == 2
    assert "tracked by git" in capsys.readouterr().err
    assert committed.read_text() == "committed reference numbers\n"
    assert cli.main(["bench", "--out", str(repo / "benchmarks")]) == 2
    assert "is a folder; pass a file" in capsys.readouterr().err
    assert fake_benchmarks["throughput"].calls == [] and fake_benchmarks["losses"].calls == []
