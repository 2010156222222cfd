"""Dataset loaders: tiny files written in the true on-disk formats, bad input, look-up order, downloads."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protosphere.data import (
    DATASET_NAMES,
    ImageDataset,
    _files,
    dataset_status,
    format_dataset_status,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_digits,
    load_domainnet,
    load_imagenet100,
    load_tiny_imagenet,
    mnist,
    read_idx,
)
from protosphere.errors import DatasetError, ProtosphereError

# ----------------------------------------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, type_byte: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0C: ">i4"}[type_byte]
    header = bytes([0, 0, type_byte, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=dtype).tobytes()


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    return path


SMALL = {"train": 6, "test": 4}


def small_mnist_arrays(offset: int = 0) -> dict[str, np.ndarray]:
    """Known contents for a shrunken MNIST-format release: image i is filled with (i + offset) % 256."""
    out = {}
    for split, n in SMALL.items():
        fill = ((np.arange(n) + offset) % 256).astype(np.uint8)[:, None, None]
        out[f"{split}_images"] = np.broadcast_to(fill, (n, 28, 28)).copy()
        out[f"{split}_images"][:, 3, 5] = 200  # a pixel that differs from the fill, to catch transposes
        out[f"{split}_labels"] = (np.arange(n) % 10).astype(np.uint8)
    return out


def write_mnist_folder(folder: Path, compress: bool = True, offset: int = 0, dotted: bool = False) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = small_mnist_arrays(offset)
    paths = {}
    for key, stem in mnist.IDX_FILES.items():
        name = stem.replace("-idx", ".idx", 1) if dotted else stem
        paths[key] = write_idx(folder / (name + (".gz" if compress else "")), arrays[key], compress)
    return paths


def content_hashes(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in arrays.items()}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No PROTOSPHERE_DATA, an empty cache, no system package, and 6/4-image IDX releases."""
    monkeypatch.delenv("PROTOSPHERE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist, "_COUNTS", dict(SMALL))
    monkeypatch.setattr(
        mnist, "FASHION_MNIST", dataclasses.replace(mnist.FASHION_MNIST, system_dirs=(str(tmp_path / "debian"),))
    )
    return tmp_path


def fail_fetch(url, destination):  # pragma: no cover - called only when a test is wrong
    raise AssertionError(f"unexpected network access to {url}")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(_files, "fetch_url", fail_fetch)


# --------------------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_known_values(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    # the name deliberately lies about compression: detection is by magic bytes
    got = read_idx(write_idx(tmp_path / "images.bin", images, compress))
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, images)
    assert got.flags.writeable  # so that torch.from_numpy does not warn
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", labels, compress), expected_ndim=1), labels)


def test_read_idx_big_endian_int32(tmp_path):
    arr = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(arr, 0x0C))
    got = read_idx(path)
    assert got.dtype == np.dtype(np.int32).newbyteorder("=") and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_read_idx_truncated_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "delete" in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.random.default_rng(1).integers(0, 255, (50, 28, 28), dtype=np.uint8))))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # destroy part of the deflate stream
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=str(path).replace("\\", "\\\\")):
        read_idx(path)


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "m.idx"
    path.write_bytes(b"\x00\x01\x08\x01" + struct.pack(">I", 2) + b"\x01\x02")
    with pytest.raises(DatasetError, match="not an IDX file") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x01\x02")  # unknown type byte
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(path)


def test_read_idx_wrong_ndim(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros((3, 2), np.uint8), compress=False)
    with pytest.raises(DatasetError, match="2-dimensional IDX array but a 1-dimensional"):
        read_idx(path, expected_ndim=1)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_wrong_length(tmp_path, compress):
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    short, long = tmp_path / "short", tmp_path / "long"
    for path, data in ((short, good[:-1]), (long, good + b"\x00")):
        path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DatasetError, match="truncated.*only 11 bytes") as info:
        read_idx(short)
    assert str(short) in str(info.value)
    with pytest.raises(DatasetError, match="data after the 12 payload bytes") as info:
        read_idx(long)
    assert str(long) in str(info.value)
    header_only = tmp_path / "header"
    header_only.write_bytes(good[:6])
    with pytest.raises(DatasetError, match="ends inside the dimension header"):
        read_idx(header_only)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


# ---------------------------------------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("compress,dotted", [(True, False), (False, False), (False, True)])
def test_mnist_from_root_known_contents(isolated, compress, dotted):
    folder = isolated / "mine"
    write_mnist_folder(folder, compress=compress, dotted=dotted)
    ds = load_dataset("mnist", root=folder)
    expected = small_mnist_arrays()
    assert ds.name == "mnist" and ds.source == str(folder)
    assert ds.train_images.shape == (6, 28, 28, 1) and ds.test_images.shape == (4, 28, 28, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int64
    np.testing.assert_array_equal(ds.train_images[..., 0], expected["train_images"])
    np.testing.assert_array_equal(ds.test_labels, expected["test_labels"])
    assert ds.train_images[2, 3, 5, 0] == 200 and ds.train_images[2, 5, 3, 0] == 2
    assert ds.class_names == tuple("0123456789") and ds.num_classes == 10 and ds.image_shape == (28, 28, 1)


def test_root_subfolder_and_strictness(isolated, monkeypatch):
    write_mnist_folder(isolated / "data" / "mnist")
    assert load_dataset("mnist", root=isolated / "data").source == str(isolated / "data" / "mnist")
    # a root without the files fails even though PROTOSPHERE_DATA holds them: no silent fallback
    monkeypatch.setenv("PROTOSPHERE_DATA", str(isolated / "data"))
    with pytest.raises(DatasetError, match="MNIST was not found") as info:
        load_dataset("mnist", root=isolated / "empty")
    assert str(isolated / "empty") in str(info.value)


def test_lookup_order_env_before_system_before_cache(isolated, monkeypatch):
    arrays = small_mnist_arrays()
    spec = dataclasses.replace(mnist.FASHION_MNIST, content_sha256=content_hashes(arrays))
    monkeypatch.setattr(mnist, "FASHION_MNIST", spec)
    write_mnist_folder(isolated / "debian")
    ds = load_dataset("fashion_mnist")
    assert ds.source == str(isolated / "debian") and ds.class_names[0] == "T-shirt/top"
    monkeypatch.setenv("PROTOSPHERE_DATA", str(isolated / "env"))
    write_mnist_folder(isolated / "env" / "fashion_mnist", compress=False)
    assert load_dataset("fashion_mnist").source == str(isolated / "env" / "fashion_mnist")


def test_fashion_content_hash_mismatch_names_file(isolated, monkeypatch):
    arrays = small_mnist_arrays()
    spec = dataclasses.replace(mnist.FASHION_MNIST, content_sha256=content_hashes(arrays))
    monkeypatch.setattr(mnist, "FASHION_MNIST", spec)
    paths = write_mnist_folder(isolated / "debian", offset=1)  # same shapes, different pixels
    with pytest.raises(DatasetError, match="SHA-256") as info:
        load_dataset("fashion_mnist")
    msg = str(info.value)
    assert str(paths["train_images"]) in msg and spec.content_sha256["train_images"] in msg
    assert "apt-get install --reinstall dataset-fashion-mnist" in msg


def test_wrong_count_names_file(isolated):
    folder = isolated / "m"
    paths = write_mnist_folder(folder)
    write_idx(paths["test_labels"], np.zeros(3, np.uint8), compress=True)
    with pytest.raises(DatasetError, match=r"shape \(3,\) but MNIST t10k-labels-idx1-ubyte has shape \(4,\)") as info:
        load_dataset("mnist", root=folder)
    assert str(paths["test_labels"]) in str(info.value)


def test_label_out_of_range(isolated):
    folder = isolated / "m"
    paths = write_mnist_folder(folder)
    write_idx(paths["train_labels"], np.array([0, 1, 2, 3, 4, 12], np.uint8), compress=True)
    with pytest.raises(DatasetError, match="label 12 outside 0..9"):
        load_dataset("mnist", root=folder)


def test_incomplete_folder_is_an_error(isolated):
    paths = write_mnist_folder(isolated / "m")
    paths["test_images"].unlink()
    with pytest.raises(DatasetError, match="incomplete.*t10k-images-idx3-ubyte") as info:
        load_dataset("mnist", root=isolated / "m")
    assert str(isolated / "m") in str(info.value)


def test_missing_fashion_mnist_lists_places_and_commands(isolated, monkeypatch):
    monkeypatch.setenv("PROTOSPHERE_DATA", str(isolated / "env"))
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion_mnist")
    msg = str(info.value)
    for needle in (
        str(isolated / "env" / "fashion_mnist"),
        str(isolated / "debian"),
        str(isolated / "cache" / "protosphere" / "fashion_mnist"),
        "apt-get install dataset-fashion-mnist",
        "PROTOSPHERE_DATA",
        "download=True",
        "protosphere datasets",
    ):
        assert needle in msg
    assert isinstance(info.value, ProtosphereError)


def test_cache_md5_mismatch_without_download(isolated):
    cache = isolated / "cache" / "protosphere" / "mnist"
    paths = write_mnist_folder(cache)  # valid IDX content, but not the official .gz bytes
    with pytest.raises(DatasetError, match="MD5") as info:
        load_dataset("mnist", download=False)
    msg = str(info.value)
    assert str(paths["train_images"]) in msg and mnist.MNIST.gz_md5["train_images"] in msg
    assert "delete" in msg and "download=True" in msg


# ------------------------------------------------------------------------------------------------------- downloads


def official_like_files(tmp_path: Path) -> dict[str, bytes]:
    src = write_mnist_folder(tmp_path / "official")
    return {mnist.IDX_FILES[k] + ".gz": p.read_bytes() for k, p in src.items()}


def test_download_verify_and_atomic_rename(isolated, monkeypatch):
    served = official_like_files(isolated)
    spec = dataclasses.replace(
        mnist.MNIST, gz_md5={k: hashlib.md5(served[s + ".gz"]).hexdigest() for k, s in mnist.IDX_FILES.items()}
    )
    monkeypatch.setattr(mnist, "MNIST", spec)
    requested = []

    def fake_fetch(url, destination):
        requested.append(url)
        name = url.rsplit("/", 1)[1]
        assert Path(destination).parent == isolated / "cache" / "protosphere" / "mnist"
        assert not (Path(destination).parent / name).exists()  # the final name appears only after verification
        Path(destination).write_bytes(served[name])

    monkeypatch.setattr(_files, "fetch_url", fake_fetch)
    with pytest.raises(DatasetError, match="MNIST was not found"):
        load_dataset("mnist")  # download=False never touches the network
    ds = load_dataset("mnist", download=True)
    assert sorted(requested) == sorted(spec.base_url + n for n in served)
    cache = isolated / "cache" / "protosphere" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(served)
    np.testing.assert_array_equal(ds.train_images[..., 0], small_mnist_arrays()["train_images"])
    monkeypatch.setattr(_files, "fetch_url", fail_fetch)
    assert load_dataset("mnist").source == str(cache)  # later loads use the verified cache


def test_bad_download_leaves_nothing(isolated, monkeypatch):
    served = official_like_files(isolated)

    def corrupt_fetch(url, destination):
        Path(destination).write_bytes(served[url.rsplit("/", 1)[1]][:-10])

    monkeypatch.setattr(_files, "fetch_url", corrupt_fetch)
    with pytest.raises(DatasetError, match="MD5") as info:
        load_dataset("mnist", download=True)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    cache = isolated / "cache" / "protosphere" / "mnist"
    assert not cache.exists() or os.listdir(cache) == []

    def offline(url, destination):
        Path(destination).write_bytes(b"partial")
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(_files, "fetch_url", offline)
    with pytest.raises(DatasetError, match="could not download .*no route to host"):
        load_dataset("mnist", download=True)
    assert os.listdir(cache) == []

    def interrupted(url, destination):
        Path(destination).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(_files, "fetch_url", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("mnist", download=True)
    assert os.listdir(cache) == []


def test_download_completes_partial_cache(isolated, monkeypatch):
    served = official_like_files(isolated)
    spec = dataclasses.replace(
        mnist.MNIST, gz_md5={k: hashlib.md5(served[s + ".gz"]).hexdigest() for k, s in mnist.IDX_FILES.items()}
    )
    monkeypatch.setattr(mnist, "MNIST", spec)
    cache = isolated / "cache" / "protosphere" / "mnist"
    cache.mkdir(parents=True)
    (cache / "train-images-idx3-ubyte.gz").write_bytes(served["train-images-idx3-ubyte.gz"])
    requested = []
    monkeypatch.setattr(
        _files, "fetch_url", lambda u, d: (requested.append(u), Path(d).write_bytes(served[u.rsplit("/", 1)[1]]))
    )
    load_dataset("mnist", download=True)
    assert len(requested) == 3 and not any("train-images" in u for u in requested)


# ------------------------------------------------------------------------------------------- real Fashion-MNIST data


def test_real_fashion_mnist():
    """The real data wherever protosphere finds it ($PROTOSPHERE_DATA, the Debian package, the user cache);
    `make test` makes sure it is there first (Makefile target `data`), as `make run` does."""
    found = mnist.find_idx_dataset(mnist.FASHION_MNIST)
    assert found is not None, (
        "Fashion-MNIST is absent (looked in "
        + ", ".join(str(d) for _, d in mnist.idx_search_dirs(mnist.FASHION_MNIST))
        + "); run `make data` (what `make test` does first), or `protosphere datasets --ensure fashion_mnist`, or "
        "`sudo apt-get install dataset-fashion-mnist`"
    )
    folder = found[1]
    ds = load_dataset("fashion_mnist")  # verifies counts and the pinned content SHA-256 of every file
    assert ds.source == str(folder)
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
    assert ds.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10 and np.bincount(ds.test_labels).tolist() == [1000] * 10
    mean, std = ds.channel_stats()
    assert abs(mean[0] - 0.2860) < 1e-3 and abs(std[0] - 0.3530) < 1e-3
    h = hashlib.sha256(ds.train_images.tobytes()).hexdigest()
    assert h == mnist.FASHION_MNIST.content_sha256["train_images"]


def test_real_fashion_mnist_under_protosphere_data(tmp_path, monkeypatch):
    """The same files under $PROTOSPHERE_DATA are found there first, not in one hard-coded folder."""
    found = mnist.find_idx_dataset(mnist.FASHION_MNIST)
    if found is None:
        pytest.skip("Fashion-MNIST is absent; test_real_fashion_mnist says how to get it")
    target = tmp_path / "fashion_mnist"
    target.mkdir()
    for path in found[2].values():
        (target / path.name).symlink_to(path)
    monkeypatch.setenv("PROTOSPHERE_DATA", str(tmp_path))
    ds = load_dataset("fashion_mnist")
    assert ds.source == str(target) and ds.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def test_make_test_sets_up_the_data_like_make_run():
    """`make test` depends on the `data` target as `make run` does, and CI runs exactly `make test`."""
    root = Path(__file__).resolve().parents[1]
    rules = dict(
        line.split(":", 1)
        for line in (root / "Makefile").read_text().splitlines()
        if line[:1].isalpha() and ":" in line and "=" not in line.split(":", 1)[0]
    )
    assert "data" in rules["test"].split() and "data" in rules["run"].split()
    assert "install" in rules["data"].split()
    ci = (root / ".ci" / "run").read_text().splitlines()
    assert "make test" in [line.strip() for line in ci] and "set -euo pipefail" in ci


# ----------------------------------------------------------------------------------------------------------- CIFAR


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def add_pickle(tar: tarfile.TarFile, name: str, obj) -> None:
    data = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_cifar10(path: Path) -> dict:
    batches = {f"data_batch_{i}": (cifar_rows(2, i), [i % 10, (i + 3) % 10]) for i in range(1, 6)}
    batches["test_batch"] = (cifar_rows(3, 9), [9, 8, 7])
    with tarfile.open(path, "w:gz") as tar:
        add_pickle(
            tar,
            "cifar-10-batches-py/batches.meta",
            {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": 2},
        )
        for name, (data, labels) in batches.items():
            add_pickle(
                tar,
                f"cifar-10-batches-py/{name}",
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [b"x.png"] * len(labels),
                },
            )
    return batches


def test_cifar10_tarball_known_contents(tmp_path):
    batches = write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    ds = load_cifar10(root=tmp_path)
    assert ds.train_images.shape == (10, 32, 32, 3) and ds.test_images.shape == (3, 32, 32, 3)
    assert ds.class_names == tuple(f"c{i}" for i in range(10))
    row = batches["data_batch_2"][0][1]  # third train image overall: batch 2, row 1
    img = ds.train_images[3]
    # row layout: 1024 red, 1024 green, 1024 blue, each row-major 32×32
    assert tuple(img[0, 0]) == (row[0], row[1024], row[2048])
    assert tuple(img[1, 2]) == (row[34], row[1024 + 34], row[2048 + 34])
    assert ds.train_labels.tolist() == [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][1]]
    assert ds.test_labels.tolist() == [9, 8, 7] and ds.source == str(tmp_path / "cifar-10-python.tar.gz")
    # the same release, extracted, gives the same arrays
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    ds2 = load_dataset("cifar10", root=tmp_path / "x")
    assert ds2.source == str(tmp_path / "x" / "cifar-10-batches-py")
    np.testing.assert_array_equal(ds.train_images, ds2.train_images)
    np.testing.assert_array_equal(ds.test_labels, ds2.test_labels)


def test_cifar100_fine_labels(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    train, test = cifar_rows(3, 1), cifar_rows(2, 2)
    with tarfile.open(path, "w:gz") as tar:
        add_pickle(
            tar,
            "cifar-100-python/meta",
            {b"fine_label_names": [f"f{i}".encode() for i in range(100)], b"coarse_label_names": [b"k"] * 20},
        )
        add_pickle(
            tar, "cifar-100-python/train", {b"data": train, b"fine_labels": [99, 5, 0], b"coarse_labels": [1, 2, 3]}
        )
        add_pickle(tar, "cifar-100-python/test", {b"data": test, b"fine_labels": [42, 17], b"coarse_labels": [0, 0]})
    ds = load_cifar100(root=path)
    assert ds.num_classes == 100 and ds.class_names[99] == "f99"
    assert ds.train_labels.tolist() == [99, 5, 0] and ds.test_labels.tolist() == [42, 17]
    np.testing.assert_array_equal(ds.test_images[1].transpose(2, 0, 1).reshape(-1), test[1])


def test_corrupt_and_truncated_tar(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    write_cifar10(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt archive") as info:
        load_cifar10(root=tmp_path)
    assert str(path) in str(info.value)
    path.write_bytes(b"this is not a tar archive at all" * 10)
    with pytest.raises(DatasetError, match=str(path)):
        load_cifar10(root=tmp_path)


def test_cifar_missing_member_and_bad_rows(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        add_pickle(tar, "cifar-10-batches-py/batches.meta", {b"label_names": [b"a", b"b"]})
    with pytest.raises(DatasetError, match="lacks cifar-10-batches-py/data_batch_1"):
        load_cifar10(root=path)
    with tarfile.open(path, "w:gz") as tar:
        add_pickle(tar, "cifar-10-batches-py/batches.meta", {b"label_names": [b"a", b"b"]})
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            add_pickle(tar, f"cifar-10-batches-py/{name}", {b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DatasetError, match="3072 bytes per row") as info:
        load_cifar10(root=path)
    assert f"{path}:cifar-10-batches-py/data_batch_1" in str(info.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_refuses_pickled_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"], b"x": _Evil()}, protocol=2))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, protocol=2))
    with pytest.raises(
        DatasetError, match=r"not a readable CIFAR batch \(UnpicklingError: global (posix|os|nt)\.system"
    ) as info:
        load_cifar10(root=tmp_path)
    assert str(folder / "batches.meta") in str(info.value)


def test_cifar_cache_md5_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("PROTOSPHERE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "protosphere" / "cifar10"
    cache.mkdir(parents=True)
    write_cifar10(cache / "cifar-10-python.tar.gz")
    with pytest.raises(DatasetError, match="MD5.*c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10")


# --------------------------------------------------------------------------------------------------- Tiny-ImageNet


TINY_COLOURS = {"n01": (255, 0, 0), "n00": (0, 0, 255), "n02": (0, 200, 0)}


def jpeg(colour, size=(64, 64), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


TINY_ANNOTATIONS = "val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn00\t1\t1\t60\t60\n"


def write_tiny_zip(path: Path, annotations: str = TINY_ANNOTATIONS) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        p = "tiny-imagenet-200/"
        zf.writestr(p + "wnids.txt", "n01\nn00\nn02\n")  # not sorted, like the official file
        zf.writestr(p + "words.txt", "n00\tgoldfish, Carassius auratus\nn01\tsalamander\nn02\tbus, coach\nn99\tother\n")
        for wnid, colour in TINY_COLOURS.items():
            for i in range(2):
                zf.writestr(f"{p}train/{wnid}/images/{wnid}_{i}.JPEG", jpeg(colour))
            zf.writestr(f"{p}train/{wnid}/{wnid}_boxes.txt", "")
        zf.writestr(p + "val/images/val_0.JPEG", jpeg((0, 200, 0)))
        zf.writestr(p + "val/images/val_1.JPEG", jpeg(128, mode="L"))  # grayscale file, as some official ones are
        zf.writestr(p + "val/val_annotations.txt", annotations)


def test_tiny_imagenet_zip_known_contents(tmp_path):
    path = tmp_path / "tiny-imagenet-200.zip"
    write_tiny_zip(path)
    ds = load_dataset("tiny_imagenet", root=tmp_path)
    assert ds.class_names == ("goldfish", "salamander", "bus")  # sorted wnids n00, n01, n02
    assert ds.train_images.shape == (6, 64, 64, 3) and ds.test_images.shape == (2, 64, 64, 3)
    assert ds.train_labels.tolist() == [0, 0, 1, 1, 2, 2] and ds.test_labels.tolist() == [2, 0]
    for img, label in zip(ds.train_images, ds.train_labels):
        wnid = ["n00", "n01", "n02"][label]
        np.testing.assert_allclose(img.reshape(-1, 3).mean(0), TINY_COLOURS[wnid], atol=4)
    np.testing.assert_allclose(ds.test_images[1].reshape(-1, 3).mean(0), (128, 128, 128), atol=3)
    # extracted folder gives identical arrays; image_size resizes
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp_path / "x")
    ds2 = load_tiny_imagenet(root=tmp_path / "x", image_size=16)
    assert ds2.train_images.shape == (6, 16, 16, 3)
    np.testing.assert_allclose(ds2.train_images[2].reshape(-1, 3).mean(0), TINY_COLOURS["n01"], atol=4)
    np.testing.assert_array_equal(load_tiny_imagenet(root=tmp_path / "x").train_images, ds.train_images)


def test_tiny_imagenet_corrupt_zip(tmp_path):
    path = tmp_path / "tiny-imagenet-200.zip"
    write_tiny_zip(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])  # central directory cut off
    with pytest.raises(DatasetError, match="truncated or corrupt zip") as info:
        load_tiny_imagenet(root=tmp_path)
    assert str(path) in str(info.value)
    # intact directory, damaged member data: caught by the CRC check
    buf = bytearray(data)
    start = data.index(b"\xff\xd8\xff")  # first JPEG (stored uncompressed by writestr's default)
    buf[start + 300 : start + 340] = bytes(40)
    path.write_bytes(bytes(buf))
    with pytest.raises(DatasetError, match=str(path)):
        load_tiny_imagenet(root=tmp_path)


def test_tiny_imagenet_bad_annotations(tmp_path):
    path = tmp_path / "tiny-imagenet-200.zip"
    write_tiny_zip(path, annotations="val_0.JPEG\tn02\t0\t0\t1\t1\nval_1.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match="val_annotations.txt line 2") as info:
        load_tiny_imagenet(root=tmp_path)
    assert f"{path}:tiny-imagenet-200/val/val_annotations.txt" in str(info.value)
    write_tiny_zip(path, annotations="val_9.JPEG\tn02\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match="val_9.JPEG, listed in val_annotations.txt, is missing"):
        load_tiny_imagenet(root=tmp_path)


# -------------------------------------------------------------------------------------------- DomainNet / ImageNet-100


DN_COLOURS = {"apple": (250, 10, 10), "bus": (10, 10, 250)}


def write_png(path: Path, colour, size=(20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_domainnet(root: Path, domains=("clipart", "sketch"), per_class=5) -> None:
    for d in domains:
        for cls, colour in DN_COLOURS.items():
            for i in range(per_class):
                write_png(root / d / cls / f"{d}_{i:03d}.png", colour)


def test_domainnet_seeded_split(tmp_path):
    write_domainnet(tmp_path)
    write_png(tmp_path / "sketch" / "zebra" / "z.png", (0, 0, 0))  # a class only one domain has
    a = load_domainnet(tmp_path, ["clipart", "sketch"], image_size=8)
    b = load_domainnet(tmp_path, ["clipart", "sketch"], image_size=8)
    assert [d.name for d in a] == ["domainnet_clipart", "domainnet_sketch"]
    assert a[0].class_names == a[1].class_names == ("apple", "bus", "zebra")
    clip = a[0]
    assert clip.train_images.shape == (8, 8, 8, 3) and clip.test_images.shape == (2, 8, 8, 3)  # 4/1 per class
    assert np.bincount(clip.test_labels).tolist() == [1, 1]
    for img, label in zip(clip.train_images, clip.train_labels):
        np.testing.assert_allclose(img.reshape(-1, 3).mean(0), DN_COLOURS[clip.class_names[label]], atol=1)
    np.testing.assert_array_equal(a[1].train_labels, b[1].train_labels)  # same on every run
    assert "seeded 80/20" in clip.source and 2 in a[1].train_labels


def test_domainnet_official_split_files(tmp_path):
    write_domainnet(tmp_path, domains=("real",))
    (tmp_path / "real_train.txt").write_text(
        "real/bus/real_000.png 1\nreal/apple/real_001.png 0\nreal/apple/real_002.png 0\n"
    )
    (tmp_path / "real_test.txt").write_text("real/bus/real_004.png 1\n")
    (ds,) = load_domainnet(tmp_path, ["real"], image_size=4)
    assert ds.train_labels.tolist() == [1, 0, 0] and ds.test_labels.tolist() == [1]
    assert "official split files" in ds.source
    (tmp_path / "real_test.txt").write_text("real/bus/real_999.png 1\n")
    with pytest.raises(DatasetError, match="real_999.png, listed in .*real_test.txt, is missing"):
        load_domainnet(tmp_path, ["real"])
    (tmp_path / "real_test.txt").write_text("bus/real_000.png\n")
    with pytest.raises(DatasetError, match="real_test.txt line 1"):
        load_domainnet(tmp_path, ["real"])


def test_domainnet_bad_input(tmp_path):
    write_domainnet(tmp_path, domains=("clipart",), per_class=1)
    with pytest.raises(DatasetError, match="'painting' is not a folder") as info:
        load_domainnet(tmp_path, ["clipart", "painting"])
    assert str(tmp_path) in str(info.value)
    with pytest.raises(DatasetError, match="non-empty list"):
        load_domainnet(tmp_path, "clipart")
    (tmp_path / "clipart" / "bus" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DatasetError, match="broken.jpg is not a readable image"):
        load_domainnet(tmp_path, ["clipart"])
    with pytest.raises(DatasetError, match="image_size"):
        load_domainnet(tmp_path, ["clipart"], image_size=0)


def test_imagenet100_folders(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        for cls, colour in DN_COLOURS.items():
            for i in range(n):
                write_png(tmp_path / "in100" / split / cls / f"{i}.JPEG", colour, size=(80, 60))
    ds = load_dataset("imagenet100", root=tmp_path / "in100", image_size=16)
    assert ds.image_shape == (16, 16, 3) and ds.class_names == ("apple", "bus")
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_labels.tolist() == [0, 1]
    np.testing.assert_allclose(ds.test_images[1, 5, 5], DN_COLOURS["bus"], atol=1)  # bilinear fixed-point rounding
    write_png(tmp_path / "in100" / "val" / "cat" / "0.png", (0, 0, 0))
    with pytest.raises(DatasetError, match="cat is a class that .*train does not have"):
        load_imagenet100(tmp_path / "in100")
    with pytest.raises(DatasetError, match="cannot be downloaded"):
        load_dataset("imagenet100", root=tmp_path / "in100", download=True)


# ----------------------------------------------------------------------------------------------- digits, registry


def test_digits_split_is_stratified_and_seeded():
    ds = load_digits()
    assert ds.image_shape == (8, 8, 1) and len(ds.train_labels) + len(ds.test_labels) == 1797
    assert ds.train_images.max() == 255 and ds.train_images.min() == 0
    from sklearn.datasets import load_digits as sk

    counts = np.bincount(sk().target)
    np.testing.assert_array_equal(np.bincount(ds.test_labels), np.rint(counts * 0.2).astype(int))
    np.testing.assert_array_equal(load_dataset("digits").train_labels, ds.train_labels)
    assert not np.array_equal(load_digits(seed=1).train_labels, ds.train_labels)


def test_image_dataset_validation_and_stats():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(20, dtype=np.int64) % 2
    ds = ImageDataset("t", images, labels, images[:5], labels[:5], ("a", "b"), "memory")
    mean, std = ds.channel_stats()
    np.testing.assert_allclose(mean, (images / 255.0).mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, (images / 255.0).std(axis=(0, 1, 2)), rtol=1e-12)
    with pytest.raises(DatasetError, match="20 train images but 19 train labels"):
        ImageDataset("t", images, labels[:19], images[:5], labels[:5], ("a", "b"), "memory")
    with pytest.raises(DatasetError, match="labels outside 0..1"):
        ImageDataset("t", images, labels + 1, images[:5], labels[:5], ("a", "b"), "memory")
    with pytest.raises(DatasetError, match="not a uint8"):
        ImageDataset("t", images.astype(np.float32), labels, images[:5], labels[:5], ("a", "b"), "memory")


def test_load_dataset_names():
    assert set(DATASET_NAMES) == {
        "fashion_mnist",
        "mnist",
        "digits",
        "cifar10",
        "cifar100",
        "tiny_imagenet",
        "imagenet100",
    }
    with pytest.raises(DatasetError, match="did you mean 'cifar100'"):
        load_dataset("cifar1000")
    with pytest.raises(DatasetError, match="load_domainnet"):
        load_dataset("domainnet")
    with pytest.raises(DatasetError, match="not resized"):
        load_dataset("digits", image_size=32)
    assert load_dataset("Digits").name == "digits"


def test_dataset_status_table(isolated, monkeypatch):
    monkeypatch.setenv("PROTOSPHERE_DATA", str(isolated / "env"))
    (isolated / "env" / "cifar10").mkdir(parents=True)
    write_cifar10(isolated / "env" / "cifar10" / "cifar-10-python.tar.gz")
    write_mnist_folder(isolated / "env" / "mnist")
    (isolated / "env" / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    statuses = {s.name: s for s in dataset_status()}
    assert set(statuses) == set(DATASET_NAMES) | {"domainnet"}
    assert statuses["cifar10"].found
    assert statuses["cifar10"].location == str(isolated / "env" / "cifar10" / "cifar-10-python.tar.gz")
    assert not statuses["fashion_mnist"].found
    assert "apt-get install dataset-fashion-mnist" in statuses["fashion_mnist"].how_to_get
    assert not statuses["mnist"].found and "incomplete" in statuses["mnist"].how_to_get
    table = format_dataset_status(statuses.values())
    lines = table.splitlines()
    assert lines[0].split() == ["dataset", "status", "location"]
    assert any(line.split()[:2] == ["cifar10", "found"] for line in lines)
    assert "To get the missing datasets:" in table and "  fashion_mnist: " in table
