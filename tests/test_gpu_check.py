"""benchmarks/gpu_check.py at tiny shapes on the CPU: every paper config trains through the engine's step code in
every variant (precision, channels-last, DDP launch, streamed batches), and any failure makes it exit non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from protosphere.config import load_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
VARIANTS = ("32-true", "bf16-cl", "ddp", "streamed")


def gpu_check(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


def rows(table: str) -> dict[tuple[str, str], str]:
    """(config, variant) -> status, from the table the check writes."""
    found = {}
    for line in table.splitlines()[1:-1]:
        parts = line.split()
        status = line[line.rindex("  ") + 2 :] if "FAIL" not in line else line[line.index("FAIL") :]
        found[(parts[0], parts[1])] = status
    return found


def test_every_paper_config_trains_at_tiny_shapes(tmp_path):
    out = tmp_path / "table.txt"
    done = gpu_check("--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = rows(out.read_text())
    configs = sorted((REPO / "configs" / "paper").glob("*.yaml"))
    assert len(configs) > 30
    for path in configs:
        load_config(path)  # each is a valid config the library reads
        assert table.get((path.stem, "32-true")) == "ok", path.stem
    first = configs[0].stem
    assert all(table.get((first, v)) == "ok" for v in VARIANTS), {v: table.get((first, v)) for v in VARIANTS}
    assert len(table) == len(configs) + len(VARIANTS) - 1
    assert f"{len(table)} checks on cpu: {len(table)} ok, 0 failed" in out.read_text()


def test_a_failing_config_makes_the_check_fail(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        "data: {dataset: cifar10}\nscenario: {num_tasks: 5}\nmodel: {backbone: resnet18}\n"
        "method: {name: er, buffer_size: 20}\ntrain: {batch_size: 16}\n"
    )
    # a simplex ETF of 10 classes needs at least 9 dimensions: building the method fails
    small_etf = tmp_path / "small_etf.yaml"
    small_etf.write_text("data: {dataset: cifar10}\nmethod: {name: fnc2, projection_dim: 3}\n")
    unknown_key = tmp_path / "unknown_key.yaml"
    unknown_key.write_text("data: {dataset: cifar10}\ntrain: {epochz: 3}\n")
    # trains, but its loss is not finite after a step at this learning rate
    diverging = tmp_path / "diverging.yaml"
    diverging.write_text(good.read_text().replace("method: {name: er, buffer_size: 20}", "optimizer: {lr: 1.0e+30}"))
    missing = tmp_path / "missing.yaml"
    configs = [str(p) for p in (good, small_etf, unknown_key, diverging, missing)]
    done = gpu_check("--configs", *configs, "--variants", "32-true", timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    table = rows(done.stdout.split("\n\n")[-1])
    assert table[("good", "32-true")] == "ok"
    assert table[("small_etf", "32-true")].startswith("FAIL ConfigError") and "simplex_etf" in done.stdout
    assert table[("unknown_key", "32-true")].startswith("FAIL ConfigError") and "epochz" in done.stdout
    assert table[("diverging", "32-true")].startswith("FAIL FloatingPointError") and "loss is nan" in done.stdout
    assert table[("missing", "32-true")].startswith("FAIL")
    assert "5 checks on cpu: 1 ok, 4 failed" in done.stdout
