"""protosphere.bench.throughput: each method's floor is found by watching its passes, whatever its loss."""

import re

from protosphere.bench import throughput


def test_floor_records_each_methods_own_passes(tmp_path):

    out = tmp_path / "t.txt"
    assert (
        throughput.main(
            [
                "--dataset",
                "digits",
                "--backbone",
                "mlp",
                "--batch-size",
                "8",
                "--augmentation",
                "supervised",
                "--methods",
                "finetune",
                "lwf",
                "co2l",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--warmup-task0-steps",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = {line.split()[0]: line for line in out.read_text().splitlines() if not line.startswith(("#", "method"))}
    assert rows["finetune"].endswith("  aug 8 + 8")  # the augmented stream batch, one pass
    assert rows["lwf"].endswith("  aug 8 + 8 + 8 no-grad")  # + the past model on the same batch
    co2l = rows["co2l"].split("  ")[-1]
    assert co2l.count("aug 8") == 2 and "16 + 16 no-grad" in co2l  # two views, then the past model on both
    # its heads: the trained projector on both views, then the past projector without a graph
    assert re.search(r"; heads ProjectionHead 16×(\d+) \+ ProjectionHead 16×\1 no-grad$", co2l), co2l
    assert "heads" not in rows["finetune"]  # a linear classifier is not a head network


def test_make_bench_is_protosphere_bench():
    """`make bench` runs `protosphere bench` (one set of benchmarks, however it is started), passing ARGS on."""
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert "-m protosphere.cli bench $(ARGS)" in recipe
