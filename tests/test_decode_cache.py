"""Decode once, then memory-map: the decoded cache of datasets stored as image files (ImageNet-100 folders,
DomainNet, the Tiny-ImageNet zip), on tiny files written in the true formats with Pillow.

Every array is compared with a reference decoded here, file by file in the documented order with Pillow directly
(RGB, libjpeg draft, bilinear resize), which is what the loaders built in memory before the cache existed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protosphere.config import config_fingerprint, validate_config
from protosphere.data import _decode_cache, load_dataset, load_domainnet, load_imagenet100, load_tiny_imagenet
from protosphere.data.base import ImageDataset
from protosphere.data.scenarios import build_scenario
from protosphere.errors import ConfigError, DatasetError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("n003", "n001", "n002")  # written unsorted; labels follow the sorted names


def write_image(path: Path, rng: np.random.Generator, fmt: str = "JPEG", mode: str = "RGB") -> None:
    """Noise at an odd size, so that decoding and resizing both matter."""
    w, h = int(rng.integers(17, 61)) | 1, int(rng.integers(15, 57)) | 1
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))


def write_imagenet_folder(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """3 classes × ``per_class`` train images and 1 val image each: JPEGs, one grayscale JPEG and one PNG per class."""
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        for i in range(per_class):
            fmt, mode = ("PNG", "RGB") if i == 2 else ("JPEG", "L" if i == 1 else "RGB")
            write_image(root / "train" / cls / f"{cls}_{i}.{fmt.lower()}", rng, fmt, mode)
        write_image(root / "val" / cls / f"val_{cls}.JPEG", rng)
    return root


def decode_reference(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def reference_split(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for label, cls in enumerate(sorted(CLASSES)):
        for path in sorted((folder / cls).iterdir()):
            images.append(decode_reference(path, size))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def assert_matches_reference(ds: ImageDataset, root: Path, size: int) -> None:
    for split, folder in (("train", "train"), ("test", "val")):
        images, labels = reference_split(root / folder, size)
        np.testing.assert_array_equal(getattr(ds, f"{split}_images"), images)
        np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), labels)
        assert getattr(ds, f"{split}_images").dtype == np.uint8


@pytest.fixture
def decodes(monkeypatch):
    """How many images the loaders decoded in this process (with workers=1 all decoding happens here)."""
    calls = []
    real = _decode_cache.decode_image

    def counting(data, size, where):
        calls.append(where)
        return real(data, size, where)

    monkeypatch.setattr(_decode_cache, "decode_image", counting)
    return calls


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir())


def test_second_load_memory_maps_the_cache_without_decoding(tmp_path, decode_cache, decodes):
    root = write_imagenet_folder(tmp_path / "in100")
    first = load_imagenet100(root, image_size=24, workers=1)
    assert len(decodes) == 15  # 12 train + 3 val, each once
    assert_matches_reference(first, root, 24)
    (entry,) = entries(decode_cache)
    assert sorted(p.name for p in entry.iterdir()) == [
        "manifest.json",
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
    ]
    stored = np.load(entry / "train_images.npy", mmap_mode="r")
    assert stored.shape == (12, 3, 24, 24)  # (N, C, H, W) on disk
    decodes.clear()
    second = load_imagenet100(root, image_size=24, workers=1)
    assert decodes == []
    for split in ("train_images", "test_images", "train_labels", "test_labels"):
        np.testing.assert_array_equal(getattr(second, split), getattr(first, split))
    assert isinstance(second.train_images.base, np.memmap)  # a view of the file, not a copy in memory
    assert second.train_images.shape == (12, 24, 24, 3)
    # another image size is another entry
    load_imagenet100(root, image_size=16, workers=1)
    assert len(decodes) == 15 and len(entries(decode_cache)) == 2


def test_a_changed_source_file_is_decoded_again(tmp_path, decode_cache, decodes):
    root = write_imagenet_folder(tmp_path / "in100")
    load_imagenet100(root, image_size=20, workers=1)
    target = root / "train" / "n002" / "n002_0.jpeg"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, new mtime
    decodes.clear()
    ds = load_imagenet100(root, image_size=20, workers=1)
    assert len(decodes) == 15
    assert_matches_reference(ds, root, 20)
    before = ds.train_images[4].copy()  # n002_0: the first image of the second sorted class
    write_image(target, np.random.default_rng(99))  # new content and size
    decodes.clear()
    ds = load_imagenet100(root, image_size=20, workers=1)
    assert len(decodes) == 15
    assert_matches_reference(ds, root, 20)
    assert not np.array_equal(ds.train_images[4], before)
    assert len(entries(decode_cache)) == 1  # rebuilt in place, not a second copy
    decodes.clear()
    (root / "train" / "n001" / "n001_0.jpeg").unlink()  # a file less: another listing, another entry
    ds = load_imagenet100(root, image_size=20, workers=1)
    assert len(decodes) == 14 and len(ds.train_labels) == 11
    assert_matches_reference(ds, root, 20)


KILLED_BUILD = """
import os, sys, time
from pathlib import Path
from protosphere.data import _decode_cache, load_imagenet100
real, done = _decode_cache.decode_image, []
def slow(data, size, where):
    done.append(where)
    if len(done) == 5:  # rows written to the temporary file: tell the test, then wait to be killed
        Path(sys.argv[2]).write_text("ready")
        time.sleep(60)
    return real(data, size, where)
_decode_cache.decode_image = slow
load_imagenet100(sys.argv[1], image_size=24, workers=1)
"""


def environment(cache: Path) -> dict:
    return {
        **os.environ,
        "PROTOSPHERE_DECODE_CACHE": str(cache),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p),
    }


def test_a_build_killed_mid_write_is_never_used(tmp_path, decode_cache, decodes):
    root = write_imagenet_folder(tmp_path / "in100")
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(root), str(ready)], env=environment(decode_cache), cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, "the build ended before it was killed"
            assert time.monotonic() < deadline, "the build never reached its fifth image"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    (entry,) = entries(decode_cache)
    left = sorted(p.name for p in entry.iterdir())
    assert "manifest.json" not in left and any(name.endswith(".tmp") for name in left), left
    ds = load_imagenet100(root, image_size=24, workers=1)
    assert len(decodes) == 15  # the partial entry was rebuilt, not read
    assert_matches_reference(ds, root, 24)
    assert not any(p.name.endswith(".tmp") for p in entry.iterdir())


def test_an_incomplete_or_damaged_entry_is_rebuilt(tmp_path, decode_cache, decodes):
    root = write_imagenet_folder(tmp_path / "in100")
    load_imagenet100(root, image_size=12, workers=1)
    (entry,) = entries(decode_cache)

    def reload() -> int:
        decodes.clear()
        assert_matches_reference(load_imagenet100(root, image_size=12, workers=1), root, 12)
        return len(decodes)

    (entry / "manifest.json").unlink()  # killed after the arrays were renamed, before the manifest
    assert reload() == 15
    images = entry / "train_images.npy"
    images.write_bytes(images.read_bytes()[:-100])  # truncated behind a manifest
    assert reload() == 15
    decoded = np.load(images)
    np.save(images, decoded.reshape(3, 12, 12, 12))  # same bytes, another shape in the header
    assert reload() == 15
    manifest = json.loads((entry / "manifest.json").read_text())
    (entry / "manifest.json").write_text(json.dumps({**manifest, "key": "0" * 64}))  # written for other files
    assert reload() == 15
    (entry / "manifest.json").write_text('{"format": 1, "ke')  # a torn manifest
    assert reload() == 15
    assert reload() == 0  # and then it is current again


def test_one_and_two_workers_give_identical_arrays(tmp_path, monkeypatch, capfd):
    root = write_imagenet_folder(tmp_path / "in100", per_class=6, seed=3)
    loaded = {}
    for workers in (1, 2):
        monkeypatch.setenv("PROTOSPHERE_DECODE_CACHE", str(tmp_path / f"cache-{workers}"))
        loaded[workers] = load_imagenet100(root, image_size=28, workers=workers)
        assert f"with {workers} process(es)" in capfd.readouterr().err
    for split in ("train_images", "test_images", "train_labels", "test_labels"):
        np.testing.assert_array_equal(getattr(loaded[1], split), getattr(loaded[2], split))
    assert_matches_reference(loaded[2], root, 28)
    files = [sorted((tmp_path / f"cache-{w}").glob("*/train_images.npy"))[0].read_bytes() for w in (1, 2)]
    assert files[0] == files[1]


def test_a_bad_worker_count_gets_one_clear_error(tmp_path):
    root = write_imagenet_folder(tmp_path / "in100", per_class=1)
    cores = _decode_cache.usable_cores()
    for bad in (0, -2, True, 2.5, "2", 4 * cores + 1):
        with pytest.raises(ConfigError) as info:
            load_imagenet100(root, image_size=8, workers=bad)
        message = str(info.value)
        assert message.startswith(f"data.workers={bad!r} is not a number of decode processes") and "\n" not in message
        assert f"from 1 to {4 * cores}" in message
    with pytest.raises(ConfigError, match="data.workers"):
        load_dataset("imagenet100", root=root, image_size=8, workers=0)
    with pytest.raises(ConfigError, match="data.workers"):
        load_dataset("digits", workers=0)  # refused although digits decodes nothing
    with pytest.raises(ConfigError, match=r"`data.workers` \(got 0\): input should be greater than or equal to 1"):
        validate_config({"data": {"workers": 0}})
    with pytest.raises(ConfigError, match=r"`data.workers` \(got 'many'\)"):
        validate_config({"data": {"workers": "many"}})
    # how many processes decode changes no number: the same run, the same fingerprint
    assert config_fingerprint(validate_config({"data": {"workers": 3}})) == config_fingerprint(validate_config({}))


def test_an_unwritable_cache_folder_is_one_clear_error(tmp_path, monkeypatch):
    root = write_imagenet_folder(tmp_path / "in100", per_class=1)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PROTOSPHERE_DECODE_CACHE", str(blocker))
    with pytest.raises(DatasetError, match="cannot create the decoded cache of imagenet100 in .*PROTOSPHERE_DECODE"):
        load_imagenet100(root, image_size=8, workers=1)


def test_a_bad_image_leaves_no_entry_behind(tmp_path, decode_cache):
    root = write_imagenet_folder(tmp_path / "in100")
    (root / "train" / "n002" / "n002_9.jpeg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DatasetError, match="n002_9.jpeg is not a readable image"):
        load_imagenet100(root, image_size=8, workers=2)
    (entry,) = entries(decode_cache)
    assert list(entry.iterdir()) == []


def test_concurrent_loads_decode_once(tmp_path, decode_cache):
    """Two processes (as two DDP ranks) load together: one decodes, the other waits for it and maps the result."""
    root = write_imagenet_folder(tmp_path / "in100")
    script = (
        "import sys, numpy as np\n"
        "from protosphere.data import _decode_cache, load_imagenet100\n"
        "real, n = _decode_cache.decode_image, []\n"
        "_decode_cache.decode_image = lambda d, s, w: (n.append(w), real(d, s, w))[1]\n"
        "ds = load_imagenet100(sys.argv[1], image_size=24, workers=1)\n"
        "np.save(sys.argv[2], ds.train_images)\n"
        "print(len(n))\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(tmp_path / f"rank{r}.npy")],
            env=environment(decode_cache),
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    counts = sorted(int(child.communicate(timeout=120)[0].split()[-1]) for child in children)
    assert counts == [0, 15]
    reference, _ = reference_split(root / "train", 24)
    for r in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{r}.npy"), reference)


def write_tiny_zip(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "n02\nn01\n")
        for wnid in ("n01", "n02"):
            for i in range(3):
                buf = Path(path.parent / "tmp.JPEG")
                write_image(buf, rng)
                zf.write(buf, f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{i}.JPEG")
        write_image(path.parent / "tmp.JPEG", rng)
        zf.write(path.parent / "tmp.JPEG", "tiny-imagenet-200/val/images/val_0.JPEG")
        zf.writestr("tiny-imagenet-200/val/val_annotations.txt", "val_0.JPEG\tn02\t0\t0\t9\t9\n")
    (path.parent / "tmp.JPEG").unlink()


def zip_reference(path: Path, members: list[str], size: int) -> np.ndarray:
    with zipfile.ZipFile(path) as zf:
        out = []
        for member in members:
            (path.parent / "m").write_bytes(zf.read(member))
            out.append(decode_reference(path.parent / "m", size))
    return np.stack(out)


def test_tiny_imagenet_zip_is_cached_and_rebuilt_when_replaced(tmp_path, decode_cache, decodes, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "tiny-imagenet-200.zip"
    write_tiny_zip(path)
    members = [f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG" for w in ("n01", "n02") for i in range(3)]
    ds = load_tiny_imagenet(root=folder, image_size=32, workers=1)
    assert len(decodes) == 7
    np.testing.assert_array_equal(ds.train_images, zip_reference(path, members, 32))
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_labels.tolist() == [1]
    decodes.clear()
    again = load_tiny_imagenet(root=folder, image_size=32, workers=2)
    assert decodes == []
    np.testing.assert_array_equal(again.train_images, ds.train_images)
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    write_tiny_zip(path, seed=1)  # another archive at the same path
    ds = load_tiny_imagenet(root=folder, image_size=32, workers=1)
    assert len(decodes) == 7
    np.testing.assert_array_equal(ds.train_images, zip_reference(path, members, 32))
    # two workers, each opening the archive itself, give the same bytes
    monkeypatch.setenv("PROTOSPHERE_DECODE_CACHE", str(tmp_path / "other-cache"))
    np.testing.assert_array_equal(
        load_tiny_imagenet(root=folder, image_size=32, workers=2).train_images, ds.train_images
    )


def test_domainnet_domains_are_cached_per_domain_and_split(tmp_path, decode_cache, decodes):
    rng = np.random.default_rng(5)
    for domain in ("clipart", "sketch"):
        for cls in ("apple", "bus"):
            for i in range(5):
                write_image(tmp_path / "dn" / domain / cls / f"{domain}_{i}.jpg", rng)
    first = load_domainnet(tmp_path / "dn", ["clipart", "sketch"], image_size=16, seed=0, workers=1)
    assert len(decodes) == 20
    decodes.clear()
    again = load_domainnet(tmp_path / "dn", ["clipart", "sketch"], image_size=16, seed=0, workers=1)
    assert decodes == []
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.train_images, b.train_images)
        np.testing.assert_array_equal(a.test_labels, b.test_labels)
    other = load_domainnet(tmp_path / "dn", ["clipart", "sketch"], image_size=16, seed=1, workers=1)
    assert len(decodes) == 20  # another seeded split orders the files differently: its own entries
    assert len(entries(decode_cache)) == 4
    # each image is the reference decode of the file the split put there
    sources = {
        decode_reference(p, 16).tobytes() for p in (tmp_path / "dn").rglob("*.jpg") if p.parent.parent.name == "clipart"
    }
    assert {img.tobytes() for img in other[0].train_images} <= sources


def test_scenarios_view_the_memory_mapped_cache(tmp_path):
    root = write_imagenet_folder(tmp_path / "in100", per_class=4)
    mapped = load_imagenet100(root, image_size=20, workers=1)
    in_memory = ImageDataset(
        "imagenet100",
        np.array(mapped.train_images),
        mapped.train_labels.copy(),
        np.array(mapped.test_images),
        mapped.test_labels.copy(),
        mapped.class_names,
        "memory",
    )
    assert in_memory.channel_stats() == mapped.channel_stats()
    file = mapped.train_images.base
    for kwargs in ({}, {"shuffle_classes": True, "seed": 2}, {"train_fraction": 0.5}):
        a = build_scenario(mapped, "class_il", 3, **kwargs)
        b = build_scenario(in_memory, "class_il", 3, **kwargs)
        for ta, tb in zip(a.tasks, b.tasks):
            for field in ("train_images", "train_labels", "test_images", "test_labels"):
                assert getattr(ta, field).equal(getattr(tb, field)), field
            if not kwargs:  # natural order of a class-sorted folder: every task is a view of the file, no copy
                assert np.shares_memory(ta.train_images.numpy(), file)
        assert a.mean == b.mean and a.std == b.std
    data_il = build_scenario(mapped, "data_il", 2)
    assert sum(t.num_train for t in data_il.tasks) == 12


def test_too_little_disk_space_is_refused_before_decoding(tmp_path, decode_cache, decodes, monkeypatch):
    root = write_imagenet_folder(tmp_path / "in100")
    real = _decode_cache.shutil.disk_usage
    monkeypatch.setattr(_decode_cache.shutil, "disk_usage", lambda p: real(p)._replace(free=20_000))
    with pytest.raises(
        DatasetError, match=r"needs 25,920 bytes in .* but only 20,000 bytes is free; .*PROTOSPHERE_DECODE_CACHE"
    ):
        load_imagenet100(root, image_size=24, workers=1)  # 15 × 3 × 24 × 24 = 25,920 bytes
    assert decodes == [] and [list(e.iterdir()) for e in entries(decode_cache)] == [[]]


def test_a_run_config_decodes_with_data_workers(tmp_path, decode_cache, capfd):
    """`data.workers` reaches the loaders through the runner, for whole datasets and for DomainNet's domains."""
    from protosphere.runs.runner import build_scenario_from_config

    root = write_imagenet_folder(tmp_path / "in100")
    rng = np.random.default_rng(1)
    for domain in ("clipart", "sketch"):
        for i in range(5):
            write_image(tmp_path / "dn" / domain / "apple" / f"{i}.jpg", rng)
            write_image(tmp_path / "dn" / domain / "bus" / f"{i}.jpg", rng)
    configs = [
        {"data": {"dataset": "imagenet100", "root": str(root), "image_size": 16}, "scenario": {"num_tasks": 3}},
        {
            "data": {"dataset": "domainnet", "root": str(tmp_path / "dn"), "domains": ["clipart", "sketch"]},
            "scenario": {"kind": "domain_il", "num_tasks": 2},
        },
    ]
    for data in configs:
        for workers in (1, 2):
            data["data"]["workers"] = workers
            first = build_scenario_from_config(validate_config(data))
            assert f"with {workers} process(es)" in capfd.readouterr().err
            again = build_scenario_from_config(validate_config(data))
            assert "decoding" not in capfd.readouterr().err
            for a, b in zip(first.tasks, again.tasks):
                assert a.train_images.equal(b.train_images) and a.test_labels.equal(b.test_labels)
            shutil.rmtree(decode_cache)
