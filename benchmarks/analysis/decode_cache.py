"""Decode once, then memory-map: what the first load of an image-folder dataset costs, what a cached load costs, and
how much memory a memory-mapped load holds, on a synthetic ImageNet-format folder.

    python benchmarks/analysis/decode_cache.py [--classes 100 --per-class 300 --val-per-class 20 --size 224]
        [--out benchmarks/results/decode_cache.txt]

The folder (``train/<class>/*.JPEG``, ``val/<class>/*.JPEG``, written into a temporary folder that is removed at the
end) holds ``--distinct`` different synthetic photographs (a colour gradient, Gaussian noise and a few filled
ellipses, ``--width`` × ``--height``, JPEG quality 90), each file one of them, so every file is a real JPEG to read
and decode. Each measurement runs in a fresh child process (``resource.getrusage`` there):

* first load with 1 and with 2 decode processes (``data.workers``), each into its own empty cache: wall time, CPU
  time of the loading process and of its decode processes, peak RSS;
* a cached load (twice: the second also has the listing in the OS's cache): wall time, and that it decoded nothing;
* peak RSS of a cached load alone, of a cached load plus a 5-task class-IL scenario (``build_scenario``, which also
  counts the channel statistics over every training pixel), and of a cached load plus ``np.array`` copies of the
  arrays (the memory the loaders held before the cache: the whole decoded dataset), each with the anonymous and the
  file-backed part of the RSS at the end (``/proc/self/status``: RssAnon, RssFile).

The 1- and 2-worker caches are compared byte for byte. A control (a pure-Python loop run twice, one after the other
and in two processes at once) says how many cores two busy processes got at the time, since the 2-worker figure can
only be as parallel as the machine lets it be.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    slope = rng.uniform(-0.4, 0.4, (2, 3)).astype(np.float32)
    pixels = rng.uniform(0, 255, 3).astype(np.float32) + x[..., None] * slope[0] + y[..., None] * slope[1]
    pixels += rng.normal(0, 12, (height, width, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(20, 150)), y0 + int(rng.integers(20, 150))]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_folder(root: Path, args) -> tuple[int, int]:
    rng = np.random.default_rng(0)
    blobs = [synthetic_jpeg(rng, args.width, args.height) for _ in range(args.distinct)]
    count, total = 0, 0
    for split, per_class in (("train", args.per_class), ("val", args.val_per_class)):
        for c in range(args.classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                blob = blobs[(c * 7919 + i) % len(blobs)]
                (folder / f"n{c:08d}_{i}.JPEG").write_bytes(blob)
                count, total = count + 1, total + len(blob)
    return count, total


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def free_cores(n: int = 20_000_000) -> tuple[float, float]:
    """Seconds for two runs of a pure-Python loop one after the other, and in two processes at once: their ratio is
    how many cores this machine gave two busy processes just then."""
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    burn(n), burn(n)
    serial = time.perf_counter() - start
    with ProcessPoolExecutor(2) as pool:
        start = time.perf_counter()
        list(pool.map(burn, [n, n]))
        parallel = time.perf_counter() - start
    return serial, parallel


def memory_status() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def child(mode: str, root: str, cache: str, size: int, workers: int) -> None:
    """One measurement, in its own process; prints one JSON line."""
    os.environ["PROTOSPHERE_DECODE_CACHE"] = cache
    import torch

    torch.set_num_threads(1)
    from protosphere.data import _decode_cache, load_imagenet100
    from protosphere.data.scenarios import build_scenario

    decoded = []
    real = _decode_cache.decode_image
    _decode_cache.decode_image = lambda data, s, where: (decoded.append(where), real(data, s, where))[1]
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    ds = load_imagenet100(root, image_size=size, workers=workers)
    load_s = time.perf_counter() - start
    extra_s = None
    if mode == "scenario":
        start = time.perf_counter()
        scenario = build_scenario(ds, "class_il", min(5, ds.num_classes))
        extra_s = time.perf_counter() - start
        assert sum(t.num_train for t in scenario.tasks) == len(ds.train_labels)
    elif mode == "copy":
        start = time.perf_counter()
        copies = [np.array(ds.train_images), np.array(ds.test_images)]
        extra_s = time.perf_counter() - start
        assert copies[0].shape == ds.train_images.shape
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "load_s": load_s,
                "extra_s": extra_s,
                "cpu_s": own.ru_utime + own.ru_stime - before.ru_utime - before.ru_stime,
                "rss_before": before.ru_maxrss * 1024,
                "workers_cpu_s": kids.ru_utime + kids.ru_stime,
                "peak_rss": own.ru_maxrss * 1024,
                "workers_peak_rss": kids.ru_maxrss * 1024,
                "decoded_here": len(decoded),
                "array_bytes": ds.train_images.nbytes + ds.test_images.nbytes,
                **memory_status(),
            }
        )
    )


def measure(mode: str, root: Path, cache: Path, size: int, workers: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--child", mode, str(root), str(cache), str(size), str(workers)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the {mode} measurement failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=350)
    parser.add_argument("--distinct", type=int, default=400, help="different JPEGs the files are drawn from")
    parser.add_argument("--size", type=int, default=224, help="image_size to decode to")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary folder goes (default: $TMPDIR)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    parser.add_argument(
        "--child", nargs=5, metavar=("MODE", "ROOT", "CACHE", "SIZE", "WORKERS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        mode, root, cache, size, workers = args.child
        child(mode, root, cache, int(size), int(workers))
        return 0

    import PIL
    import torch

    lines = [
        "Decode once, then memory-map (benchmarks/analysis/decode_cache.py)",
        f"command: python benchmarks/analysis/decode_cache.py {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{len(os.sched_getaffinity(0))} usable; Python {platform.python_version()}, torch {torch.__version__}, "
        f"Pillow {PIL.__version__}, numpy {np.__version__}",
        f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
    ]
    work = Path(tempfile.mkdtemp(prefix="decode-cache-", dir=args.workdir))
    try:
        start = time.perf_counter()
        count, encoded = write_folder(work / "in100", args)
        lines.append(
            f"folder: {args.classes} classes × ({args.per_class} train + {args.val_per_class} val) = {count:,} JPEGs "
            f"of {args.width}×{args.height} ({args.distinct} distinct synthetic images, {encoded / count / 1e3:.1f} "
            f"KB each, {gb(encoded)} in all; written in {time.perf_counter() - start:.0f} s), decoded to "
            f"{args.size}×{args.size}"
        )
        serial, parallel = free_cores()
        lines.append(
            f"control: a pure-Python loop twice, one after the other {serial:.2f} s, in 2 processes at once "
            f"{parallel:.2f} s (so about {serial / parallel:.1f} cores were free for 2 busy processes)"
        )
        first = {}
        for workers in (1, 2):
            first[workers] = r = measure("first", work / "in100", work / f"cache-{workers}", args.size, workers)
            lines.append(
                f"first load, {workers} worker(s): {r['load_s']:.1f} s wall ({count / r['load_s']:.0f} images/s); "
                f"CPU {r['cpu_s']:.1f} s in the loading process (after its imports) + {r['workers_cpu_s']:.1f} s in "
                "decode processes; "
                f"peak RSS {gb(r['peak_rss'])} (loading process), {gb(r['workers_peak_rss'])} (largest decode process)"
            )
        array_bytes = first[1]["array_bytes"]
        same = all(
            file_digest(work / "cache-1" / entry.name / f) == file_digest(entry / f)
            for entry in (work / "cache-2").iterdir()
            if entry.is_dir()
            for f in ("train_images.npy", "test_images.npy", "train_labels.npy", "test_labels.npy")
        )
        lines.append(f"1-worker and 2-worker caches byte-identical: {same}")
        for attempt in (1, 2):
            r = measure("cached", work / "in100", work / "cache-1", args.size, 1)
            assert r["decoded_here"] == 0, r
            lines.append(
                f"cached load #{attempt}: {r['load_s']:.2f} s wall (list + stat {count:,} files, hash, map), "
                f"decoded {r['decoded_here']} images"
            )
        lines.append(f"decoded arrays (train + test, uint8 N×3×{args.size}×{args.size}): {gb(array_bytes)}")
        labels = {
            "cached": "cached load",
            "scenario": "cached load + 5-task class-IL build_scenario",
            "copy": "cached load + np.array copies (what an in-memory loader holds)",
        }
        for mode, label in labels.items():
            r = measure(mode, work / "in100", work / "cache-1", args.size, 1)
            extra = f", {r['extra_s']:.1f} s for the step after loading" if r["extra_s"] is not None else ""
            grown = r["peak_rss"] - r["rss_before"]
            lines.append(
                f"peak RSS, {label}: {gb(r['peak_rss'])}, {gb(grown)} above the {gb(r['rss_before'])} before loading "
                f"= {grown / array_bytes:.2f} × the arrays; at the end RssAnon {gb(r['RssAnon'])}, RssFile "
                f"{gb(r['RssFile'])} (file-backed, evictable){extra}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines.append(f"load average at end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
