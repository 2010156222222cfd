"""Tasks larger than the device: ``data.device_budget``, its size parser, the per-step batch iterator
(:mod:`protosphere.data.streaming`), and whole runs whose results are those of the in-memory path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_dataset
from protosphere.config import config_fingerprint, parse_size, validate_config
from protosphere.data.scenarios import build_scenario
from protosphere.data.streaming import DeviceBudget, device_batches, free_memory, gather, nbytes, to_device
from protosphere.errors import ConfigError
from protosphere.runs import engine as engine_module
from protosphere.runs.protocol import Protocol
from protosphere.runs.runner import run

# --- the size parser --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("512MB", 512 * 10**6),
        ("512 mb", 512 * 10**6),
        ("2GiB", 2 * 2**30),
        ("2gib", 2 * 2**30),
        ("1.5GB", 1_500_000_000),
        ("3kB", 3000),
        ("3KiB", 3 * 1024),
        ("7TB", 7 * 10**12),
        ("1TiB", 2**40),
        ("10B", 10),
        (" 64 MiB ", 64 * 2**20),
    ],
)
def test_sizes_in_si_and_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "12 parsecs", "-1", -1, "1e9", "2 GB B", True, 1.5, None, "0x10"])
def test_anything_else_is_not_a_size(text):
    with pytest.raises(ValueError, match="512MB or 2GiB"):
        parse_size(text)


def test_device_budget_is_checked_with_the_config_and_kept_as_written():
    config = validate_config({"data": {"device_budget": "2GiB"}})
    assert config.data.device_budget == "2GiB" and config.data.device_budget_bytes == 2**31
    assert validate_config({}).data.device_budget_bytes is None
    with pytest.raises(ConfigError, match=r"data\.device_budget.*12 parsecs.*KiB, MiB, GiB"):
        validate_config({"data": {"device_budget": "12 parsecs"}})
    # where the images wait changes no number: runs that differ only in the budget share a fingerprint
    assert config_fingerprint(config) == config_fingerprint(validate_config({}))


# --- the budget ---------------------------------------------------------------------------------------------------


def test_budget_reserves_what_fits_and_refuses_the_rest():
    budget = DeviceBudget("cpu", limit=100)
    assert budget.fits(100) and not budget.fits(101)
    assert budget.reserve(60) and budget.left == 40
    assert not budget.reserve(41) and budget.left == 40  # a refusal takes nothing
    assert budget.fits(40) and not budget.fits(41)


def test_default_budget_is_a_fraction_of_the_available_ram_on_the_cpu():
    free = free_memory("cpu")
    assert free is not None and free > 0
    budget = DeviceBudget("cpu", fraction=0.25)
    # the free memory moves between the two readings; a quarter of it within a tenth
    assert abs(budget.limit - 0.25 * free_memory("cpu")) < 0.1 * free


# --- the batch iterator -------------------------------------------------------------------------------------------


def orders(n: int, batch: int, epochs: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch + 1, batch):
            yield order[start : start + batch]


def test_streamed_batches_are_the_whole_task_batches():
    images = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8)
    labels = torch.arange(50)
    rows = list(orders(50, 8, 3))
    reference = [(images[r], labels[r]) for r in rows]  # whole-task indexing, as the engine did
    for stream in (False, True):
        got = list(device_batches((images, labels), iter(rows), "cpu", stream=stream))
        assert len(got) == len(reference)
        for (x, y), (rx, ry) in zip(got, reference):
            assert x.dtype == torch.uint8 and torch.equal(x, rx) and torch.equal(y, ry)


def test_the_next_batch_is_gathered_before_the_current_one_is_handed_out():
    seen = []

    class Recording:
        shape, dtype = (10, 2), np.dtype(np.int64)

        def __getitem__(self, rows):
            seen.append(rows.tolist())
            return np.stack([rows, rows]).T

    rows = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])]
    batches = device_batches((Recording(),), iter(rows), "cpu", stream=True)
    (first,) = next(batches)
    assert torch.equal(first[:, 0], rows[0]) and seen == [[0, 1], [2, 3]]  # batch 2's rows read already
    assert [b[0][:, 0].tolist() for b in batches] == [[2, 3], [4, 5]] and len(seen) == 3


class RowsOnly:
    """A memory-mapped array that counts the rows read and refuses to be read whole (``np.asarray(whole)``)."""

    def __init__(self, array):
        self.array, self.rows_read = array, 0
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, rows):
        rows = np.asarray(rows)
        assert rows.ndim == 1, "only row indices"
        self.rows_read += len(rows)
        return self.array[rows]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was read")


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # a tensor over a read-only memmap
def test_a_memory_mapped_task_is_read_one_batch_at_a_time(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    rows = list(orders(40, 8, 2))
    for source in (mapped, torch.from_numpy(np.asarray(mapped)), RowsOnly(mapped)):
        got = [x for (x,) in device_batches((source,), iter(rows), "cpu", stream=True)]
        assert all(torch.equal(x, torch.from_numpy(images[r.numpy()])) for x, r in zip(got, rows))
    counted = RowsOnly(mapped)
    list(device_batches((counted,), iter(rows[:3]), "cpu", stream=True))
    assert counted.rows_read == 3 * 8
    assert nbytes(mapped) == images.nbytes and nbytes(torch.from_numpy(images)) == images.nbytes


def test_gather_and_to_device_keep_values_and_dtype():
    x = torch.arange(24, dtype=torch.int64).reshape(6, 4)
    rows = torch.tensor([5, 0, 5])
    assert torch.equal(gather(x, rows), x[rows]) and torch.equal(gather(x.numpy(), rows), x[rows])
    out = torch.full((3, 4), -1, dtype=torch.int64)
    assert gather(x.numpy(), rows, out=out) is out and torch.equal(out, x[rows])
    assert torch.equal(gather(RowsOnly(x.numpy()), rows, out=torch.zeros(3, 4, dtype=torch.int64)), x[rows])
    assert to_device(x, None) is x and to_device(x, "cpu") is x


# --- the protocol's test sets -------------------------------------------------------------------------------------


def test_test_images_stay_on_the_host_when_they_do_not_fit():
    scenario = build_scenario(make_dataset(), "class_il", 2)
    config = validate_config({})
    size = sum(nbytes(t.test_images) for t in scenario.tasks)
    budget = DeviceBudget("cpu", limit=size)
    Protocol(config, scenario, "cpu", budget=budget)
    assert budget.left == 0
    budget = DeviceBudget("cpu", limit=size + 10)
    Protocol(config, scenario, "cpu", budget=budget)
    assert budget.left == 10  # the test images took their bytes for the run
    budget = DeviceBudget("cpu", limit=size - 1)
    Protocol(config, scenario, "cpu", budget=budget)
    assert budget.left == size - 1  # too large: nothing taken, batches are copied as they are evaluated


# --- whole runs ---------------------------------------------------------------------------------------------------

VOLATILE = ("timings", "environment", "code", "command")


def canonical(run_dir) -> dict:
    """results.json without what differs between two runs of the same computation (as
    benchmarks/qa/results_digest.py compares them), and without the run's name and folder."""
    record = json.loads((run_dir / "results.json").read_text())
    for key in (*VOLATILE, "name"):
        record.pop(key, None)
    for key in ("output_dir", "name"):
        record["config"].pop(key, None)
    record["config"]["data"].pop("device_budget")
    return record


def digits_run(tmp_path, name, method, budget, monkeypatch, **extra):
    data = {
        "output_dir": str(tmp_path / "runs"),
        "name": name,
        "data": {"dataset": "digits", "device_budget": budget},
        "scenario": {"num_tasks": 3},
        "model": {"backbone": "small_cnn"},
        "method": method,
        "train": {"epochs": 2, "batch_size": 32},
        "optimizer": {"lr": 0.05},
        "fabric": {"threads": 1},
        "eval": {"embeddings": True},
    }
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    streamed = []

    def recording(arrays, batches, device, stream=False):
        streamed.append(stream)
        return device_batches(arrays, batches, device, stream=stream)

    monkeypatch.setattr(engine_module, "device_batches", recording)
    _, run_dir = run(validate_config(data), show_progress=False)
    return canonical(run_dir), streamed


@pytest.mark.parametrize(
    "method, extra",
    [
        ({"name": "er", "buffer_size": 60}, {"eval": {"corruptions": ["gaussian_noise"], "per_epoch": True}}),
        (
            {"name": "co2l", "buffer_size": 60, "projection_dim": 16, "classifiers": ["ncm", "linear_probe", "knn"]},
            {"train": {"augmentation": "contrastive"}, "eval": {"probe_augment": True}},
        ),
    ],
    ids=["er", "co2l"],
)
def test_a_streamed_run_gives_the_results_of_the_in_memory_run(tmp_path, monkeypatch, method, extra):
    whole, whole_streamed = digits_run(tmp_path, "whole", method, "1GB", monkeypatch, **extra)
    tiny, tiny_streamed = digits_run(tmp_path, "tiny", method, "1kB", monkeypatch, **extra)
    assert whole_streamed == [False] * 3 and tiny_streamed == [True] * 3  # each path was taken
    assert tiny == whole
    assert whole["status"] == "complete" and len(whole["accuracy"][whole["headline_classifier"]]["class_il"]) == 3


def test_an_image_folder_dataset_trains_through_the_memory_mapped_cache_and_streamed_batches(
    tmp_path, monkeypatch, decode_cache, capfd
):
    """A dataset larger than the budget: the first run decodes the ImageNet-format folder and trains each task whole
    on the device; the second reads the memory-mapped cache (decoding nothing) and streams every batch from it under
    a 1 kB budget. Same seed, same results."""
    from test_decode_cache import write_imagenet_folder

    root = write_imagenet_folder(tmp_path / "imagenet100", per_class=6)
    folder = {"dataset": "imagenet100", "root": str(root), "image_size": 16, "workers": 1}
    method = {"name": "er", "buffer_size": 12}
    data = {"data": folder, "train": {"augmentation": "supervised"}, "eval": {"embeddings": False}}
    whole, whole_streamed = digits_run(tmp_path, "decoded", method, "1GB", monkeypatch, **data)
    assert "decoding" in capfd.readouterr().err  # the first load built the cache
    cached, cached_streamed = digits_run(tmp_path, "cached", method, "1kB", monkeypatch, **data)
    assert "decoding" not in capfd.readouterr().err  # the second memory-mapped it
    assert whole_streamed == [False] * 3 and cached_streamed == [True] * 3
    assert cached == whole and whole["status"] == "complete"
