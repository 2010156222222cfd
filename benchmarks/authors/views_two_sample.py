"""Do protosphere's batched contrastive views and torchvision's per-image views look alike to a trained network?

The linear probe of the Co2L / FNC2 protocol trains on freshly augmented views every epoch, and on the same trained
network it scores a few points lower with protosphere's views than with torchvision's (docs/reproduction.md). A probe
fit is a noisy instrument (one number per augmentation stream); this script asks the question with many views instead:

1. encode N training images un-augmented with a trained run (``--run``, e.g. ``runs/seq-fmnist/fnc2-seed0``) and fit
   one linear classifier on those features (all classes, cosine SGD; the same for every source below);
2. make K views of each image with each source — protosphere's ``build_augmentation("contrastive", normalize=False)``
   and the harness's torchvision pipeline (``common.fmnist_transforms`` without ToTensor/Normalize) — for the whole
   pipeline and for each part alone (crop + flip, jitter);
3. print, per source: the fixed classifier's accuracy on the views (with its binomial standard error), the mean
   cosine between a view's feature and its clean image's feature, the feature norm, and pixel statistics (mean,
   fraction at 0, fraction at 1).

A difference in accuracy or cosine that is many standard errors wide is a difference in the views' distribution, not
noise. With ``--probe-streams S`` it then refits the run's own last-task linear probe (its rows: the last task's
training data and any classifier-only rows; its schedule, sampling and seed) S times per source, each time on a new
augmentation stream, and prints the class-IL accuracy over every test task: the in-run instrument, repeated.
Run it in the venv of benchmarks/authors/README.md (torchvision):

    /work/authors/venv/bin/python benchmarks/authors/views_two_sample.py \\
        --run runs/seq-fmnist/fnc2-seed0
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import protosphere  # noqa: E402
from protosphere.data.augment import ColorJitter, Compose, RandomResizedCrop, build_augmentation  # noqa: E402
from protosphere.evaluation import fit_linear_probe  # noqa: E402


def torchvision_sources(size: int) -> dict:
    from torchvision import transforms as T

    crop = [T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip()]
    jitter = [T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8)]
    return {"crop": T.Compose(crop), "jitter": T.Compose(jitter), "both": T.Compose(crop + jitter)}


def protosphere_sources(size: int, mean, std) -> dict:
    both = build_augmentation("contrastive", size, 1, mean, std, normalize=False)
    return {
        "crop": Compose([RandomResizedCrop((0.2, 1.0))], None),
        "jitter": Compose([ColorJitter(0.4, 0.4, 0, 0)], None),
        "both": both,
    }


def torchvision_views(transform, images: np.ndarray, k: int, seed: int) -> torch.Tensor:
    from PIL import Image

    torch.manual_seed(seed)  # torchvision's transforms draw from torch's global RNG
    out = np.empty((k, len(images), 1, images.shape[1], images.shape[2]), dtype=np.float32)
    for v in range(k):
        for i, image in enumerate(images):
            out[v, i, 0] = np.asarray(transform(Image.fromarray(image, mode="L")), dtype=np.float32) / 255.0
    return torch.from_numpy(out.reshape(k * len(images), 1, *images.shape[1:]))


def protosphere_views(transform, images: np.ndarray, k: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images).unsqueeze(1)
    with torch.no_grad():
        return torch.cat([torch.cat([transform(b, generator) for b in x.split(256)]) for _ in range(k)])


def describe(run, probe, clean: torch.Tensor, labels: torch.Tensor, views: torch.Tensor, k: int) -> dict:
    features = run.encode(views)
    predicted = probe(features).argmax(1)
    target = labels.repeat(k)
    accuracy = float((predicted == target).float().mean())
    n = len(target)
    cosine = F.cosine_similarity(features, clean.repeat(k, 1), dim=1)
    return {
        "accuracy": 100 * accuracy,
        "se": 100 * math.sqrt(accuracy * (1 - accuracy) / n),
        "cosine": float(cosine.mean()),
        "norm": float(features.norm(dim=1).mean()),
        "pixel_mean": float(views.mean()),
        "at_0": float((views == 0).float().mean()),
        "at_1": float((views >= 1).float().mean()),
    }


def probe_streams(run, streams: int) -> None:
    """Refit the run's last-task probe ``streams`` times per view source; print class-IL accuracy per stream."""
    from scipy import stats

    method, task = run.model, run._context
    cfg = method.config
    images, labels = method.evaluation_data(task)
    extra = method.classifier_only_rows(task)
    if extra is not None:
        images, labels = torch.cat([images, extra[0]]), torch.cat([labels, extra[1]])
    test_images = torch.cat([t.test_images for t in run.scenario.tasks])
    test_labels = torch.cat([t.test_labels for t in run.scenario.tasks])
    pil = images[:, 0].numpy()
    clean_probe_rows = run.encode(images)
    tv = torchvision_sources(images.shape[-1])["both"]

    def fit_and_score(epoch_features) -> float:
        probe = fit_linear_probe(
            clean_probe_rows,
            labels,
            method.num_classes,
            epochs=cfg.probe_epochs,
            lr=cfg.probe_lr,
            batch_size=cfg.probe_batch_size,
            class_balanced=cfg.probe_class_balanced,
            seed=task.index,
            schedule=cfg.probe_schedule,
            min_steps=cfg.probe_min_steps,
            epoch_features=epoch_features,
        )
        predicted = probe(run.encode(test_images)).argmax(1)
        return 100 * float((predicted == test_labels).float().mean())

    results = {"protosphere": [], "torchvision": []}
    for stream in range(streams):
        method.run_seed = 1000 + stream
        with torch.no_grad():
            results["protosphere"].append(
                fit_and_score(lambda epoch, rows: method.augmented_probe_features(images[rows], task.index, epoch))
            )
        results["torchvision"].append(
            fit_and_score(
                lambda epoch, rows, stream=stream: run.encode(
                    torchvision_views(tv, pil[rows.numpy()], 1, 1_000_003 * stream + epoch)
                )
            )
        )
        print(
            f"stream {stream}: protosphere {results['protosphere'][-1]:.2f}  torchvision "
            f"{results['torchvision'][-1]:.2f}",
            flush=True,
        )
    a, b = np.array(results["protosphere"]), np.array(results["torchvision"])
    p = stats.ttest_ind(a, b, equal_var=False).pvalue if streams > 1 else float("nan")
    print(
        f"\nthe run's last-task probe, class-IL over all test tasks, {streams} streams per source: protosphere "
        f"{a.mean():.2f} ± {a.std(ddof=1) if streams > 1 else 0:.2f}, torchvision {b.mean():.2f} ± "
        f"{b.std(ddof=1) if streams > 1 else 0:.2f}; Welch p {p:.3f}"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished protosphere run folder (its last checkpoint)")
    p.add_argument("--images", type=int, default=4000, help="training images used (default 4000)")
    p.add_argument("--views", type=int, default=4, help="views per image and source (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--probe-streams",
        type=int,
        default=0,
        help="also refit the run's last-task probe on this many augmentation streams per source",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    common.import_torchvision()
    run = protosphere.load_run(args.run)
    scenario = run.scenario
    images, labels = common.scenario_arrays(scenario, 1.0, 0)["train"]
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(labels), size=min(args.images, len(labels)), replace=False)
    images, labels = np.ascontiguousarray(images[pick]), torch.as_tensor(labels[pick]).long()
    clean = run.encode(torch.from_numpy(images).unsqueeze(1))
    probe = fit_linear_probe(clean, labels, int(labels.max()) + 1, epochs=30, lr=0.1, seed=args.seed)
    size = images.shape[1]
    print(
        f"run {args.run}; {len(images)} training images x {args.views} views per source; fixed probe fit on the "
        f"clean features: {100 * float((probe(clean).argmax(1) == labels).float().mean()):.2f} % on them\n"
    )
    print("| part | source | accuracy % (± s.e.) | cos(view, clean) | ‖feature‖ | pixel mean | at 0 | at 1 |")
    print("|---|---|---|---|---|---|---|---|")
    ours = protosphere_sources(size, scenario.mean, scenario.std)
    theirs = torchvision_sources(size)
    for part in ("crop", "jitter", "both"):
        for source, views in (
            ("protosphere", protosphere_views(ours[part], images, args.views, args.seed)),
            ("torchvision", torchvision_views(theirs[part], images, args.views, args.seed)),
        ):
            r = describe(run, probe, clean, labels, views, args.views)
            print(
                f"| {part} | {source} | {r['accuracy']:.2f} ± {r['se']:.2f} | {r['cosine']:.4f} | {r['norm']:.3f} "
                f"| {r['pixel_mean']:.4f} | {r['at_0']:.4f} | {r['at_1']:.4f} |",
                flush=True,
            )
    if args.probe_streams:
        print()
        probe_streams(run, args.probe_streams)


if __name__ == "__main__":
    main()
