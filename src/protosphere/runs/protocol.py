"""The evaluation protocol: everything computed after a task or an epoch of a continual run.

After every task the method fits its classifiers on the data it may keep (:meth:`Method.prepare_evaluation`: class
means, a linear probe on current task + buffer, a kNN bank), and each classifier is scored on the test data of every
task: row t of the accuracy matrix ``A[t, j]``, class-IL and — when tasks own disjoint classes — task-IL (the argmax
over the task's own classes). Then come the neural-collapse metrics on test features of the seen classes, the method's
diagnostics, and after the last task the headline classifier's confusion matrix, the corruption suite and the
embedding snapshot for the report. Before any training, the same classifiers on the untrained model give FWT's
baseline ``b_j`` (Lopez-Paz & Ranzato, GEM, NeurIPS 2017); :func:`summary_metrics` turns the matrices into final and
average incremental accuracy, forgetting, BWT and FWT.

Scores are computed with :mod:`protosphere.evaluation` (:func:`~protosphere.evaluation.extract_features` batches a
classifier or an encoder over a test set, :func:`~protosphere.evaluation.accuracy` scores the logits), and test
images reach the network through :func:`~protosphere.data.scenarios.model_input`, as training batches do.

The protocol keeps what it measured in :attr:`Protocol.evaluation`, an :class:`~protosphere.runs.record.Evaluation`
whose parts are typed as they are measured (so a misspelt key fails at once, not when results.json is written) and which
every checkpoint saves, so a resumed run continues it; after the last task :meth:`Protocol.run_results` adds what
the run was and its continual metrics. It knows nothing of devices beyond the one it evaluates on (test images kept
there when they fit the run's device budget, else copied to it one evaluation batch at a time), of files, or of
losses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..config import RunConfig
from ..data.corruptions import evaluate_corruptions
from ..data.scenarios import model_input
from ..data.streaming import DeviceBudget, nbytes, to_device
from ..evaluation import accuracy, extract_features
from ..methods.base import Method, TaskContext
from ..metrics.continual import summarize
from ..metrics.neural_collapse import neural_collapse
from .record import (
    ClassifierTiming,
    Confusion,
    Diagnostics,
    EpochEvaluation,
    Evaluation,
    NeuralCollapse,
    Row,
    RunResults,
    ScenarioInfo,
    Summary,
    TaskTiming,
)


@dataclass
class TaskTraining:
    """What training one task measured: wall seconds (per-epoch evaluations included) and images seen (all ranks)."""

    seconds: float
    images: int

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


@dataclass
class TaskEvaluation:
    """The evaluation after one task: accuracy row ``{classifier: {class_il|task_il: [T]}}``, NC metrics, seconds."""

    row: Row
    neural_collapse: NeuralCollapse | None
    seconds: float

    @property
    def headline(self) -> str:
        return next(iter(self.row))


class _Silent:
    """Stands in for the metrics log and the progress display when a caller has none."""

    plain = False

    def log(self, *args, **kwargs) -> None:
        pass

    def start_evaluation(self, *args, **kwargs) -> None:
        pass

    def evaluation_step(self, *args, **kwargs) -> None:
        pass

    def end_evaluation(self) -> float:
        return 0.0


def summary_metrics(accuracy_matrices: dict, random_init: dict | None, kind: str) -> dict[str, dict[str, Summary]]:
    """:func:`~protosphere.metrics.continual.summarize` of every classifier's class-IL / task-IL matrix, FWT against
    the untrained model's accuracies. FWT is not defined in class-IL (a task's classes cannot be predicted before
    it)."""
    metrics: dict = {}
    for classifier, settings in accuracy_matrices.items():
        metrics[classifier] = {}
        for setting, matrix in settings.items():
            baseline = random_init[classifier][setting] if random_init and classifier in random_init else None
            if kind == "class_il" and setting == "class_il":
                baseline = None
            metrics[classifier][setting] = Summary(**summarize(matrix, baseline))
    return metrics


class Protocol:
    """The evaluation protocol of one run.

    Args:
        config: the run's config (``eval`` section, ``model.channels_last``).
        scenario: the run's scenario; its test labels are moved to ``device`` once, and so are its test images when
            they all fit ``budget`` (a :class:`~protosphere.data.streaming.DeviceBudget`, whose bytes they then take
            for the run; none: they are moved), else each evaluation batch is copied to ``device`` as it is used.
        evaluation: the evaluation to continue (a resumed run's, as its checkpoint saved it), else a new one.
        log: where measurements go (``log(split, values, task, epoch=None)``, e.g. the engine's metrics.csv).
        progress: the run's progress display (``start_evaluation`` / ``evaluation_step`` / ``end_evaluation``).
        write_embeddings: ``(features, labels, prototypes_or_weights)`` → the run's embedding snapshot; none: no
            snapshot is taken.
    """

    def __init__(
        self,
        config: RunConfig,
        scenario,
        device=None,
        evaluation: Evaluation | dict | None = None,
        log=None,
        progress=None,
        write_embeddings: Callable | None = None,
        budget: DeviceBudget | None = None,
    ):
        self.config = config
        self.scenario = scenario
        self.device = device
        whole = budget is None or budget.reserve(sum(nbytes(t.test_images) for t in scenario.tasks))
        self.test_sets = [
            (t.test_images.to(device) if whole else t.test_images, t.test_labels.to(device)) for t in scenario.tasks
        ]
        self.evaluation = evaluation if isinstance(evaluation, Evaluation) else Evaluation.of(evaluation)
        self.log = log or _Silent()
        self.progress = progress or _Silent()
        self.write_embeddings = write_embeddings

    # building blocks ---------------------------------------------------------------------------------------------
    def on_device(self, batch: torch.Tensor) -> torch.Tensor:
        """An evaluation batch on the device it is evaluated on (a copy when the test images wait on the host)."""
        return to_device(batch, self.device)

    def logits(self, classify: Callable, images: torch.Tensor) -> torch.Tensor:
        """(N, C) float logits of ``classify`` on uint8 ``images``, in evaluation batches."""
        channels_last = self.config.model.channels_last
        dtype = torch.get_default_dtype()  # float32, or float64 in a float64 run
        return extract_features(
            lambda batch: classify(model_input(self.on_device(batch), channels_last)).to(dtype),
            images,
            self.config.eval.batch_size,
        )

    @torch.no_grad()
    def accuracy_row(
        self, method: Method, up_to: int, prepare: TaskContext | None = None
    ) -> tuple[dict, dict[str, float]]:
        """Accuracy (%) of every classifier on the test sets of tasks 0..``up_to`` — ``{classifier: {class_il:
        [..], task_il: [..]}}`` (task-IL only for class-IL scenarios) — after fitting the classifiers on ``prepare``,
        and the seconds each classifier took to predict."""
        was_training = method.training
        method.eval()
        if prepare is not None:
            self.progress.evaluation_step("fitting classifiers", advance=0)
            method.prepare_evaluation(prepare)
        self.progress.evaluation_step("fitting classifiers")
        task_il = self.scenario.task_il
        row: dict = {}
        predict_seconds: dict[str, float] = {}
        for name, classify in method.classifiers().items():
            method.synchronize()
            predict_start = time.perf_counter()
            scores: dict[str, list[float]] = {"class_il": [], **({"task_il": []} if task_il else {})}
            for j, (images, labels) in enumerate(self.test_sets[: up_to + 1]):
                logits = self.logits(classify, images)
                scores["class_il"].append(accuracy(logits, labels))
                if task_il:  # the argmax over the task's own classes
                    classes = torch.tensor(self.scenario.tasks[j].classes, device=labels.device)
                    within = torch.full((self.scenario.num_classes,), -1, dtype=torch.long, device=labels.device)
                    within[classes] = torch.arange(len(classes), device=labels.device)
                    scores["task_il"].append(accuracy(logits[:, classes], within[labels]))
                self.progress.evaluation_step(f"{name}: test task {j + 1}/{up_to + 1}")
            method.synchronize()
            predict_seconds[name] = time.perf_counter() - predict_start
            row[name] = scores
        method.train(was_training)
        return row, predict_seconds

    @torch.no_grad()
    def neural_collapse(self, method: Method, task: int) -> NeuralCollapse | None:
        """NC metrics (:func:`~protosphere.metrics.neural_collapse.neural_collapse`) on test-split encoder features of
        the classes seen after ``task``, with the method's classifier weights for NC3/NC4; None below two classes."""
        seen = self.scenario.classes_up_to(task)
        if len(seen) < 2:
            return None
        was_training = method.training
        method.eval()
        tasks = range(task + 1) if self.scenario.kind == "class_il" else [task]
        # the contiguous layout, in which the published NC metrics were measured
        encode = lambda batch: method.features(model_input(self.on_device(batch))).float().cpu()  # noqa: E731
        features = torch.cat(
            [extract_features(encode, self.test_sets[j][0], self.config.eval.batch_size) for j in tasks]
        )
        labels = torch.cat([self.test_sets[j][1].cpu() for j in tasks])
        remap = torch.full((self.scenario.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(seen)] = torch.arange(len(seen))
        weights = method.classifier_weights()
        if weights is not None:
            weights = weights.detach().float().cpu()[torch.tensor(seen)]
        metrics = neural_collapse(features, remap[labels], weights)
        method.train(was_training)
        return NeuralCollapse(split="test", classes=len(seen), **metrics)

    def units(self, method: Method, num_tasks: int, nc: bool = False, final: bool = False) -> int:
        """Units of the evaluation bar: classifier fits, one per classifier and test task, NC metrics, extras."""
        return 1 + len(method.classifiers()) * num_tasks + int(nc) + int(final)

    # the protocol's moments --------------------------------------------------------------------------------------
    def random_init_baseline(self, method: Method, context: TaskContext) -> None:
        """FWT's ``b_j``: the untrained model under the same classifiers (fitted on task 0 where they need data) on
        every task's test set, once per run (``eval.random_init_baseline``)."""
        if self.evaluation.random_init is not None or not self.config.eval.random_init_baseline:
            return
        last = self.scenario.num_tasks - 1
        self.progress.start_evaluation("evaluating the untrained model", self.units(method, last + 1), count=False)
        self.evaluation.random_init = self.accuracy_row(method, up_to=last, prepare=context)[0]
        self.progress.end_evaluation()

    def after_epoch(self, method: Method, context: TaskContext, epoch: int) -> None:
        """``eval.per_epoch``: accuracy on the tasks seen so far and NC metrics after an epoch that ends no task."""
        task = context.index
        self.progress.start_evaluation(f"evaluating epoch {epoch + 1}", self.units(method, task + 1), count=False)
        row = self.accuracy_row(method, up_to=task, prepare=context)[0]
        nc = self.neural_collapse(method, task) if self.config.eval.neural_collapse else None
        self.progress.end_evaluation()
        self.evaluation.per_epoch.append(EpochEvaluation(task=task, epoch=epoch, accuracy=row, neural_collapse=nc))
        values = {f"{c}/{s}/mean_seen": float(np.mean(a[: task + 1])) for c, ss in row.items() for s, a in ss.items()}
        values.update(_nc_values(nc))
        self.log.log("epoch", values, task, epoch)

    def after_task(self, method: Method, context: TaskContext, training: TaskTraining) -> TaskEvaluation:
        """The evaluation after a task: a new row of every accuracy matrix (all tasks' test sets), NC metrics,
        diagnostics and timings; after the last task also :meth:`final_extras`."""
        cfg, t = self.config, context.index
        num_tasks = self.scenario.num_tasks
        last = t == num_tasks - 1
        start = time.perf_counter()
        self.progress.start_evaluation(
            f"evaluating after task {t + 1}", self.units(method, num_tasks, cfg.eval.neural_collapse, last)
        )
        row, predict_seconds = self.accuracy_row(method, up_to=num_tasks - 1, prepare=context)
        self.evaluation.add_row(row)
        nc = None
        if cfg.eval.neural_collapse:
            self.progress.evaluation_step("neural-collapse metrics", advance=0)
            nc = self.neural_collapse(method, t)
            self.progress.evaluation_step("neural-collapse metrics")
        self.evaluation.neural_collapse.append(nc)
        self._diagnostics(method, context)
        seconds = time.perf_counter() - start
        self.evaluation.timings.tasks.append(_timing(method, t, training, seconds, predict_seconds))
        self._log_task(t, row, nc)
        if cfg.eval.per_epoch:
            epoch = cfg.train.epochs_for(t) - 1
            self.evaluation.per_epoch.append(EpochEvaluation(task=t, epoch=epoch, accuracy=row, neural_collapse=nc))
        if last:
            self.progress.evaluation_step("corruptions and embeddings", advance=0)
            self.final_extras(method)
            self.progress.evaluation_step("corruptions and embeddings")
        self.progress.end_evaluation()
        return TaskEvaluation(row, nc, seconds)

    def _diagnostics(self, method: Method, context: TaskContext) -> None:
        with torch.no_grad():
            diagnostics = method.diagnostics(context)
        self.evaluation.diagnostics.append(None if diagnostics is None else Diagnostics.model_validate(diagnostics))
        if diagnostics:
            self.log.log(
                "test", {f"diag/{k}": v for k, v in diagnostics.items() if isinstance(v, (int, float))}, context.index
            )

    def _log_task(self, t: int, row: Row, nc: NeuralCollapse | None) -> None:
        """metrics.csv after task ``t``: accuracy on each seen task and their mean, per classifier and setting; NC."""
        self.log.log(
            "test",
            {
                f"{c}/{s}/task{j}": a
                for c, ss in row.items()
                for s, accs in ss.items()
                for j, a in enumerate(accs)
                if j <= t
            },
            t,
        )
        self.log.log(
            "test",
            {f"{c}/{s}/mean_seen": float(np.mean(accs[: t + 1])) for c, ss in row.items() for s, accs in ss.items()},
            t,
        )
        if nc is not None:
            self.log.log("test", _nc_values(nc), t)

    def run_results(self, method: Method) -> RunResults:
        """After the last task: what the run was (config, scenario, which data each classifier was fitted on), its
        evaluation and the continual metrics of every classifier."""
        cfg, scenario, evaluation = self.config, self.scenario, self.evaluation
        info = ScenarioInfo(
            name=scenario.name,
            kind=scenario.kind,
            num_tasks=scenario.num_tasks,
            num_classes=scenario.num_classes,
            class_order=scenario.class_order,
            class_names=scenario.class_names,
            tasks=[list(t.classes) for t in scenario.tasks],
            **scenario.extra,
        )
        return RunResults(
            name=cfg.name,
            status="complete",
            seed=cfg.seed,
            method=cfg.method.name,
            headline_classifier=next(iter(evaluation.accuracy)),
            classifier_data={
                name: text for name, text in method.classifier_data().items() if name in evaluation.accuracy
            },
            scenario=info,
            metrics=summary_metrics(evaluation.accuracy, evaluation.random_init, scenario.kind),
            evaluation=evaluation,
            config=cfg.model_dump(mode="json"),
        )

    @torch.no_grad()
    def final_extras(self, method: Method) -> None:
        """After the last task: corruption robustness, the confusion matrix and the embedding snapshot, on the test
        data of the seen tasks (all of them in class-IL, the last one where every task has every class)."""
        cfg = self.config
        was_training = method.training
        method.eval()
        num_tasks = self.scenario.num_tasks
        seen = range(num_tasks) if self.scenario.kind == "class_il" else [num_tasks - 1]
        images = torch.cat([self.test_sets[j][0] for j in seen])
        labels = torch.cat([self.test_sets[j][1] for j in seen])
        if cfg.eval.corruptions:
            self.evaluation.corruptions = self.corruptions(method, images, labels)
        self.evaluation.confusion = self.confusion(method, images, labels)
        if cfg.eval.embeddings and self.write_embeddings is not None:
            prototypes = getattr(method, "prototypes", None)
            embed = (lambda x: method(method.transforms.eval(x))) if prototypes is not None else method.features
            channels_last = cfg.model.channels_last
            features = extract_features(
                lambda batch: embed(model_input(self.on_device(batch), channels_last)).float().cpu(),
                images,
                cfg.eval.batch_size,
            )
            weights = prototypes if prototypes is not None else method.classifier_weights()
            self.write_embeddings(features, labels.cpu(), None if weights is None else weights.detach().float().cpu())
        method.train(was_training)

    def corruptions(self, method: Method, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Top-1 error (%) per corruption and severity (:func:`~protosphere.data.corruptions.evaluate_corruptions`)
        of the headline classifier, or of every classifier with ``eval.corruption_classifiers: all``."""
        cfg = self.config
        classifiers = method.classifiers()
        if cfg.eval.corruption_classifiers == "headline":
            classifiers = dict([next(iter(classifiers.items()))])
        channels_last = cfg.model.channels_last
        return {
            name: evaluate_corruptions(
                lambda x, c=classify: c(model_input(x, channels_last)),
                images,
                labels,
                cfg.eval.corruptions,
                cfg.eval.corruption_severities,
                batch_size=cfg.eval.batch_size,
                seed=cfg.seed,
                place=self.on_device,
            )
            for name, classify in classifiers.items()
        }

    def confusion(self, method: Method, images: torch.Tensor, labels: torch.Tensor) -> Confusion:
        """Confusion matrix of the headline classifier: ``matrix[a][b]`` = test images of class ``classes[a]``
        predicted as ``classes[b]`` (per-class accuracy = diagonal / row sum). Predictions outside the classes present
        are counted in a last column, ``other``."""
        name, classify = next(iter(method.classifiers().items()))
        classes = sorted({int(c) for c in labels.unique().tolist()})
        index = torch.full((self.scenario.num_classes,), len(classes), dtype=torch.long, device=labels.device)
        index[torch.tensor(classes, device=labels.device)] = torch.arange(len(classes), device=labels.device)
        predicted = self.logits(classify, images).argmax(1)
        rows, cols = index[labels], index[predicted]
        counts = torch.zeros(len(classes), len(classes) + 1, dtype=torch.long, device=labels.device)
        counts.index_put_((rows, cols), torch.ones_like(rows), accumulate=True)
        return Confusion(
            classifier=name,
            classes=classes,
            matrix=counts[:, : len(classes)].tolist(),
            other=counts[:, len(classes)].tolist(),
        )


def _timing(
    method: Method, task: int, training: TaskTraining, eval_seconds: float, predict_seconds: dict[str, float]
) -> TaskTiming:
    """What a task cost: training, evaluation, and each classifier's fit and prediction."""
    classifiers = {
        name: ClassifierTiming(fit_s=method.fit_seconds.get(name, 0.0), predict_s=seconds)
        for name, seconds in predict_seconds.items()
    }
    if "encode" in method.fit_seconds:
        classifiers["encode"] = ClassifierTiming(fit_s=method.fit_seconds["encode"], predict_s=0.0)
    return TaskTiming(
        task=task,
        train_s=training.seconds,
        eval_s=eval_seconds,
        images=training.images,
        img_per_s=training.images_per_second,
        classifiers=classifiers,
    )


def _nc_values(nc: NeuralCollapse | None) -> dict[str, float]:
    """The NC metrics as metrics.csv logs them (``nc/<key>``, the number of classes included)."""
    if nc is None:
        return {}
    return {f"nc/{k}": v for k, v in nc.model_dump(exclude_unset=True).items() if isinstance(v, (int, float))}
