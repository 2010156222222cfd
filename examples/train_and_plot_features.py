"""Train a short continual run, open it again, and look at what it learned.

Trains the shipped recipe ``seq-fmnist/fnc2`` (FNC2 + HSD: focal neural-collapse contrast onto a fixed simplex ETF,
5 tasks × 2 classes, 5 epochs per task) on scikit-learn's bundled 8×8 digits instead of Fashion-MNIST. Then it opens
the finished run with ``protosphere.load_run``, encodes and classifies the test images of every task (``run.encode``,
``run.predict``), prints the final accuracies the run recorded (``run.results``) beside those of ``predict``, and
plots the representation into ``features.png``: the unit-norm projections on the plane of their two main directions,
coloured by class, with the fixed prototypes marked (the encoder features for a method without prototypes).

Run it (about 20 s on one CPU core; needs scikit-learn for the digits)::

    python train_and_plot_features.py                # the run folder goes into a temporary directory
    python train_and_plot_features.py runs/example   # keep it (config.yaml, results.json, checkpoints ...)

Scale it up: ``--dataset fashion_mnist`` trains the recipe as shipped (Seq-FashionMNIST, 60,000 28×28 images; about
5 min on 2 CPU cores; ``protosphere datasets --ensure fashion_mnist`` fetches the data); ``--config`` takes any other
shipped config or YAML file (``protosphere configs`` lists them, ``protosphere config NAME`` prints one) and
``--epochs`` changes the epochs per task.
"""

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files; no window
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import protosphere


def main_plane(points: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Coordinates (N, 2) of the unit vectors ``points`` (N, d) on the plane of their two main directions (uncentred
    PCA: the origin stays the centre of the sphere), and of ``others`` (M, d) on the same plane. A row that lies in
    the plane lands on the unit circle; one pointing away from it lands inside."""
    _, _, vh = torch.linalg.svd(points, full_matrices=False)
    return [x @ vh[:2].T for x in (points, *others)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", nargs="?", help="where the run folder goes (default: a temporary directory)")
    parser.add_argument("--config", default="seq-fmnist/fnc2", help="a shipped config's name or a YAML file")
    parser.add_argument("--dataset", default="digits", help="e.g. fashion_mnist (`protosphere datasets` lists them)")
    parser.add_argument("--epochs", type=int, help="epochs per task (default: the config's)")
    parser.add_argument("--plot", default="features.png", help="the PNG to write")
    args = parser.parse_args()
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="protosphere-")

    # the recipe with overrides, as `protosphere run seq-fmnist/fnc2 data.dataset=digits ...` would
    # report off: this script draws its own picture; `protosphere report RUN_DIR` writes report.html later if wanted
    overrides = {"data": {"dataset": args.dataset}, "output_dir": output_dir, "eval": {"report": "off"}}
    if args.epochs is not None:
        overrides["train"] = {"epochs": args.epochs}
    # overwrite: replaces an earlier run of this example in the same folder (and never anything else)
    finished = protosphere.run(args.config, overwrite=True, **overrides)

    # later, in another session or notebook: the run's config, results and trained model
    run = protosphere.load_run(finished.run_dir)
    print(f"run folder: {run.run_dir}")
    print(f"classifiers: {', '.join(run.classifiers)} (headline: {run.headline_classifier})")
    for name in run.classifiers:
        class_il = run.results["metrics"][name]["class_il"]
        print(f"final average class-IL accuracy, {name}: {class_il['final_average_accuracy']:.2f} %")

    # predict reproduces the run's last row of the accuracy matrix (headline classifier)
    last_row = run.accuracy()[-1]
    for j, task in enumerate(run.scenario.tasks):
        predicted = run.predict(task.test_images)  # uint8 (N, C, H, W), as the dataset holds them
        accuracy = 100 * (predicted == task.test_labels).double().mean().item()
        print(f"task {j} (classes {list(task.classes)}): predict {accuracy:.2f} %, run {last_row[j]:.2f} %")

    images = torch.cat([task.test_images for task in run.scenario.tasks])
    labels = torch.cat([task.test_labels for task in run.scenario.tasks])
    features = run.encode(images)  # (N, d) encoder features
    model = run.model  # the trained method after the last task, eval mode
    prototypes = getattr(model, "prototypes", None)
    if prototypes is not None and hasattr(model, "projector"):
        with torch.no_grad():  # the prototypes live in projection space: project the features there
            points = F.normalize(model.projector(features), dim=1)
        xy, marks = main_plane(points, prototypes)
        title = "unit-norm projections and the fixed prototypes (★)"
    else:
        (xy,), marks = main_plane(F.normalize(features, dim=1)), None
        title = "unit-norm encoder features"

    k = run.scenario.num_classes
    colours = {"cmap": "tab10" if k <= 10 else "turbo", "vmin": -0.5, "vmax": k - 0.5}  # one colour per class
    figure, axes = plt.subplots(figsize=(6, 6))
    scatter = axes.scatter(xy[:, 0], xy[:, 1], c=labels, s=8, alpha=0.7, **colours)
    if marks is not None:
        axes.scatter(marks[:, 0], marks[:, 1], c=range(k), marker="*", s=300, edgecolors="black", **colours)
    axes.add_patch(plt.Circle((0, 0), 1, fill=False, color="grey", linewidth=0.8))  # the sphere's equator
    axes.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), aspect="equal", xlabel="1st main direction", ylabel="2nd")
    figure.colorbar(scatter, ax=axes, label="class")
    axes.set_title(f"{run.record.method} on {args.dataset}, after the last task:\n{title}", fontsize=10)
    figure.savefig(args.plot, dpi=120, bbox_inches="tight")
    print(f"wrote {Path(args.plot).resolve()} ({len(images)} test images)")


if __name__ == "__main__":
    main()
