"""Measurements of a network's features outside a run's own evaluation: the untrained network a run started from,
neural collapse on the training features of a finished one-task run, and the untrained floor of a config's
classifiers. ``benchmarks/analysis/`` prints them for docs/results.md (``nc_train_features.py``,
``untrained_floor.py``); they live here so that the tests check the numbers those pages publish.
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import torch


@torch.no_grad()
def train_feature_metrics(run) -> dict[str, float]:
    """NC metrics of ``run.model`` (a :class:`protosphere.Run`'s final model, or :func:`untrained_run`'s) on the
    training images of its last (for one-task runs: only) task, encoded as the evaluation encodes test images (eval
    mode, no augmentation), with the method's classifier weights."""
    from ..data.scenarios import model_input
    from ..evaluation import extract_features
    from ..metrics.neural_collapse import neural_collapse

    method = run.model
    task = run.scenario.tasks[-1]

    def encode(batch):  # as the Protocol does
        return method.features(model_input(batch)).float().cpu()

    features = extract_features(encode, task.train_images, run.config.eval.batch_size)
    classes = torch.tensor(sorted(task.classes))
    remap = torch.full((run.scenario.num_classes,), -1, dtype=torch.long)
    remap[classes] = torch.arange(len(classes))
    labels = remap[task.train_labels]
    weights = method.classifier_weights()
    weights = None if weights is None else weights.detach().float().cpu()[classes]
    return neural_collapse(features, labels, weights)


def untrained_run(config) -> SimpleNamespace:
    """The network a run of ``config`` started from (its seed, built the way the runner builds it), in eval mode, as
    ``model``, ``scenario`` and ``config``."""
    from lightning_fabric.utilities.seed import seed_everything

    from ..runs.runner import build_method, build_scenario_from_config

    seed_everything(config.seed, verbose=False)
    scenario = build_scenario_from_config(config)
    method = build_method(config, scenario).eval()
    return SimpleNamespace(model=method, scenario=scenario, config=config)


def untrained_floor(config) -> dict[str, float]:
    """Mean over tasks of each classifier's class-IL accuracy after the last task, with the classifiers fitted on the
    untrained network of ``config`` (its seed): what the evaluation protocol gives with no learning at all."""
    from ..methods.base import TaskContext
    from ..runs.protocol import Protocol
    from ..runs.runner import build_method, build_scenario_from_config

    torch.manual_seed(config.seed)
    scenario = build_scenario_from_config(config)
    method = build_method(config, scenario)
    last = scenario.num_tasks - 1
    row, _ = Protocol(config, scenario).accuracy_row(method, up_to=last, prepare=TaskContext.of(scenario, last))
    return {name: statistics.mean(scores["class_il"]) for name, scores in row.items()}
