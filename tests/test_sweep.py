"""protosphere.runs.sweep (``protosphere compare``): grids of configs × values × seeds, parallel jobs in separate
processes that reuse finished runs by fingerprint and report a failed run without losing the others, and the Markdown
table."""

from __future__ import annotations

import json
import re
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


# ---------------------------------------------------------------------------------------------------------------
# the compare page, the LaTeX table and the W&B group
# ---------------------------------------------------------------------------------------------------------------
def flatten(node, prefix: str = "") -> dict:
    """A slow reference: nested config → dotted keys."""
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def latex_rows(text: str) -> dict[str, list[str]]:
    """{row label: cells} of the body rows of a LaTeX tabular, spelt back as Markdown spells them."""
    body = text.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    rows = {}
    for line in body.strip().splitlines():
        cells = [c.strip() for c in line.removesuffix("\\\\").strip().split(" & ")]
        spelt = []
        for cell in cells:
            cell = re.sub(r"\\textbf\{(.*)\}", r"**\1**", cell).replace(" $\\pm$ ", " ± ").replace("\\_", "_")
            spelt.append({"--": "n/a", "---": "—"}.get(cell, cell).strip("*"))  # as table_cells reads Markdown
        rows[spelt[0]] = spelt[1:]
    return rows


def test_compare_writes_a_latex_table_equal_to_the_markdown_one(tmp_path, known_runs):
    er = write_config(tmp_path, "er")
    latex = tmp_path / "paper" / "table.tex"
    grid = ["optimizer.lr=0.5,0.6", "train.batch_size=64"]
    summary = compare([er], seeds=3, out=tmp_path / "out", grid=grid, latex=latex)
    text = latex.read_text()
    assert text == (tmp_path / "out" / "compare.tex").read_text()
    assert f"--latex {latex}" in summary["command"] and f"% {summary['command']}" in text
    columns = len(summary["columns"])
    order = [line for line in text.splitlines() if line.startswith(("\\begin{tabular}", "\\toprule", "\\midrule"))]
    assert order == [f"\\begin{{tabular}}{{lll{'r' * columns}}}", "\\toprule", "\\midrule"]
    assert text.index("\\midrule") < text.index("\\bottomrule") < text.index("\\caption{")
    body = [line for line in text.splitlines() if not line.startswith("%")]
    assert all(line.isascii() for line in body)  # ±, ≥ and dashes spelt in LaTeX: every engine reads the table
    assert "er lr=0.5 batch\\_size=64" in text and "\\usepackage{booktabs}" in text
    markdown = table_cells((tmp_path / "out" / "compare.md").read_text(), "|")
    rows = latex_rows(text)
    assert rows == {label: markdown[label] for label in rows} and len(rows) == 2
    assert "\\textbf{61.00 $\\pm$ 1.00}" in text  # bold where Markdown bolds: the significantly best row


def test_compare_lists_the_config_keys_that_differ_between_rows(tmp_path, known_runs):
    er, finetune = write_config(tmp_path, "er"), write_config(tmp_path, "finetune", "finetune")
    summary = compare([er, finetune], seeds=1, out=tmp_path / "out", grid=["optimizer.lr=0.5,0.6"])
    differences = summary["differences"]
    configs = {  # the reference: each row's config as its results.json holds it, flattened
        row["label"]: flatten(json.loads((tmp_path / "out" / row["runs"][0] / "results.json").read_text())["config"])
        for row in summary["rows"]
    }
    keys = {k for flat in configs.values() for k in flat} - {"name", "seed", "output_dir"}
    missing = object()
    differ = {k for k in keys if len({repr(flat.get(k, missing)) for flat in configs.values()}) > 1}
    assert set(differences["keys"]) == differ and len(differences["keys"]) == len(differ)
    assert {"method.name", "method.buffer_size", "optimizer.lr"} <= differ
    for label, flat in configs.items():
        assert differences["rows"][label] == {k: flat[k] for k in differ if k in flat}
    assert differences["rows"]["er lr=0.5"]["method.buffer_size"] == 20
    assert "method.buffer_size" not in differences["rows"]["finetune lr=0.6"]  # finetune has no buffer
    html = (tmp_path / "out" / "compare.html").read_text()
    assert "What differs between the rows" in html
    assert re.search(r'data-key="er lr=0.6\|method.buffer_size">20<', html)
    assert re.search(r'data-key="finetune lr=0.5\|optimizer.lr">0.5<', html)
    one = compare([er], seeds=1, out=tmp_path / "one")
    assert one["differences"]["keys"] == [] and "What differs" not in (tmp_path / "one" / "compare.html").read_text()


def test_compare_page_keeps_one_colour_per_row_and_shows_every_seed(tmp_path, known_runs, monkeypatch):
    from matplotlib.colors import to_rgba

    from protosphere.report import plots

    figures = {}
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.setdefault(Path(path).stem, fig) and real(fig, path))
    er = write_config(tmp_path, "er")
    out = tmp_path / "out"
    compare([er], seeds=3, out=out, grid=["optimizer.lr=0.5,0.6,0.7"])
    seeds = {i: [100 * lr + s for s in range(3)] for i, lr in enumerate((0.5, 0.6, 0.7))}  # known_runs' values
    # bars: both series of row i in colour i, and its three seeds as dots on each bar
    (ax,) = figures["compare_final_accuracy"].axes
    from matplotlib.container import BarContainer

    bars = [patch for c in ax.containers if isinstance(c, BarContainer) for patch in c.patches]
    assert len(bars) == 6  # 3 rows × class-IL, task-IL
    assert [to_rgba(b.get_facecolor()) for b in bars] == [to_rgba(plots.color(i)) for i in (0, 1, 2)] * 2
    from matplotlib.collections import PathCollection

    dots = [sorted(c.get_offsets()[:, 1].tolist()) for c in ax.collections if isinstance(c, PathCollection)]
    assert dots == [pytest.approx(seeds[i]) for i in (0, 1, 2)] * 2
    # curves: row i's mean line and its seeds' thin lines in colour i
    (ax,) = figures["compare_seen_accuracy"].axes
    for i in range(3):
        lines = [line for line in ax.get_lines() if to_rgba(line.get_color()) == to_rgba(plots.color(i))]
        thin = sorted(line.get_ydata()[0] for line in lines if line.get_linewidth() < 1)
        assert thin == pytest.approx(seeds[i]) and len(lines) == 4  # 3 seeds + the mean
    # the table: the same colour beside each row, every seed's value, and the PDFs linked
    html = (out / "compare.html").read_text()
    swatches = re.findall(r'<tr><td class="l"><span class="swatch" style="[^"]*background:(#\w+)"', html)
    assert swatches[:3] == [plots.color(i) for i in range(3)]
    cells = dict(re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', html))
    for i, lr in enumerate((0.5, 0.6, 0.7)):
        for s in range(3):
            assert float(cells[f"er-lr-{lr}-seed{s}|headline/class_il/final_average_accuracy"]) == seeds[i][s]
    for name in ("compare_final_accuracy", "compare_seen_accuracy"):
        assert f'<a href="plots/{name}.pdf">PDF</a>' in html and (out / "plots" / f"{name}.pdf").is_file()
    assert '<pre class="command">' in html


def test_compare_puts_the_runs_that_log_to_wandb_in_one_group(tmp_path, known_runs):
    plain = write_config(tmp_path, "plain")
    tracked = tmp_path / "tracked.yaml"
    tracked.write_text(plain.read_text() + "logging: {wandb: true}\n")
    own = tmp_path / "own.yaml"
    own.write_text(plain.read_text() + "logging: {wandb: {project: p, group: mine, tags: [x]}}\n")
    out = tmp_path / "ablation-1"
    runs = expand([plain, tracked, own], [], [], seeds=2, out=out)
    groups = {r.config.name: r.config.logging.wandb and r.config.logging.wandb.group for r in runs}
    assert groups == {
        "plain-seed0": None,  # logs nowhere: nothing set
        "plain-seed1": None,
        "tracked-seed0": "ablation-1",  # the name of --out
        "tracked-seed1": "ablation-1",
        "own-seed0": "mine",  # the config's own group wins
        "own-seed1": "mine",
    }
    kept = next(r for r in runs if r.config.name == "own-seed0").config.logging.wandb
    assert (kept.project, kept.tags) == ("p", ["x"])
    given = expand([plain], ["logging.wandb={project: q}"], [], seeds=1, out=out, group="paper table 2")
    wandb = given[0].config.logging.wandb
    assert (wandb.group, wandb.project) == ("paper table 2", "q")
    from protosphere.config import load_config

    again = load_config(given[0].config_path, given[0].overrides)  # what a parallel job's process reads
    assert again.logging.wandb.group == "paper table 2"
    summary = compare([tracked], seeds=1, out=out, group="g")
    assert summary["command"].endswith("--group g") and known_runs == ["tracked-seed0"]
