"""report.html and compare.html in a real headless browser (Chromium, when installed): no console errors, no
external requests, every image decodes and has alt text naming it, nothing past the right edge at 1,400 px."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest

from protosphere.report import save_embedding_snapshot, write_report
from test_report import fake_results, write_run


@pytest.fixture(scope="module")
def browser():
    import check_report_pages as module  # tests/check_report_pages.py, also a command of its own

    binary = module.chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    tools = module.DevTools(binary, 1400)
    yield module, tools
    tools.close()


def png_data() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_checker_finds_every_kind_of_problem(browser, tmp_path):
    module, tools = browser
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        "<script>console.error('boom')</script>"
        f'<img src="data:image/png;base64,{png_data()}" alt="">'
        '<img src="data:image/png;base64,AAAA" alt="broken picture">'
        '<img src="http://example.invalid/x.png" alt="remote picture">'
        '<div style="width: 2000px">too wide</div>'
        '<pre class="command" style="overflow-x: auto">' + "protosphere run " + "x=1 " * 600 + "</pre></body></html>"
    )
    problems = module.check_page(tools, bad, 1400)
    text = "\n".join(problems)
    assert "console error: boom" in text
    assert "external request: http://example.invalid/x.png" in text
    assert "(broken picture) does not decode" in text
    assert "image 1 has no alt text" in text
    assert "past the right edge at 1400 px" in text
    assert "a command does not wrap (it scrolls sideways): protosphere run x=1" in text


def test_a_full_report_passes_in_chromium(browser, tmp_path):
    module, tools = browser
    classes = 20
    results = fake_results(
        num_tasks=10, classifiers=("nearest_prototype", "ncm", "linear_probe", "knn"), nc_epochs=True, extras=True
    )
    results["scenario"]["class_names"] = [f"a rather long class name {i}" for i in range(classes)]
    results["command"] = "protosphere run configs/x.yaml " + " ".join(f"method.option_{i}={i}" for i in range(200))
    rng = np.random.default_rng(0)
    results["confusion"] = {
        "classifier": "nearest_prototype",
        "classes": list(range(classes)),
        "matrix": rng.integers(0, 40, (classes, classes)).tolist(),
        "other": [0] * classes,
    }
    run_dir = write_run(tmp_path / "run", results)
    (run_dir / "metrics.csv").write_text(
        "time,task,epoch,step,split,name,value\n"
        + "".join(
            f"0,{t},0,{s},train,{n},{v}\n"
            for t in range(10)
            for s in (4, 9)
            for n, v in (("loss", 2.0 - 0.1 * s), ("lr", 0.1))
        )
    )
    prototypes = np.linalg.qr(rng.normal(size=(32, classes)))[0].T
    labels = rng.integers(0, classes, 600)
    save_embedding_snapshot(run_dir, prototypes[labels] * 2 + 0.3 * rng.normal(size=(600, 32)), labels, prototypes)
    path = write_report(run_dir)
    assert module.check_page(tools, path, 1400) == []  # the long command wraps, like everything else fits
    assert '<pre class="command">protosphere run configs/x.yaml' in path.read_text()
    facts = module.check_page.last_facts
    assert len(facts["images"]) >= 20
    # every picture is named: its alt text says what it shows
    alts = [image["alt"] for image in facts["images"]]
    for expected in (
        "training loss and learning rate",
        "confusion matrix after the last task",
        "per-class accuracy after the last task",
        "cosine of class means and prototypes",
        "accuracy matrix nearest_prototype (headline)",
        "embeddings on the sphere",
    ):
        assert expected in alts, (expected, alts)
    assert len(set(alts)) == len(alts)


def test_a_wide_compare_page_passes_in_chromium(browser, tmp_path):
    from protosphere.report.compare import to_html

    module, tools = browser
    classifiers = ["nearest_prototype", "ncm", "linear_probe", "linear_probe_seen", "knn"]
    columns = [
        {"key": f"{c}/{s}/final_average_accuracy", "title": f"{s} [{c}]"}
        for c in classifiers
        for s in ("class-IL", "task-IL")
    ]
    stat = {"mean": 55.123, "std": 1.234, "n": 3, "values": [54.0, 55.0, 56.4]}
    rows = [
        {
            "label": f"config-with-a-long-name-{i}",
            "method": "fnc2",
            "headline_classifier": "nearest_prototype",
            "runs": [f"r{i}-seed{s}" for s in range(3)],
            "seeds": [0, 1, 2],
            "values": {c["key"]: stat for c in columns},
            "class_il_seen_curve": None,
        }
        for i in range(3)
    ]
    summary = {
        "scenario": {"description": "fashion_mnist, class-il, 5 tasks"},
        "seeds": [0, 1, 2],
        "out": str(tmp_path / "a" / "rather" / "long" / "output" / "folder" / "for" / "the" / "comparison"),
        "command": "protosphere compare " + " ".join(f"configs/x{i}.yaml" for i in range(40)),
        "columns": columns,
        "rows": rows,
        "best": {},
        "best_test": {},
    }
    path = tmp_path / "compare.html"
    path.write_text(to_html(summary, tmp_path))
    assert module.check_page(tools, path, 1400) == []
    assert re.search(r'<div class="scroll"><table', path.read_text())
