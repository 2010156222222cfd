"""protosphere.runs.sweep (``protosphere compare``): grids of configs × values × seeds, parallel jobs in separate
processes that reuse finished runs by fingerprint and report a failed run without losing the others, and the Markdown
table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protosphere.cli import main
from protosphere.errors import ConfigError
from protosphere.metrics.continual import summarize
from protosphere.runs import runner
from protosphere.runs.record import StoredRecord
from protosphere.runs.rundir import RunDir
from protosphere.runs.sweep import GridAxis, axis_names, compare, expand, parse_grid, split_values

TINY = (
    "data: {dataset: digits}\nscenario: {num_tasks: 2}\nmodel: {backbone: mlp}\n"
    "method: {name: %s}\ntrain: {epochs: 1, batch_size: 64}\noptimizer: {lr: 0.05}\n"
    'eval: {report: "off", embeddings: false}\n'
)


def write_config(folder: Path, stem: str, method: str = "er, buffer_size: 20") -> Path:
    path = folder / f"{stem}.yaml"
    path.write_text(TINY % method)
    return path


# ---------------------------------------------------------------------------------------------------------------
# grid expansion
# ---------------------------------------------------------------------------------------------------------------
def test_parse_grid_values_and_errors():
    axes = parse_grid(["optimizer.lr=0.1, 0.2", "model.mlp_hidden=[100,100],[256]"])
    assert axes == [GridAxis("optimizer.lr", ("0.1", "0.2")), GridAxis("model.mlp_hidden", ("[100,100]", "[256]"))]
    assert split_values("a,[1,{b: 2}],c") == ["a", "[1,{b: 2}]", "c"]
    for bad, words in [
        ("optimizer.lr", "is not KEY=V1,V2"),
        ("=1,2", "is not KEY=V1,V2"),
        ("optimizer..lr=1", "is not KEY=V1,V2"),
        ("seed=0,1", "use --seeds"),
        ("output_dir=a,b", "--out DIR"),
        ("optimizer.lr=0.1,,0.2", "empty value"),
        ("optimizer.lr=0.1,0.1", "lists a value twice"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_grid([bad])
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["optimizer.lr=0.1", "optimizer.lr=0.2"])
    assert axis_names(parse_grid(["optimizer.lr=1", "train.batch_size=2"])) == ["lr", "batch_size"]
    assert axis_names([GridAxis("optimizer.lr", ("1",)), GridAxis("method.probe.lr", ("2",))]) == [
        "optimizer.lr",
        "method.probe.lr",
    ]  # a shared last part is ambiguous: the whole key


def test_expand_is_the_cross_product_with_readable_names_and_precedence(tmp_path):
    er, finetune = write_config(tmp_path, "er"), write_config(tmp_path, "finetune", "finetune")
    out = tmp_path / "out"
    axes = parse_grid(["optimizer.lr=0.1,0.2", "train.batch_size=16,32"])
    runs = expand([er, finetune], ["train.epochs=2"], axes, seeds=2, out=out)
    expected = [
        (path.stem, lr, batch, seed)
        for path in (er, finetune)
        for lr in (0.1, 0.2)
        for batch in (16, 32)
        for seed in (0, 1)
    ]
    assert len(runs) == len(expected) == 16
    for run, (stem, lr, batch, seed) in zip(runs, expected):
        config = run.config
        assert config.name == f"{stem}-lr-{lr}-batch_size-{batch}-seed{seed}"
        assert run.entry.label == f"{stem} lr={lr} batch_size={batch}"
        assert (config.optimizer.lr, config.train.batch_size, config.seed) == (lr, batch, seed)  # grid over the file
        assert config.train.epochs == 2  # the overrides reach every run
        assert config.output_dir == str(out) and config.fabric.threads is None  # one job: torch's own choice
        assert config.method.name == ("er" if stem == "er" else "finetune")
    assert len({id(run.entry) for run in runs}) == 8  # one row per config and grid point, seeds inside it
    # parallel jobs run single-threaded unless the user chose the threads (override, grid or config file)
    assert {r.config.fabric.threads for r in expand([er], [], axes, 1, out, jobs=2)} == {1}
    assert {r.config.fabric.threads for r in expand([er], ["fabric.threads=2"], axes, 1, out, jobs=2)} == {2}
    threaded = parse_grid(["fabric.threads=2,3"])
    assert [r.config.fabric.threads for r in expand([er], [], threaded, 1, out, jobs=2)] == [2, 3]
    # a key both overridden and swept is ambiguous: refused before anything runs
    with pytest.raises(ConfigError, match="both a key=value override and a --grid axis"):
        expand([er], ["optimizer.lr=0.3"], axes, 1, out)
    # grid values that only differ in punctuation would share a run folder
    with pytest.raises(ConfigError, match="would share the run folder"):
        expand([er], [], parse_grid(["model.mlp_hidden=[8,8],[8, 8]"]), 1, out)
    # a grid over the scenario must still give one scenario
    with pytest.raises(ConfigError, match="do not share one scenario"):
        expand([er], [], parse_grid(["scenario.num_tasks=2,5"]), 1, out)


# ---------------------------------------------------------------------------------------------------------------
# in-process compare with a grid (the runner stands in for training: known numbers)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def known_runs(monkeypatch):
    """runner.run replaced by a run whose every accuracy is 100·lr + seed (known means and stds)."""
    calls = []

    def run(config, resume=False, overwrite=False, console=None, show_progress=True):
        calls.append(config.name)
        value = 100 * config.optimizer.lr + config.seed
        matrix = [[value] * 2] * 2
        results = {
            "name": config.name,
            "status": "complete",
            "seed": config.seed,
            "method": config.method.name,
            "headline_classifier": "head",
            "config": config.model_dump(mode="json"),
            "accuracy": {"head": {"class_il": matrix, "task_il": matrix}},
            "metrics": {"head": {s: summarize(matrix, [10.0, 10.0]) for s in ("class_il", "task_il")}},
        }
        run_dir = RunDir.of(config).prepare(resume=resume, overwrite=overwrite)
        (run_dir / "results.json").write_text(json.dumps(results))
        return StoredRecord.from_data(results), run_dir

    monkeypatch.setattr(runner, "run", run)
    return calls


def table_cells(text: str, border: str) -> dict[str, list[str]]:
    """{row label: cells} of the rows of a console table (border │) or a Markdown table (border |)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith(border) and not set(line) <= set(border + "-: "):
            cells = [c.strip().strip("*") for c in line.strip().strip(border).split(border)]
            rows[cells[0]] = cells[1:]
    return rows


def test_compare_grid_rows_and_markdown_match_the_console(tmp_path, known_runs):
    from rich.console import Console

    er = write_config(tmp_path, "er")
    markdown = tmp_path / "tables" / "er.md"
    console = Console(record=True, width=250)
    summary = compare(
        [er], seeds=3, out=tmp_path / "out", grid=["optimizer.lr=0.5,0.6"], markdown=markdown, console=console
    )
    assert known_runs == [f"er-lr-{lr}-seed{s}" for lr in (0.5, 0.6) for s in range(3)]
    rows = {r["label"]: r for r in summary["rows"]}
    stat = rows["er lr=0.6"]["values"]["headline/class_il/final_average_accuracy"]
    assert stat["mean"] == pytest.approx(61.0) and stat["std"] == pytest.approx(1.0) and stat["n"] == 3
    assert rows["er lr=0.5"]["seeds"] == [0, 1, 2] and rows["er lr=0.5"]["headline_classifier"] == "head"
    text = markdown.read_text()
    assert text == (tmp_path / "out" / "compare.md").read_text()
    assert "--grid optimizer.lr=0.5,0.6" in text and f"--markdown {markdown}" in text
    console_rows = table_cells(console.export_text(), "│")
    markdown_rows = table_cells(text, "|")
    assert set(console_rows) == {"er lr=0.5", "er lr=0.6"}
    assert console_rows == {k: markdown_rows[k] for k in console_rows}
    assert console_rows["er lr=0.6"][:3] == ["er", "head", "61.00 ± 1.00"]
    # the best row is bold in both (3 seeds each, constant spread, different means: Welch's p < 0.05)
    assert "**61.00 ± 1.00**" in text


# ---------------------------------------------------------------------------------------------------------------
# parallel jobs: real `protosphere run` processes
# ---------------------------------------------------------------------------------------------------------------
def test_parallel_jobs_reuse_finished_runs_and_report_a_failure(tmp_path, capsys):
    er = write_config(tmp_path, "er")
    out, markdown = tmp_path / "out", tmp_path / "er.md"
    argv = ["compare", str(er), "--seeds", "1", "--jobs", "2", "--out", str(out), "--markdown", str(markdown)]
    assert main([*argv, "--grid", "optimizer.lr=0.05,0.1"]) == 0
    console = capsys.readouterr().out
    runs = [out / "er-lr-0.05-seed0", out / "er-lr-0.1-seed0"]
    finished = {run: (run / "results.json").stat().st_mtime_ns for run in runs}
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        assert results["status"] == "complete" and results["config"]["fabric"]["threads"] == 1
        assert (out / f"{run.name}.log").is_file()
    summary = json.loads((out / "compare.json").read_text())
    assert [r["status"] for r in summary["rows"]] == [["trained"], ["trained"]]
    console_rows, markdown_rows = table_cells(console, "│"), table_cells(markdown.read_text(), "|")
    assert set(console_rows) == {"er lr=0.05", "er lr=0.1"}
    assert console_rows == {k: markdown_rows[k] for k in console_rows}
    accuracy = summary["rows"][0]["values"]["headline/class_il/final_average_accuracy"]["mean"]
    assert console_rows["er lr=0.05"][2] == f"{accuracy:.2f}"

    # the same command again: nothing retrains
    assert main([*argv, "--grid", "optimizer.lr=0.05,0.1"]) == 0
    capsys.readouterr()
    assert {run: (run / "results.json").stat().st_mtime_ns for run in runs} == finished
    assert [r["status"] for r in json.loads((out / "compare.json").read_text())["rows"]] == [["reused"], ["reused"]]

    # a run whose loss diverges fails in its own process; the table keeps the others and the exit status says so
    assert main([*argv, "--grid", "optimizer.lr=0.05,0.1,1e30"]) == 1
    err = capsys.readouterr().err
    log = out / "er-lr-1e30-seed0.log"
    assert "failed: er-lr-1e30-seed0" in err and str(log) in err and "NaN/inf" in err
    assert "NaN/inf" in log.read_text()
    assert {run: (run / "results.json").stat().st_mtime_ns for run in runs} == finished
    summary = json.loads((out / "compare.json").read_text())
    assert [r["status"] for r in summary["rows"]] == [["reused"], ["reused"], ["failed"]]
    assert summary["failed"][0]["run"] == "er-lr-1e30-seed0" and summary["failed"][0]["log"] == str(log)
    failed_row = table_cells(markdown.read_text(), "|")["er lr=1e30"]
    assert failed_row[:3] == ["er", "—", "n/a"]
    assert f"Failed: er-lr-1e30-seed0 (log: {log})" in markdown.read_text()


def test_jobs_must_be_positive(tmp_path, capsys):
    er = write_config(tmp_path, "er")
    assert main(["compare", str(er), "--jobs", "0", "--out", str(tmp_path / "out")]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
