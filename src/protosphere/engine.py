"""The continual loop: tasks → epochs → steps, evaluation after every task, checkpoints, logs.

The engine owns devices, processes, precision, files and progress display (through lightning-fabric and rich); it
knows nothing of losses. A method sees batches, a :class:`~protosphere.methods.base.StepContext` and a ``gather``
function; the engine sees a scalar loss and a dict of detached loss terms.

Checkpoints (``checkpoints/last.ckpt``, plus ``task-<t>.ckpt`` at each task end; by default only the latest task
checkpoint is kept beside ``last.ckpt``, ``train.keep_checkpoints: true`` keeps them all) hold the method's state
(parameters, replay buffer, past-model snapshots, queues), optimiser, RNG states, progress and the evaluation so far. They are
written to a temporary file and renamed, so a crash never leaves a broken checkpoint in place of a good one, are
never written while a parameter or buffer holds NaN/inf (the run stops instead), and are read with
``weights_only=True``. Resuming re-runs ``begin_task`` of the interrupted task and then loads the saved
state over it, so every side effect of the hook is restored exactly; batch order is a function of (seed, task, epoch).
Under DDP a checkpoint also holds every rank's own state (RNG states, replay buffers), gathered to rank 0, and
``metrics.csv`` is cut back to what it held at the checkpoint, so a resumed run logs every step once.

Under DDP ``train.batch_size`` is the global batch: each rank trains on its own slice of it and methods see the
global batch through ``gather`` (see :mod:`protosphere.distributed` for why no loss scaling is needed); the loss and
terms it logs are means over the ranks, i.e. the global loss.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric

from .config import RunConfig, dump_config
from .distributed import gather_objects, gather_with_grad, rng_state, set_rng_state, shard_rows
from .errors import ConfigError, RunError
from .losses._checks import set_validation
from .methods.base import Method, StepContext, TaskContext
from .optim import build_optimizer, lr_factor, set_lr
from .progress import RunProgress, hms
from .version import __version__

CHECKPOINT_VERSION = 1


def config_fingerprint(config: RunConfig) -> str:
    """Hash of everything that changes the numbers (not the run's name, output place or devices)."""
    data = config.model_dump(mode="json")
    for key in ("name", "output_dir"):
        data.pop(key, None)
    data.pop("fabric", None)
    data.pop("logging", None)  # trackers only watch
    if data["data"].get("domains") is None:  # keys added later: at their defaults they keep earlier fingerprints
        data["data"].pop("domains", None)
    if data["eval"].get("probe_buffer_size") is None:
        data["eval"].pop("probe_buffer_size", None)
    data["train"].pop("log_every_n_steps", None)
    data["train"].pop("checkpoint_every_n_steps", None)
    data["train"]["keep_checkpoints"] = True  # changes no number; pinned to its old default so fingerprints stay
    data["eval"].pop("report", None)
    # options added later are left out at their defaults, so earlier runs keep their fingerprints
    for section, key, default in (("model", "init", "default"), ("train", "normalize", True),
                                   ("method", "classifier", "etf")):
        if data[section].get(key) == default:
            data[section].pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def nonfinite_names(state, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested state (a state_dict, extra state) holding NaN/inf."""
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        return [name for key, value in state.items()
                for name in nonfinite_names(value, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(state, (list, tuple)):
        return [name for i, value in enumerate(state) for name in nonfinite_names(value, f"{prefix}.{i}")]
    return []


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class MetricsLog:
    """metrics.csv in long form (one value per row), appended and flushed as the run goes."""

    FIELDS = ("time", "task", "epoch", "step", "split", "name", "value")

    def __init__(self, path: Path, enabled: bool = True, append: bool = False, truncate_to: int | None = None,
                 trackers=None):
        self.enabled = enabled
        self.start = time.time()
        self.trackers = trackers  # TensorBoard / W&B (protosphere.loggers.Trackers): the same rows, by global step
        self.global_step = 0
        if not enabled:
            return
        new = not (append and path.exists())
        if not new and truncate_to is not None and path.stat().st_size > truncate_to:
            with open(path, "r+b") as f:  # drop rows logged after the checkpoint we resume from
                f.truncate(truncate_to)
        self.file = open(path, "a" if not new else "w", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(self.FIELDS)

    def log(self, split: str, values: dict, task: int, epoch: int | None = None, step: int | None = None) -> None:
        if not self.enabled:
            return
        elapsed = f"{time.time() - self.start:.3f}"
        if self.trackers:
            self.trackers.log(split, values, self.global_step, task, epoch)
        for name, value in values.items():
            if value is None:
                continue
            self.writer.writerow((elapsed, task, "" if epoch is None else epoch, "" if step is None else step, split,
                                  name, f"{float(value):.6g}"))
        self.file.flush()

    def tell(self) -> int | None:
        return self.file.tell() if self.enabled else None

    def close(self, status: str = "success") -> None:
        if self.enabled:
            self.file.close()
        if self.trackers:
            self.trackers.close(status)


class Engine:
    def __init__(self, config: RunConfig, run_dir: Path, fabric: Fabric, console=None, show_progress: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        self.fabric = fabric
        self.console = console
        self.show_progress = show_progress and fabric is not None and fabric.is_global_zero
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.progress: RunProgress | None = None

    # ----------------------------------------------------------------------------------------------------------
    def fit(self, scenario, method: Method, resume: dict | None = None) -> dict:
        cfg, fabric = self.config, self.fabric
        device = fabric.device
        rank, world_size = fabric.global_rank, fabric.world_size
        if world_size > 1:
            if cfg.train.batch_size % world_size:
                raise ConfigError(f"train.batch_size={cfg.train.batch_size} is the global batch and must be divisible "
                                  f"by the number of processes ({world_size}); use a multiple of {world_size}.")
            method.install_collectives(gather=gather_with_grad(fabric))
            if resume is None and rank > 0:  # independent augmentations per rank (rank 0 keeps the 1-process stream)
                torch.manual_seed(cfg.seed + 1_000_003 * rank)
        if resume is not None and resume.get("world_size", 1) != world_size:
            raise RunError(f"The checkpoint was written by {resume.get('world_size', 1)} process(es) and this run has "
                           f"{world_size}; resume with the same fabric.devices and fabric.num_nodes.")
        method = method.to(device)
        if device.type == "cuda":
            method.install_collectives(synchronize=lambda: torch.cuda.synchronize(device))
        model = fabric.setup_module(method)
        model.mark_forward_method("training_step")
        test_sets = [(t.test_images.to(device), t.test_labels.to(device)) for t in scenario.tasks]

        state = resume or {}
        results = state.get("results") or {"accuracy": {}, "random_init": None, "neural_collapse": [],
                                           "timings": {"tasks": []}, "per_epoch": []}
        start_task = state.get("task", 0)
        in_task = state.get("phase") == "in_task"
        start_step = state.get("step", 0) if in_task else 0
        if state.get("phase") == "task_done":
            start_task += 1
        if state.get("method") is not None and not in_task:
            self._restore(state, method)

        def task_context(t: int) -> TaskContext:
            task = scenario.tasks[t]
            return TaskContext(
                index=t, classes=task.classes, seen_classes=scenario.classes_up_to(t), num_tasks=scenario.num_tasks,
                train_images=task.train_images.to(device), train_labels=task.train_labels.to(device),
                previous_classes=scenario.classes_up_to(t - 1) if t > 0 else [],
                previous=[(p.train_images, p.train_labels) for p in scenario.tasks[:t]],
            )

        global_step = state.get("global_step", 0)
        trackers = None
        if fabric.is_global_zero and (cfg.logging.tensorboard or cfg.logging.wandb is not None):
            from .loggers import Trackers, open_trackers

            trackers = Trackers(open_trackers(cfg, self.run_dir, resume_step=global_step if resume else None))
        log = MetricsLog(self.run_dir / "metrics.csv", enabled=fabric.is_global_zero, append=resume is not None,
                         truncate_to=state.get("metrics_bytes"), trackers=trackers)
        log.global_step = global_step
        self._log = log
        planned = [max(1, len(task.train_labels) // cfg.train.batch_size) * cfg.train.epochs_for(i)
                   for i, task in enumerate(scenario.tasks)]  # an estimate for later tasks (replay may add rows)
        progress = self.progress = RunProgress(self.console if fabric.is_global_zero else None, self.show_progress,
                                               scenario.num_tasks, planned)
        status = "failed"
        if results["random_init"] is None and cfg.eval.random_init_baseline:
            # the untrained model under the same classifiers (fitted on task 0 where they need data): FWT's b_j
            progress.start_evaluation("evaluating the untrained model", self._eval_units(method, scenario.num_tasks),
                                      count=False)
            results["random_init"] = self.evaluate(method, scenario, test_sets, up_to=scenario.num_tasks - 1,
                                                   prepare=task_context(0))
            progress.end_evaluation()

        # the losses check their inputs on the first step of a run (a bug shows at once); a resumed run passed that
        # check before, and a NaN/inf it meets now is a numerical failure, which the non-finite guard reports
        set_validation(resume is None)
        try:
            for t in range(start_task, scenario.num_tasks):
                context = task_context(t)
                method.train()
                method.begin_task(context)
                optimizer = fabric.setup_optimizers(build_optimizer(cfg.optimizer, method.parameters()))
                if in_task and t == start_task:
                    self._restore(state, method)
                    optimizer.load_state_dict(state["optimizer"])
                images, labels = method.training_data(context)
                images, labels = images.to(device), labels.to(device)
                epochs = cfg.train.epochs_for(t)
                batch = cfg.train.batch_size
                # an incomplete last batch is dropped (as in Co2L/Mammoth) unless it is the only one
                steps_per_epoch = max(1, len(labels) // batch)
                total = epochs * steps_per_epoch
                first = start_step if (in_task and t == start_task) else 0
                task_start, seen_images = time.perf_counter(), 0
                progress.start_task(t, total, first)
                epoch_loss, epoch_steps = None, 0  # the epoch's mean loss, for the plain line (no per-step sync)
                nonfinite: dict = {}  # term names -> step at which each first became non-finite (-1: never)
                for step in range(first, total):
                    epoch, index = divmod(step, steps_per_epoch)
                    if index == 0 or step == first:
                        order = epoch_order(cfg.seed, t, epoch, len(labels)).to(device)
                    rows = shard_rows(order[index * batch : (index + 1) * batch], rank, world_size)
                    x = images[rows].float().div_(255)
                    if cfg.model.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    set_lr(optimizer, cfg.optimizer.lr, lr_factor(cfg.optimizer, step, total, steps_per_epoch))
                    ctx = StepContext(task=t, epoch=epoch, step=step, steps_in_task=total, global_step=global_step,
                                      epochs_in_task=epochs)
                    output = model.training_step(x, labels[rows], ctx)
                    set_validation(False)  # the first step checked every loss input; later steps skip syncs
                    self._track_finite(nonfinite, output, step)
                    optimizer.zero_grad(set_to_none=True)
                    fabric.backward(output.loss)
                    optimizer.step()
                    global_step += 1
                    log.global_step = global_step
                    if progress.plain:
                        loss_now = output.loss.detach().float()
                        epoch_loss = loss_now if epoch_loss is None else epoch_loss + loss_now
                        epoch_steps += 1
                    seen_images += len(rows) * world_size
                    last = step == total - 1
                    every = cfg.train.checkpoint_every_n_steps
                    save = bool(every) and (step + 1) % every == 0 and not last
                    if save:
                        self._check_finite(nonfinite, t)  # never checkpoint a model that saw a NaN/inf loss
                    if (step + 1) % cfg.train.log_every_n_steps == 0 or last:
                        self._check_finite(nonfinite, t)
                        terms = self._global_terms(output)
                        speed = seen_images / max(1e-9, time.perf_counter() - task_start)
                        log.log("train", {**terms, "lr": optimizer.param_groups[0]["lr"], "img_per_s": speed},
                                t, epoch, step)
                        progress.train_step(step, epoch, epochs, terms["loss"], speed)
                    if progress.plain and ((step + 1) % steps_per_epoch == 0 or last):
                        progress.epoch_end(step, epoch, epochs, float(epoch_loss) / max(1, epoch_steps),
                                           optimizer.param_groups[0]["lr"],
                                           seen_images / max(1e-9, time.perf_counter() - task_start))
                        epoch_loss, epoch_steps = None, 0
                    if cfg.eval.per_epoch and (step + 1) % steps_per_epoch == 0 and not last:
                        self._epoch_evaluation(method, scenario, test_sets, context, results, log, t, epoch)
                    if save:
                        self._save("last.ckpt", method, optimizer, results, t, "in_task", step + 1, global_step)
                train_time = time.perf_counter() - task_start
                method.end_task(context)

                eval_start = time.perf_counter()
                progress.start_evaluation(f"evaluating after task {t + 1}",
                                          self._eval_units(method, scenario.num_tasks, cfg.eval.neural_collapse,
                                                           t == scenario.num_tasks - 1))
                row, predict_seconds = self._timed_evaluate(method, scenario, test_sets, up_to=scenario.num_tasks - 1,
                                                            prepare=context)
                for classifier, settings in row.items():
                    for setting, accuracies in settings.items():
                        results["accuracy"].setdefault(classifier, {}).setdefault(setting, []).append(accuracies)
                if cfg.eval.neural_collapse:
                    progress.evaluation_step("neural-collapse metrics", advance=0)
                nc = self.neural_collapse(method, scenario, test_sets, t) if cfg.eval.neural_collapse else None
                if cfg.eval.neural_collapse:
                    progress.evaluation_step("neural-collapse metrics")
                results["neural_collapse"].append(nc)
                with torch.no_grad():
                    diagnostics = method.diagnostics(context)
                results.setdefault("diagnostics", []).append(diagnostics)
                if diagnostics:
                    log.log("test", {f"diag/{k}": v for k, v in diagnostics.items() if isinstance(v, (int, float))}, t)
                eval_time = time.perf_counter() - eval_start
                classifier_s = {name: {"fit_s": method.fit_seconds.get(name, 0.0), "predict_s": seconds}
                                for name, seconds in predict_seconds.items()}
                if "encode" in method.fit_seconds:
                    classifier_s["encode"] = {"fit_s": method.fit_seconds["encode"], "predict_s": 0.0}
                results["timings"]["tasks"].append({"task": t, "train_s": train_time, "eval_s": eval_time,
                                                    "images": seen_images,
                                                    "img_per_s": seen_images / max(train_time, 1e-9),
                                                    "classifiers": classifier_s})
                headline = next(iter(row))
                log.log("test", {f"{c}/{s}/task{j}": a for c, ss in row.items() for s, accs in ss.items()
                                 for j, a in enumerate(accs) if j <= t}, t)
                log.log("test", {f"{c}/{s}/mean_seen": float(np.mean(accs[: t + 1])) for c, ss in row.items()
                                 for s, accs in ss.items()}, t)
                if nc:
                    log.log("test", {f"nc/{k}": v for k, v in nc.items() if isinstance(v, (int, float))}, t)
                if cfg.eval.per_epoch:
                    results["per_epoch"].append({"task": t, "epoch": epochs - 1, "accuracy": row, "neural_collapse": nc})
                if t == scenario.num_tasks - 1:
                    progress.evaluation_step("corruptions and embeddings", advance=0)
                    self._final_extras(method, scenario, test_sets, results)
                    progress.evaluation_step("corruptions and embeddings")
                progress.end_evaluation()
                self._save(f"task-{t}.ckpt", method, optimizer, results, t, "task_done", 0, global_step)
                if self.console is not None and fabric.is_global_zero:
                    seen = row[headline]["class_il"][: t + 1]
                    self.console.print(
                        f"[bold]task {t + 1}/{scenario.num_tasks}[/] {headline} class-IL accuracy on seen tasks: "
                        + " ".join(f"{a:.1f}" for a in seen) + f"  (mean {np.mean(seen):.2f}; "
                        f"train {train_time:.1f}s, {seen_images / max(train_time, 1e-9):,.0f} img/s; "
                        f"eval {eval_time:.1f}s; elapsed {hms(time.perf_counter() - progress.start)}"
                        + (f", ETA run ~{hms(progress.eta_run())}" if t < scenario.num_tasks - 1 else "") + ")")
                in_task = False
            status = "success"
        finally:
            progress.stop()
            log.close(status)
            set_validation(True)
        return results

    # ----------------------------------------------------------------------------------------------------------
    def _epoch_evaluation(self, method, scenario, test_sets, context, results, log, task, epoch) -> None:
        self.progress.start_evaluation(f"evaluating epoch {epoch + 1}", self._eval_units(method, task + 1),
                                       count=False)
        row = self.evaluate(method, scenario, test_sets, up_to=task, prepare=context)
        nc = self.neural_collapse(method, scenario, test_sets, task) if self.config.eval.neural_collapse else None
        self.progress.end_evaluation()
        results["per_epoch"].append({"task": task, "epoch": epoch, "accuracy": row, "neural_collapse": nc})
        values = {f"{c}/{s}/mean_seen": float(np.mean(a[: task + 1])) for c, ss in row.items() for s, a in ss.items()}
        if nc:
            values.update({f"nc/{k}": v for k, v in nc.items() if isinstance(v, (int, float))})
        log.log("epoch", values, task, epoch)

    @torch.no_grad()
    def _final_extras(self, method, scenario, test_sets, results) -> None:
        """After the last task: corruption robustness and an embedding snapshot for the report."""
        cfg = self.config
        was_training = method.training
        method.eval()
        seen = range(scenario.num_tasks) if scenario.kind == "class_il" else [scenario.num_tasks - 1]
        images = torch.cat([test_sets[j][0] for j in seen])
        labels = torch.cat([test_sets[j][1] for j in seen])
        if cfg.eval.corruptions:
            from .data.corruptions import evaluate_corruptions

            classifiers = method.classifiers()
            if cfg.eval.corruption_classifiers == "headline":
                classifiers = dict([next(iter(classifiers.items()))])
            results["corruptions"] = {
                name: evaluate_corruptions(lambda x, c=classify: c(self._eval_layout(x)), images, labels,
                                           cfg.eval.corruptions, cfg.eval.corruption_severities,
                                           batch_size=cfg.eval.batch_size, seed=cfg.seed)
                for name, classify in classifiers.items()
            }
        results["confusion"] = self._confusion(method, images, labels, scenario)
        if cfg.eval.embeddings and (self.fabric is None or self.fabric.is_global_zero):
            from .report import save_embedding_snapshot

            prototypes = getattr(method, "prototypes", None)
            embed = (lambda x: method(method.transforms.eval(x))) if prototypes is not None else method.features
            batch = cfg.eval.batch_size
            features = torch.cat([embed(self._eval_layout(images[i : i + batch].float().div(255))).float().cpu()
                                  for i in range(0, len(labels), batch)])
            weights = prototypes if prototypes is not None else method.classifier_weights()
            save_embedding_snapshot(self.run_dir, features, labels.cpu(),
                                    None if weights is None else weights.detach().float().cpu())
        method.train(was_training)

    def _confusion(self, method, images, labels, scenario) -> dict:
        """Confusion matrix of the headline classifier on the test data of the seen tasks after the last task:
        ``matrix[a][b]`` = test images of class ``classes[a]`` predicted as ``classes[b]`` (per-class accuracy =
        diagonal / row sum). Predictions outside the seen classes are counted in a last column, ``other``."""
        name, classify = next(iter(method.classifiers().items()))
        classes = sorted({int(c) for c in labels.unique().tolist()})
        index = torch.full((scenario.num_classes,), len(classes), dtype=torch.long, device=labels.device)
        index[torch.tensor(classes, device=labels.device)] = torch.arange(len(classes), device=labels.device)
        counts = torch.zeros(len(classes), len(classes) + 1, dtype=torch.long, device=labels.device)
        batch = self.config.eval.batch_size
        for start in range(0, len(labels), batch):
            predicted = classify(self._eval_layout(images[start : start + batch].float().div(255))).argmax(1)
            rows, cols = index[labels[start : start + batch]], index[predicted]
            counts.index_put_((rows, cols), torch.ones_like(rows), accumulate=True)
        return {"classifier": name, "classes": classes, "matrix": counts[:, : len(classes)].tolist(),
                "other": counts[:, len(classes)].tolist()}

    def _eval_layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.config.model.channels_last else x

    # ----------------------------------------------------------------------------------------------------------
    @staticmethod
    def _track_finite(nonfinite: dict, output, step: int) -> None:
        """Record, without a host sync, the first step at which the loss or each of its terms is NaN/inf."""
        names = ("loss", *output.terms)
        values = torch.stack([output.loss.detach().float().reshape(()),
                              *(v.detach().float().reshape(()) for v in output.terms.values())])
        first = nonfinite.get(names)
        if first is None:
            first = nonfinite[names] = torch.full((len(names),), -1, dtype=torch.long, device=values.device)
        nonfinite[names] = torch.where((first < 0) & ~torch.isfinite(values), step, first)

    def _global_terms(self, output) -> dict[str, float]:
        """The loss and its terms as logged: under DDP the mean over ranks (the global loss for per-rank terms such as
        a cross-entropy on local rows; unchanged for losses every rank computes on the gathered batch)."""
        loss = output.loss.detach().float().reshape(())
        values = torch.stack([loss, *(v.detach().float().reshape(()).to(loss.device) for v in output.terms.values())])
        if self.fabric.world_size > 1:
            values = self.fabric.all_reduce(values, reduce_op="mean")
        return dict(zip(("loss", *output.terms), values.tolist()))

    def _check_finite(self, nonfinite: dict, task: int) -> None:
        bad: dict[str, int] = {}
        for names, first in nonfinite.items():
            if self.fabric.world_size > 1:  # every rank stops together, at the earliest bad step of any rank
                never = torch.iinfo(torch.long).max
                first = self.fabric.all_reduce(torch.where(first < 0, never, first),
                                               reduce_op=torch.distributed.ReduceOp.MIN)
                first = torch.where(first == never, -1, first)
            for name, step in zip(names, first.tolist()):
                if step >= 0:
                    bad[name] = min(step, bad.get(name, step))
        if not bad:
            return
        step = min(bad.values())
        terms = [name for name, s in bad.items() if s == step and name != "loss"] or ["loss"]
        raise RunError(f"The loss became NaN/inf at task {task}, step {step} (non-finite term: {', '.join(terms)}); "
                       f"{self._nonfinite_advice()}")

    def _nonfinite_advice(self) -> str:
        """What is kept after a NaN/inf stop and what the user can do (the same config would fail the same way, and a
        changed config cannot --resume)."""
        good = self.checkpoint_dir / "last.ckpt"
        kept = f"the last good checkpoint {good} is kept" if good.exists() else "no checkpoint was written yet"
        return (f"{kept}; start again with a lower learning rate, e.g. --overwrite "
                f"optimizer.lr={self.config.optimizer.lr / 10:g} (or a new name=...), or check the data.")

    def _check_finite_state(self, method: Method, task: int) -> None:
        """Never checkpoint a model with a NaN/inf parameter or buffer (a loss can stay finite while they are not)."""
        bad = nonfinite_names(method.state_dict())
        flag = torch.tensor(float(bool(bad)), device=self.fabric.device)
        if self.fabric.world_size > 1:  # every rank stops together when any rank's state went bad
            flag = self.fabric.all_reduce(flag, reduce_op=torch.distributed.ReduceOp.MAX)
        if float(flag) > 0:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            shown = shown or "another process's state"
            raise RunError(f"The model's state became NaN/inf during task {task} (non-finite: {shown}); "
                           f"{self._nonfinite_advice()}")

    def _restore(self, state: dict, method: Method) -> None:
        """Load a checkpoint's method state and this rank's own state (RNG, replay buffers) over ``method``."""
        device = self.fabric.device
        method.load_state_dict(state["method"])
        own = state["ranks"][self.fabric.global_rank] if state.get("ranks") else None
        if own is not None:
            for name, obj_state in own["tracked"].items():
                method.tracked_state()[name].load_state_dict(obj_state)
        for obj in method.tracked_state().values():  # checkpoints load on the CPU; stored tensors belong on the device
            data = getattr(obj, "data", None)
            if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
                obj.data = {key: value.to(device) for key, value in data.items()}
        set_rng_state((own or state)["rng"], device)

    @staticmethod
    def _eval_units(method: Method, num_tasks: int, nc: bool = False, final: bool = False) -> int:
        """Units of the evaluation bar: classifier fits, one per classifier and test task, NC metrics, extras."""
        return 1 + len(method.classifiers()) * num_tasks + int(nc) + int(final)

    def _eval_tick(self, description: str, advance: int = 1) -> None:
        if self.progress is not None:
            self.progress.evaluation_step(description, advance)

    def _save(self, name: str, method, optimizer, results, task: int, phase: str, step: int, global_step: int):
        self._check_finite_state(method, task)
        device = self.fabric.device
        state = {
            "version": CHECKPOINT_VERSION,
            "fingerprint": config_fingerprint(self.config),
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(device),
            "task": task, "phase": phase, "step": step, "global_step": global_step,
            "results": json.loads(json.dumps(results)),
            "world_size": self.fabric.world_size,
            "metrics_bytes": self._log.tell() if getattr(self, "_log", None) is not None else None,
        }
        if self.fabric.world_size > 1:  # what differs between ranks: RNG streams and replay buffers
            state["ranks"] = gather_objects(self.fabric, {
                "rng": rng_state(device),
                "tracked": {name: obj.state_dict() for name, obj in method.tracked_state().items()},
            })
        if self.fabric.is_global_zero:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(state, self.checkpoint_dir / name)
            if name != "last.ckpt":
                atomic_torch_save(state, self.checkpoint_dir / "last.ckpt")
                if not self.config.train.keep_checkpoints and task > 0:
                    (self.checkpoint_dir / f"task-{task - 1}.ckpt").unlink(missing_ok=True)
        self.fabric.barrier()

    def evaluate(self, method: Method, scenario, test_sets, up_to: int, prepare: TaskContext | None = None) -> dict:
        """Accuracy (%) of every classifier on every task's test set: {classifier: {class_il|task_il: [T]}}."""
        return self._timed_evaluate(method, scenario, test_sets, up_to, prepare)[0]

    @torch.no_grad()
    def _timed_evaluate(self, method: Method, scenario, test_sets, up_to: int,
                        prepare: TaskContext | None = None) -> tuple[dict, dict[str, float]]:
        """``evaluate`` and the seconds each classifier took to predict the test sets."""
        was_training = method.training
        method.eval()
        if prepare is not None:
            self._eval_tick("fitting classifiers", advance=0)
            method.prepare_evaluation(prepare)
        self._eval_tick("fitting classifiers")
        batch = self.config.eval.batch_size
        row: dict = {}
        predict_seconds: dict[str, float] = {}
        for name, classify in method.classifiers().items():
            method.synchronize()
            predict_start = time.perf_counter()
            class_il, task_il = [], []
            for j, (images, labels) in enumerate(test_sets[: up_to + 1]):
                correct = correct_task = 0
                classes = torch.tensor(scenario.tasks[j].classes, device=labels.device)
                for start in range(0, len(labels), batch):
                    x = images[start : start + batch].float().div_(255)
                    if self.config.model.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    logits = classify(x).float()
                    y = labels[start : start + batch]
                    correct += int((logits.argmax(1) == y).sum())
                    if scenario.task_il:
                        masked = logits[:, classes]
                        correct_task += int((classes[masked.argmax(1)] == y).sum())
                class_il.append(100.0 * correct / len(labels))
                task_il.append(100.0 * correct_task / len(labels))
                self._eval_tick(f"{name}: test task {j + 1}/{up_to + 1}")
            method.synchronize()
            predict_seconds[name] = time.perf_counter() - predict_start
            row[name] = {"class_il": class_il, **({"task_il": task_il} if scenario.task_il else {})}
        method.train(was_training)
        return row, predict_seconds

    @torch.no_grad()
    def neural_collapse(self, method: Method, scenario, test_sets, task: int) -> dict | None:
        """NC metrics on test-split encoder features of the classes seen so far."""
        from .metrics.neural_collapse import neural_collapse

        was_training = method.training
        method.eval()
        seen = scenario.classes_up_to(task)
        if len(seen) < 2:
            method.train(was_training)
            return None
        feats, labs = [], []
        batch = self.config.eval.batch_size
        tasks = range(task + 1) if scenario.kind == "class_il" else [task]
        for j in tasks:
            images, labels = test_sets[j]
            for start in range(0, len(labels), batch):
                x = images[start : start + batch].float().div_(255)
                feats.append(method.features(x).float().cpu())
                labs.append(labels[start : start + batch].cpu())
        features, labels = torch.cat(feats), torch.cat(labs)
        remap = torch.full((scenario.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(seen)] = torch.arange(len(seen))
        weights = method.classifier_weights()
        if weights is not None:
            weights = weights.detach().float().cpu()[torch.tensor(seen)]
        metrics = neural_collapse(features, remap[labels], weights)
        method.train(was_training)
        return {"split": "test", "classes": len(seen), **metrics}


def epoch_order(seed: int, task: int, epoch: int, size: int) -> torch.Tensor:
    """The shuffled row order of one epoch of one task (the same on every rank; each takes its slice of a batch)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + task * 1009 + epoch))


def environment() -> dict:
    import lightning_fabric

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "protosphere": __version__, "torch": torch.__version__, "lightning_fabric": lightning_fabric.__version__,
        "numpy": np.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
    }


def write_results(run_dir: Path, results: dict) -> None:
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))


def write_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
