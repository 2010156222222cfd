"""The continual loop: resume → per task: begin, train, evaluate, save.

:meth:`Engine.fit` is that loop; everything around it is a small object: :class:`TaskMonitor` (loss logging, speed,
progress, the NaN/inf guard :class:`LossGuard`), :class:`Checkpoints`, :class:`MetricsLog`, and the evaluation
protocol (:class:`~protosphere.runs.protocol.Protocol`), which owns everything computed after a task or an epoch. The
engine owns devices, processes, precision, files and progress display (through lightning-fabric and rich); it
knows nothing of losses. A method sees batches, a :class:`~protosphere.methods.base.StepContext` and a ``gather``
function; the engine sees a scalar loss and a dict of detached loss terms (:func:`train_step`).

Checkpoints (``checkpoints/last.ckpt``, plus ``task-<t>.ckpt`` at each task end; by default only the latest task
checkpoint is kept beside ``last.ckpt``, ``train.keep_checkpoints: true`` keeps them all) hold the method's state
(parameters, replay buffer, past-model snapshots, queues), optimiser, RNG states, progress and the evaluation so far.
They are written to a temporary file and renamed, so a crash never leaves a broken checkpoint in place of a good one,
are never written while a parameter or buffer holds NaN/inf (the run stops instead), and are read with
``weights_only=True``. Resuming re-runs ``begin_task`` of the interrupted task and then loads the saved
state over it, so every side effect of the hook is restored exactly; batch order is a function of (seed, task, epoch).
Under DDP a checkpoint also holds every rank's own state (RNG states, replay buffers), gathered to rank 0, and
``metrics.csv`` is cut back to what it held at the checkpoint, so a resumed run logs every step once. SIGTERM and
SIGINT (:mod:`protosphere.runs.interrupt`) end the step under way (or the task's evaluation), save ``last.ckpt`` there
and stop with :class:`~protosphere.runs.interrupt.RunInterrupted`; resuming from it gives the numbers of an
uninterrupted run.

Under DDP ``train.batch_size`` is the global batch: each rank trains on its own slice of it and methods see the
global batch through ``gather`` (see :mod:`protosphere.distributed` for why no loss scaling is needed); the loss and
terms it logs are means over the ranks, i.e. the global loss.
"""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from lightning_fabric import Fabric

from ..config import RunConfig, config_fingerprint
from ..data.augment import shard_draws
from ..data.scenarios import model_input
from ..data.streaming import DeviceBudget, device_batches, nbytes, to_device
from ..distributed import check_processes, gather_objects, gather_with_grad, rng_state, set_rng_state, shard_rows
from ..errors import RunError
from ..methods.base import Method, StepContext, StepOutput, TaskContext
from ..optim import build_optimizer, lr_factor, set_lr
from ..validation import set_validation
from .interrupt import RunInterrupted, StopRequest
from .progress import RunProgress, hms
from .protocol import Protocol, TaskEvaluation, TaskTraining
from .record import Evaluation, RunResults
from .rundir import CHECKPOINT_VERSION, RunDir


def nonfinite_names(state, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested state (a state_dict, extra state) holding NaN/inf."""
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        return [
            name
            for key, value in state.items()
            for name in nonfinite_names(value, f"{prefix}.{key}" if prefix else str(key))
        ]
    if isinstance(state, (list, tuple)):
        return [name for i, value in enumerate(state) for name in nonfinite_names(value, f"{prefix}.{i}")]
    return []


class MetricsLog:
    """metrics.csv in long form (one value per row), appended and flushed as the run goes."""

    FIELDS = ("time", "task", "epoch", "step", "split", "name", "value")

    def __init__(
        self, path: Path, enabled: bool = True, append: bool = False, truncate_to: int | None = None, trackers=None
    ):
        self.enabled = enabled
        self.start = time.time()
        self.trackers = trackers  # TensorBoard / W&B (protosphere.runs.loggers.Trackers): the same rows, by global step
        self.global_step = 0
        if not enabled:
            return
        new = not (append and path.exists())
        if not new and truncate_to is not None and path.stat().st_size > truncate_to:
            with open(path, "r+b") as f:  # drop rows logged after the checkpoint we resume from
                f.truncate(truncate_to)
        if not new:
            cut_partial_row(path)
            new = path.stat().st_size == 0  # not even the header was whole
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
        try:
            for name, value in values.items():
                if value is None:
                    continue
                self.writer.writerow(
                    (
                        elapsed,
                        task,
                        "" if epoch is None else epoch,
                        "" if step is None else step,
                        split,
                        name,
                        f"{float(value):.6g}",
                    )
                )
            self.file.flush()
        except OSError as exc:  # e.g. a full disk: name the file (a failed write or flush does not)
            raise OSError(exc.errno, exc.strerror, self.file.name) from exc

    def tell(self) -> int | None:
        return self.file.tell() if self.enabled else None

    def close(self, status: str = "success") -> None:
        if self.enabled:
            try:
                self.file.close()
            except OSError:  # the rows left in the buffer meet the full disk again
                if status == "success":
                    raise  # a failed run reports the error that stopped it, not this echo of it
        if self.trackers:
            self.trackers.close(status)


def cut_partial_row(path: Path) -> None:
    """Cut a last row without its newline (a kill inside a write), so that the next row does not continue it."""
    with open(path, "r+b") as f:
        end = start = f.seek(0, os.SEEK_END)
        while start > 0:  # back from the end, 64 KiB at a time, to the last newline
            size = min(start, 1 << 16)
            f.seek(start - size)
            chunk = f.read(size)
            if start == end and chunk.endswith(b"\n"):
                return
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                f.truncate(start - size + newline + 1)
                return
            start -= size
        f.truncate(0)


def train_step(
    model,
    optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    step: StepContext,
    backward: Callable[[torch.Tensor], None] | None = None,
    inspect: Callable[[StepOutput], None] | None = None,
) -> StepOutput:
    """One optimisation step as a run takes it: the method's ``training_step`` on a batch of floats in [0, 1] (its
    augmentation, replay, distillation and loss), then zero gradients, backward and the optimiser's step.

    ``backward`` backpropagates the loss (the engine passes ``fabric.backward``, which handles precision and DDP;
    default ``loss.backward()``); ``inspect(output)`` runs between the forward and the backward pass."""
    output = model.training_step(images, labels, step)
    if inspect is not None:
        inspect(output)
    optimizer.zero_grad(set_to_none=True)
    if backward is None:
        output.loss.backward()
    else:
        backward(output.loss)
    optimizer.step()
    return output


def resume_point(state: dict) -> tuple[int, int, bool]:
    """Where a run continues from a checkpoint's ``state`` (empty for a new run): (task, step in it, whether that task
    was interrupted). A task checkpoint continues with the next task; an in-task one re-enters its task."""
    task, phase = state.get("task", 0), state.get("phase")
    if phase == "in_task":
        return task, state.get("step", 0), True
    return (task + 1 if phase == "task_done" else task), 0, False


class LossGuard:
    """Stops a task whose loss or one of its terms became NaN/inf, naming the term and the first bad step. Steps are
    recorded on the device without a host sync and checked when the loss is logged or a checkpoint is written."""

    def __init__(self, fabric: Fabric, advice: Callable[[], str]):
        self.fabric = fabric
        self.advice = advice
        self.first: dict = {}  # term names -> step at which each first became non-finite (-1: never)

    def track(self, output: StepOutput, step: int) -> None:
        names = ("loss", *output.terms)
        values = torch.stack(
            [output.loss.detach().float().reshape(()), *(v.detach().float().reshape(()) for v in output.terms.values())]
        )
        first = self.first.get(names)
        if first is None:
            first = self.first[names] = torch.full((len(names),), -1, dtype=torch.long, device=values.device)
        self.first[names] = torch.where((first < 0) & ~torch.isfinite(values), step, first)

    def check(self, task: int) -> None:
        bad: dict[str, int] = {}
        for names, first in self.first.items():
            if self.fabric.world_size > 1:  # every rank stops together, at the earliest bad step of any rank
                never = torch.iinfo(torch.long).max
                first = self.fabric.all_reduce(
                    torch.where(first < 0, never, first), reduce_op=torch.distributed.ReduceOp.MIN
                )
                first = torch.where(first == never, -1, first)
            for name, step in zip(names, first.tolist()):
                if step >= 0:
                    bad[name] = min(step, bad.get(name, step))
        if not bad:
            return
        step = min(bad.values())
        terms = [name for name, s in bad.items() if s == step and name != "loss"] or ["loss"]
        raise RunError(
            f"The loss became NaN/inf at task {task}, step {step} (non-finite term: {', '.join(terms)}); "
            f"{self.advice()}"
        )


class Checkpoints:
    """``checkpoints/last.ckpt`` and ``task-<t>.ckpt``: the method's state, the optimiser, RNG states, the position in
    the run and the evaluation so far; written atomically and never while the method's state holds NaN/inf."""

    def __init__(self, config: RunConfig, fabric: Fabric, files: RunDir, log: MetricsLog | None = None):
        self.config = config
        self.fabric = fabric
        self.files = files
        self.log = log

    def advice(self) -> str:
        """What is kept after a NaN/inf stop and what the user can do (the same config would fail the same way, and a
        changed config cannot --resume)."""
        good = self.files.last_checkpoint
        kept = f"the last good checkpoint {good} is kept" if good.exists() else "no checkpoint was written yet"
        return (
            f"{kept}; start again with a lower learning rate, e.g. --overwrite "
            f"optimizer.lr={self.config.optimizer.lr / 10:g} (or a new name=...), or check the data."
        )

    def check_state(self, method: Method, task: int) -> None:
        """Never checkpoint a model with a NaN/inf parameter or buffer (a loss can stay finite while they are not)."""
        bad = nonfinite_names(method.state_dict())
        flag = torch.tensor(float(bool(bad)), device=self.fabric.device)
        if self.fabric.world_size > 1:  # every rank stops together when any rank's state went bad
            flag = self.fabric.all_reduce(flag, reduce_op=torch.distributed.ReduceOp.MAX)
        if float(flag) > 0:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            shown = shown or "another process's state"
            raise RunError(
                f"The model's state became NaN/inf during task {task} (non-finite: {shown}); {self.advice()}"
            )

    def save(
        self, method: Method, optimizer, evaluation: Evaluation, task: int, phase: str, step: int, global_step: int
    ) -> None:
        """``last.ckpt`` at ``step`` of ``task`` (``phase`` "in_task"), or after the task ("task_done", which also
        writes the task's own checkpoint)."""
        self.check_state(method, task)
        device = self.fabric.device
        state = {
            "version": CHECKPOINT_VERSION,
            "fingerprint": config_fingerprint(self.config),
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(device),
            "task": task,
            "phase": phase,
            "step": step,
            "global_step": global_step,
            "results": evaluation.saved(),
            "world_size": self.fabric.world_size,
            "metrics_bytes": self.log.tell() if self.log is not None else None,
        }
        if self.fabric.world_size > 1:  # what differs between ranks: RNG streams and replay buffers
            state["ranks"] = gather_objects(
                self.fabric,
                {
                    "rng": rng_state(device),
                    "tracked": {name: obj.state_dict() for name, obj in method.tracked_state().items()},
                },
            )
        if self.fabric.is_global_zero:
            self.files.save_checkpoint(
                state, task=task if phase == "task_done" else None, keep_earlier=self.config.train.keep_checkpoints
            )
        self.fabric.barrier()

    def restore(self, state: dict, method: Method) -> None:
        """Load a checkpoint over ``method``: its state, this rank's own tracked state (replay buffers) on this rank's
        device, and this rank's RNG streams."""
        own = state["ranks"][self.fabric.global_rank] if state.get("ranks") else None
        method.restore_state(state["method"], own["tracked"] if own is not None else None, self.fabric.device)
        set_rng_state((own or state)["rng"], self.fabric.device)


class TaskMonitor:
    """Everything around a task's training steps but the steps: the NaN/inf guard, images seen and speed, the loss
    terms logged every ``train.log_every_n_steps`` steps (means over the ranks), the progress display and its plain
    line per epoch. The host waits for the device only at a logged step."""

    def __init__(self, engine: Engine, task: int, epochs: int, steps_per_epoch: int, total: int, first: int):
        self.engine, self.task, self.epochs = engine, task, epochs
        self.steps_per_epoch, self.total = steps_per_epoch, total
        self.guard = LossGuard(engine.fabric, engine.checkpoints.advice)
        self.start, self.images = time.perf_counter(), 0
        self.epoch_loss, self.epoch_steps = None, 0  # the epoch's mean loss, for the plain line (no per-step sync)
        engine.progress.start_task(task, total, first)

    def inspect(self, output: StepOutput, step: int) -> None:
        set_validation(False)  # the first step checked every loss input; later steps skip syncs
        self.guard.track(output, step)

    def speed(self) -> float:
        return self.images / max(1e-9, time.perf_counter() - self.start)

    def after_step(self, step: int, epoch: int, output: StepOutput, optimizer, rows: int, save: bool) -> None:
        engine, progress = self.engine, self.engine.progress
        engine.log.global_step = engine.global_step
        if progress.plain:
            loss = output.loss.detach().float()
            self.epoch_loss = loss if self.epoch_loss is None else self.epoch_loss + loss
            self.epoch_steps += 1
        self.images += rows * engine.fabric.world_size
        last = step == self.total - 1
        logged = (step + 1) % engine.config.train.log_every_n_steps == 0 or last
        if save or logged:
            self.guard.check(self.task)  # never log or checkpoint a model that saw a NaN/inf loss
        lr = optimizer.param_groups[0]["lr"]
        if logged:
            terms, speed = self.global_terms(output), self.speed()
            engine.log.log("train", {**terms, "lr": lr, "img_per_s": speed}, self.task, epoch, step)
            progress.train_step(step, epoch, self.epochs, terms["loss"], speed)
        if progress.plain and ((step + 1) % self.steps_per_epoch == 0 or last):
            progress.epoch_end(
                step, epoch, self.epochs, float(self.epoch_loss) / max(1, self.epoch_steps), lr, self.speed()
            )
            self.epoch_loss, self.epoch_steps = None, 0

    def global_terms(self, output: StepOutput) -> dict[str, float]:
        """The loss and its terms as logged: under DDP the mean over ranks (the global loss for per-rank terms such as
        a cross-entropy on local rows; unchanged for losses every rank computes on the gathered batch)."""
        loss = output.loss.detach().float().reshape(())
        values = torch.stack([loss, *(v.detach().float().reshape(()).to(loss.device) for v in output.terms.values())])
        if self.engine.fabric.world_size > 1:
            values = self.engine.fabric.all_reduce(values, reduce_op="mean")
        return dict(zip(("loss", *output.terms), values.tolist()))

    def finish(self) -> TaskTraining:
        return TaskTraining(time.perf_counter() - self.start, self.images)


class Engine:
    """Runs a method through a scenario. ``write_embeddings(features, labels, weights)`` stores the embedding
    snapshot taken after the last task (the runner passes the report's writer; none: no snapshot). ``stop``: a
    :class:`~protosphere.runs.interrupt.StopRequest`; once set, the run finishes its training step (or the evaluation of
    its task), saves ``last.ckpt`` and raises :class:`~protosphere.runs.interrupt.RunInterrupted`."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        fabric: Fabric,
        console=None,
        show_progress: bool = True,
        write_embeddings: Callable | None = None,
        stop: StopRequest | None = None,
    ):
        self.config = config
        self.stop = stop  # set by SIGTERM/SIGINT (runs.interrupt): checkpoint and stop at the next safe point
        self.run_dir = Path(run_dir)
        self.fabric = fabric
        self.console = console
        self.show_progress = show_progress and fabric is not None and fabric.is_global_zero
        self.files = RunDir(self.run_dir)
        self.write_embeddings = write_embeddings
        self.progress: RunProgress | None = None
        self.log: MetricsLog | None = None
        self.checkpoints: Checkpoints | None = None
        self.budget: DeviceBudget | None = None
        self.global_step = 0

    # ----------------------------------------------------------------------------------------------------------
    def fit(self, scenario, method: Method, resume: dict | None = None) -> RunResults:
        """Train ``method`` on every task of ``scenario``, evaluating after each (:class:`~protosphere.runs.protocol.
        Protocol`), and return the protocol's results; ``resume``: a loaded checkpoint to continue from."""
        state = resume or {}
        model = self._setup(method, resume)
        first_task, first_step, in_task = resume_point(state)
        self.global_step = state.get("global_step", 0)
        log = self._open_log(resume)
        progress = self._open_progress(scenario)
        checkpoints = self.checkpoints = Checkpoints(self.config, self.fabric, self.files, log)
        # measured with the network on the device; the test sets take their share first (held for the whole run)
        self.budget = DeviceBudget(self.fabric.device, self.config.data.device_budget_bytes)
        protocol = Protocol(
            self.config,
            scenario,
            self.fabric.device,
            state.get("results"),
            log,
            progress,
            self.write_embeddings if self.fabric.is_global_zero else None,
            budget=self.budget,
        )
        if state.get("method") is not None and not in_task:
            checkpoints.restore(state, method)
        protocol.random_init_baseline(method, self._context(scenario, 0, announce=False))
        # the losses check their inputs on the first step of a run (a bug shows at once); a resumed run passed that
        # check before, and a NaN/inf it meets now is a numerical failure, which the non-finite guard reports
        set_validation(resume is None)
        status = "failed"
        try:
            for t in range(first_task, scenario.num_tasks):
                context = self._context(scenario, t)
                method.train()
                method.begin_task(context)
                optimizer = self.fabric.setup_optimizers(build_optimizer(self.config.optimizer, method.parameters()))
                resumed = in_task and t == first_task
                if resumed:
                    checkpoints.restore(state, method)
                    optimizer.load_state_dict(state["optimizer"])
                training = self._train_task(model, method, optimizer, context, first_step if resumed else 0, protocol)
                method.end_task(context)
                evaluation = protocol.after_task(method, context, training)
                checkpoints.save(method, optimizer, protocol.evaluation, t, "task_done", 0, self.global_step)
                self._announce(context, training, evaluation)
                if t < scenario.num_tasks - 1 and self._stop_agreed():  # the last task's end is the run's end
                    raise self._interrupted(t, None)
            results = protocol.run_results(method)
            if log.trackers:
                log.trackers.log_results(results, self.global_step)
            status = "success"
        finally:
            progress.stop()
            log.close(status)
            set_validation(True)
        return results

    def _train_task(
        self, model, method: Method, optimizer, context: TaskContext, first: int, protocol: Protocol
    ) -> TaskTraining:
        """Steps ``first``.. of one task: shuffled batches (a function of seed, task and epoch; each rank takes its
        slice; indexed on the device, or gathered on the host and copied per step for a task held there), the
        learning-rate schedule, one :func:`train_step` each, per-epoch evaluations and checkpoints."""
        cfg, fabric, t = self.config, self.fabric, context.index
        images, labels = method.training_data(context)
        epochs, batch, every = cfg.train.epochs_for(t), cfg.train.batch_size, cfg.train.checkpoint_every_n_steps
        # an incomplete last batch is dropped unless it is the only one, so every step sees a full global batch (the
        # contrastive losses' negatives); Co2L, samix and Mammoth keep it (docs/reproduction.md lists the difference)
        steps_per_epoch = max(1, len(labels) // batch)
        total = epochs * steps_per_epoch
        monitor = TaskMonitor(self, t, epochs, steps_per_epoch, total, first)
        rows = batch_rows(cfg.seed, t, len(labels), batch, steps_per_epoch, range(first, total), fabric)
        batches = device_batches((images, labels), rows, fabric.device, stream=context.streamed)
        for step, (x, y) in zip(range(first, total), batches):
            epoch = step // steps_per_epoch
            set_lr(optimizer, cfg.optimizer.lr, lr_factor(cfg.optimizer, step, total, steps_per_epoch))
            where = StepContext(
                task=t, epoch=epoch, step=step, steps_in_task=total, global_step=self.global_step, epochs_in_task=epochs
            )
            with shard_draws(fabric.global_rank, fabric.world_size):  # each rank augments its rows as 1 process does
                output = train_step(
                    model,
                    optimizer,
                    model_input(x, cfg.model.channels_last),
                    y,
                    where,
                    fabric.backward,
                    inspect=lambda out, step=step: monitor.inspect(out, step),
                )
            self.global_step += 1
            last = step == total - 1
            stopping = self._stop_requested(step)
            save = stopping or (bool(every) and (step + 1) % every == 0 and not last)
            monitor.after_step(step, epoch, output, optimizer, len(y), save)
            if cfg.eval.per_epoch and (step + 1) % steps_per_epoch == 0 and not last:
                protocol.after_epoch(method, context, epoch)
            if save:
                self.checkpoints.save(method, optimizer, protocol.evaluation, t, "in_task", step + 1, self.global_step)
            if stopping:
                raise self._interrupted(t, step + 1)
        return monitor.finish()

    def _context(self, scenario, t: int, announce: bool = True) -> TaskContext:
        """Task ``t``'s context: its training data on the device when they fit the device budget, else left on the
        host to be copied one batch per step (:mod:`protosphere.data.streaming`; ``announce``: say so)."""
        size = nbytes(scenario.tasks[t].train_images)
        stream = not self.budget.fits(size)
        if stream and announce and self.console is not None and self.fabric.is_global_zero:
            self.console.print(
                f"task {t + 1}: its {size / 1e6:,.1f} MB of training images exceed what is left of the device "
                f"budget ({max(0, self.budget.left) / 1e6:,.1f} MB, data.device_budget); its batches are copied "
                f"to the device one step ahead"
            )
        return TaskContext.of(scenario, t, self.fabric.device, stream=stream)

    # ----------------------------------------------------------------------------------------------------------
    def _stop_requested(self, step: int) -> bool:
        """Whether a signal asked the run to stop after this training step. Under DDP every rank must stop at the
        same step (a checkpoint is collective), so the ranks agree only at logged steps, where the host waits for
        the device anyway."""
        if self.fabric.world_size > 1 and (step + 1) % self.config.train.log_every_n_steps:
            return False
        return self._stop_agreed()

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop (one process: whether this one was)."""
        asked = self.stop is not None and self.stop.requested
        if self.fabric.world_size == 1:
            return asked
        flag = self.fabric.all_reduce(
            torch.tensor(float(asked), device=self.fabric.device), reduce_op=torch.distributed.ReduceOp.MAX
        )
        return float(flag) > 0

    def _interrupted(self, task: int, step: int | None) -> RunInterrupted:
        signum = self.stop.signum if self.stop is not None and self.stop.signum is not None else signal.SIGTERM
        return RunInterrupted(signum, self.run_dir, self.files.last_checkpoint, task, step)

    # ----------------------------------------------------------------------------------------------------------
    def _setup(self, method: Method, resume: dict | None):
        """Place ``method`` on the device and wrap it for DDP; under DDP, hand it the gather. (Every rank keeps the
        run's RNG stream: the augmentation draws the global batch's parameters and keeps its slice's, see
        :func:`~protosphere.data.augment.shard_draws`.)"""
        cfg, fabric = self.config, self.fabric
        device, world_size = fabric.device, fabric.world_size
        check_processes(cfg, world_size)  # the runner checked already; the engine is also driven on its own
        if resume is not None:
            self.files.check_world_size(resume, world_size)
        if world_size > 1:
            method.install_collectives(gather=gather_with_grad(fabric))
        method = method.to(device)
        method.install_collectives(to_device=lambda batch: to_device(batch, device))
        if device.type == "cuda":
            method.install_collectives(synchronize=lambda: torch.cuda.synchronize(device))
        model = fabric.setup_module(method)
        model.mark_forward_method("training_step")
        return model

    def _open_log(self, resume: dict | None) -> MetricsLog:
        cfg, fabric, state = self.config, self.fabric, resume or {}
        trackers = None
        if fabric.is_global_zero and (cfg.logging.tensorboard or cfg.logging.wandb is not None):
            from .loggers import Trackers, open_trackers

            trackers = Trackers(open_trackers(cfg, self.run_dir, resume_step=self.global_step if resume else None))
        self.log = MetricsLog(
            self.files.metrics,
            enabled=fabric.is_global_zero,
            append=resume is not None,
            truncate_to=state.get("metrics_bytes"),
            trackers=trackers,
        )
        self.log.global_step = self.global_step
        return self.log

    def _open_progress(self, scenario) -> RunProgress:
        batch = self.config.train.batch_size
        planned = [
            max(1, len(task.train_labels) // batch) * self.config.train.epochs_for(i)
            for i, task in enumerate(scenario.tasks)
        ]  # an estimate for later tasks (replay may add rows)
        self.progress = RunProgress(
            self.console if self.fabric.is_global_zero else None, self.show_progress, scenario.num_tasks, planned
        )
        return self.progress

    def _announce(self, context: TaskContext, training: TaskTraining, evaluation: TaskEvaluation) -> None:
        """The console line after a task: the headline classifier's class-IL accuracy on the seen tasks, timings."""
        if self.console is None or not self.fabric.is_global_zero:
            return
        t, num_tasks = context.index, context.num_tasks
        seen = evaluation.row[evaluation.headline]["class_il"][: t + 1]
        self.console.print(
            f"[bold]task {t + 1}/{num_tasks}[/] {evaluation.headline} class-IL accuracy on seen tasks: "
            + " ".join(f"{a:.1f}" for a in seen)
            + f"  (mean {np.mean(seen):.2f}; "
            f"train {training.seconds:.1f}s, {training.images_per_second:,.0f} img/s; "
            f"eval {evaluation.seconds:.1f}s; elapsed {hms(time.perf_counter() - self.progress.start)}"
            + (f", ETA run ~{hms(self.progress.eta_run())}" if t < num_tasks - 1 else "")
            + ")"
        )


def epoch_order(seed: int, task: int, epoch: int, size: int) -> torch.Tensor:
    """The shuffled row order of one epoch of one task (the same on every rank; each takes its slice of a batch)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + task * 1009 + epoch))


def batch_rows(seed: int, task: int, size: int, batch: int, steps_per_epoch: int, steps: range, fabric):
    """The row indices (CPU int64) of each step in ``steps`` of a task of ``size`` training rows: the slice of the
    epoch's shuffled order (:func:`epoch_order`) that is the step's global batch, then this rank's part of it."""
    for step in steps:
        epoch, index = divmod(step, steps_per_epoch)
        if index == 0 or step == steps.start:
            order = epoch_order(seed, task, epoch, size)
        yield shard_rows(order[index * batch : (index + 1) * batch], fabric.global_rank, fabric.world_size)
