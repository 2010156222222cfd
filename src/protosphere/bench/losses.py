"""Loss benchmarks: protosphere's supcon vs pytorch-metric-learning's SupConLoss, and every loss's cost relative to a
2-view training step of the small CNN.

Run:  OMP_NUM_THREADS=2 python -m protosphere.bench.losses [--out FILE]

What is compared (supcon vs PML):
- PML ``SupConLoss(temperature=0.07)`` L2-normalises inside (CosineSimilarity), masks with N×N float pos/neg masks and
  averages over anchors with a non-zero loss (AvgNonZeroReducer); protosphere's ``supcon(z, labels, 0.07, 0.07)``
  takes unit rows and averages over all anchors. On the benchmark batches (two views of B/2 images, so every anchor
  has a positive) both compute the same number; the script prints the difference.
- Time: median wall time of forward + backward (input already unit-norm, fresh leaf each repetition), the two losses
  interleaved repetition by repetition so background load hits both alike. Value checks are switched off for
  protosphere (``set_validation(False)``, the engine's steady state); the time with checks on is printed as well.
- Peak memory at B = 4096: on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the call; on CPU a
  fresh subprocess per loss reports the growth of its peak resident set size (``ru_maxrss``) during one forward +
  backward, after the inputs were created (the process's earlier high-water mark is the baseline). PyTorch's CPU
  allocator returns large blocks to the OS, so this is the peak of live tensors plus allocator/library overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import protosphere.losses as L


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def batch(b: int, d: int, device, seed: int = 0, classes: int = 100):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, d, generator=g), dim=1).to(device)
    labels = torch.randint(0, classes, (b // 2,), generator=g).repeat(2).to(device)  # two views of b/2 images
    return z, labels


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fwd_bwd(fn, z, *args, **kwargs):
    leaf = z.detach().clone().requires_grad_(True)
    fn(leaf, *args, **kwargs).backward()
    return leaf


def interleaved_medians(calls: dict, reps: int, device, warmup: int = 3, with_min: bool = False):
    times = {k: [] for k in calls}
    for _ in range(warmup):
        for call in calls.values():
            call()
    for _ in range(reps):
        for name, call in calls.items():
            sync(device)
            t = time.perf_counter()
            call()
            sync(device)
            times[name].append(time.perf_counter() - t)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return (medians, {k: min(v) for k, v in times.items()}) if with_min else medians


# ---------------------------------------------------------------------------------------------------------------------
# peak memory (child process mode)
# ---------------------------------------------------------------------------------------------------------------------


def _memory_child(which: str, b: int, d: int) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    from pytorch_metric_learning.losses import SupConLoss

    device = torch.device("cpu")
    L.set_validation(False)
    z, labels = batch(b, d, device)
    pml = SupConLoss(temperature=0.07)
    fn = (lambda x, y: L.supcon(x, y, 0.07, 0.07)) if which == "protosphere" else pml
    leaf = z.detach().clone().requires_grad_(True)
    # touch the code paths on a tiny batch so lazy initialisation is not counted
    fn(F.normalize(torch.randn(8, d), dim=1).requires_grad_(True), torch.arange(4).repeat(2)).backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn(leaf, labels).backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mib": (after - before) / 1024.0}))


def peak_memory(which: str, b: int, d: int, device) -> float:
    """MiB above the pre-call level at the peak of one forward + backward."""
    if device.type == "cuda":
        from pytorch_metric_learning.losses import SupConLoss

        z, labels = batch(b, d, device)
        fn = (lambda x, y: L.supcon(x, y, 0.07, 0.07)) if which == "protosphere" else SupConLoss(temperature=0.07)
        fwd_bwd(fn, z[:8], labels[:8])
        leaf = z.detach().clone().requires_grad_(True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(leaf, labels).backward()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    out = subprocess.run(
        [sys.executable, "-m", "protosphere.bench.losses", "--memory-child", which, str(b), str(d)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mib"]


# ---------------------------------------------------------------------------------------------------------------------
# CNN train step
# ---------------------------------------------------------------------------------------------------------------------


class _FallbackCNN(nn.Module):
    """conv32–conv64–pool–conv128–pool–(4×4 avg)–fc → 128 (≈0.36 M parameters); used if protosphere.models is absent."""

    out_dim = 128

    def __init__(self):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.net = nn.Sequential(
            block(1, 32),
            block(32, 64),
            nn.MaxPool2d(2),
            block(64, 128),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(128 * 16, 128),
        )

    def forward(self, x):
        return self.net(x)


def small_cnn():
    try:
        from protosphere.models import build_backbone

        backbone = build_backbone("small_cnn", in_channels=1, image_size=28)
        name = "protosphere.models.build_backbone('small_cnn', in_channels=1, image_size=28) + Linear(out_dim, 128)"
        return nn.Sequential(backbone, nn.Linear(backbone.out_dim, 128)), name
    except Exception as exc:  # the models package may not exist yet
        return _FallbackCNN(), f"fallback conv32-conv64-pool-conv128-pool-fc CNN ({type(exc).__name__})"


def main(argv=None) -> int:
    """Exit status 1 when a target (FAIL in the report) is missed, 0 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--memory-child", nargs=3, metavar=("WHICH", "B", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        which, b, d = args.memory_child
        _memory_child(which, int(b), int(d))
        return 0

    torch.set_num_threads(args.threads)
    os.environ["BENCH_THREADS"] = str(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from pytorch_metric_learning import __version__ as pml_version
    from pytorch_metric_learning.losses import SupConLoss

    lines = []

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    emit("protosphere loss benchmark")
    emit(
        f"machine: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; "
        f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
    )
    emit(
        f"torch {torch.__version__}, pytorch-metric-learning {pml_version}, python {platform.python_version()}; "
        f"load average before start {os.getloadavg()[0]:.2f}"
    )
    emit()

    # --- supcon vs PML: time ------------------------------------------------------------------------------------
    b, d = 1024, 128
    z, labels = batch(b, d, device)
    pml = SupConLoss(temperature=0.07)
    L.set_validation(False)
    ours_value = L.supcon(z, labels, 0.07, 0.07).item()
    pml_value = pml(z, labels).item()

    def ours_checked():
        with L.validation(True):
            return fwd_bwd(L.supcon, z, labels, 0.07, 0.07)

    med, best = interleaved_medians(
        {
            "protosphere": lambda: fwd_bwd(L.supcon, z, labels, 0.07, 0.07),
            "pml": lambda: fwd_bwd(pml, z, labels),
            "checked": ours_checked,
        },
        args.reps,
        device,
        with_min=True,
    )
    checked = med["checked"]
    ratio = med["protosphere"] / med["pml"]
    emit(f"supcon vs PML SupConLoss(temperature=0.07), B={b}, d={d}, two views of {b // 2} images, 100 classes")
    emit(f"  loss values: protosphere {ours_value:.6f}, PML {pml_value:.6f} (|diff| {abs(ours_value - pml_value):.2e})")
    emit(
        f"  forward+backward median of {args.reps}: protosphere {med['protosphere'] * 1e3:.2f} ms, "
        f"PML {med['pml'] * 1e3:.2f} ms -> ratio {ratio:.3f} (target <= 0.67) {'PASS' if ratio <= 0.67 else 'FAIL'}"
    )
    emit(
        f"  best of {args.reps}: protosphere {best['protosphere'] * 1e3:.2f} ms, PML {best['pml'] * 1e3:.2f} ms "
        f"-> ratio {best['protosphere'] / best['pml']:.3f}"
    )
    emit(
        f"  protosphere with value checks on (direct-call default): median {checked * 1e3:.2f} ms "
        f"(ratio {checked / med['pml']:.3f})"
    )

    # --- supcon vs PML: peak memory ---------------------------------------------------------------------------------
    bm = 4096
    mem_ours = peak_memory("protosphere", bm, d, device)
    mem_pml = peak_memory("pml", bm, d, device)
    method = (
        "torch.cuda.max_memory_allocated growth"
        if device.type == "cuda"
        else "peak-RSS growth (ru_maxrss) of a fresh subprocess over one forward+backward"
    )
    emit(f"peak memory, B={bm}, d={d} ({method}; one N×N float32 = {bm * bm * 4 / 2**20:.0f} MiB):")
    emit(
        f"  protosphere {mem_ours:.0f} MiB, PML {mem_pml:.0f} MiB -> ratio {mem_ours / mem_pml:.3f} "
        f"(target <= 1) {'PASS' if mem_ours <= mem_pml else 'FAIL'}"
    )
    emit()

    # --- each loss vs a 2-view CNN training step --------------------------------------------------------------------
    torch.manual_seed(0)
    model, model_name = small_cnn()
    model = model.to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(2 * 256, 1, 28, 28, device=device)  # two views of 256 images
    y = torch.randint(0, 10, (256,), device=device).repeat(2)

    def train_step():
        opt.zero_grad(set_to_none=True)
        feats = F.normalize(model(images), dim=1)
        L.supcon(feats, y, 0.1, 0.1).backward()
        opt.step()

    step_med, step_best = interleaved_medians(
        {"step": train_step}, max(5, args.reps // 2), device, warmup=2, with_min=True
    )
    step, step_best = step_med["step"], step_best["step"]
    zz, _ = batch(512, 128, device, seed=1)
    zp = F.normalize(zz + 0.3 * torch.randn_like(zz), dim=1)
    etf = F.normalize(torch.randn(10, 128, device=device), dim=1)
    old = etf[:5]
    cw = L.inverse_frequency_weights(y, 10)
    weights = torch.randn(10, 128, device=device)
    from protosphere.geometry import orthonormal_prototypes

    ortho = orthonormal_prototypes(10, 128).to(device)
    queue = F.normalize(torch.randn(4096, 128, device=device), dim=1)
    negatives = F.normalize(torch.randn(8192, 128, device=device), dim=1)
    losses = {
        "supcon": lambda x: L.supcon(x, y),
        "asymmetric_supcon": lambda x: L.asymmetric_supcon(x, y, [5, 6, 7, 8, 9]),
        "fnc2 (gamma=1, 5 old prototypes, buffer rows)": lambda x: L.fnc2(x, y, etf, [5, 6, 7, 8, 9], [0, 1, 2, 3, 4]),
        "fnc2 (gamma=0)": lambda x: L.fnc2(x, y, etf, [5, 6, 7, 8, 9], [0, 1, 2, 3, 4], gamma=0),
        "ird": lambda x: L.ird(x, zp),
        "prd (5 old prototypes)": lambda x: L.prd(x, zp, old),
        "hsd (alpha=0.5, 10 seen prototypes)": lambda x: L.hsd(x, zp, etf, 0.5),
        "dr_loss (class-balanced)": lambda x: L.dr_loss(x, y, etf, cw),
        "normface": lambda x: L.normface(x, y, weights, 0.2),
        "ntce": lambda x: L.ntce(x, y, weights, 0.2),
        "nonl": lambda x: L.nonl(x, y, weights, 0.1),
        "nonl (bidirectional)": lambda x: L.nonl(x, y, weights, 0.1, bidirectional=True),
        "clop": lambda x: L.clop(x[:256], x[256:], y[:256], ortho),
        "supervised_ntxent": lambda x: L.supervised_ntxent(x[:256], x[256:], y[:256]),
        "nt_xent": lambda x: L.nt_xent(x[:256], x[256:]),
        "moco_infonce (queue 4096)": lambda x: L.moco_infonce(x[:256], zp[256:], queue),
        "pnr_moco (2 x 4096 negatives)": lambda x: L.pnr_moco(x[:256], zp[256:], x[256:], zp[:256], negatives),
        "pnr_simclr": lambda x: L.pnr_simclr(x[:256], x[256:], x[256:], x[:256], zp[:256], zp[256:]),
        "cassle_distill": lambda x: L.cassle_distill(x, zp),
    }
    times, bests = interleaved_medians(
        {k: (lambda f=f: fwd_bwd(f, zz)) for k, f in losses.items()}, args.reps, device, with_min=True
    )
    emit(
        "each loss's forward+backward on 512 rows x 128-d (2 views x 256), value checks off, as a fraction of one "
        "2-view training step"
    )
    emit(
        f"  step: {model_name}, {params / 1e6:.2f} M parameters, 2x256 images 1x28x28, SGD, "
        f"SupCon loss -> median {step * 1e3:.1f} ms (best {step_best * 1e3:.1f} ms)"
    )
    emit(f"  {'loss':<40s} {'median':>9s}  {'% of median step':>16s}   {'best':>8s}  {'best/best step':>14s}")
    for name, t in times.items():
        frac = t / step
        emit(
            f"  {name:<40s} {t * 1e3:6.2f} ms  {100 * frac:14.2f} %   {bests[name] * 1e3:5.2f} ms  "
            f"{100 * bests[name] / step_best:12.2f} %  {'PASS' if frac <= 0.05 else 'FAIL'} (target <= 5 %)"
        )
    emit(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    missed = [line.strip() for line in lines if "FAIL" in line and "target" in line]
    for line in missed:
        print(f"target missed: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
