"""What a run shows while it runs: rich bars on a terminal, one plain line per epoch elsewhere (SLURM, nohup, CI).

On a terminal: a ``run`` bar over every training step of every task with an ETA for the whole run (training steps
left at the measured time per step, plus the evaluations left at the measured time per evaluation), the current
task's bar (epoch, loss, img/s, ETA of the task) and, while the model is evaluated after a task, an evaluation bar
(classifier fits, then one unit per classifier and test task, then NC metrics).

Elsewhere: one line per epoch, ``task 2/5 epoch 3/10 step 300/1000 loss 1.2345 lr 0.05 1,234 img/s elapsed 0:01:23
ETA run ~0:05:00``, and one line per evaluation with its time. No control characters either way beyond rich markup.
"""

from __future__ import annotations

import os
import time


def hms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunProgress:
    """Progress of one run. ``live``: rich bars; otherwise plain lines on ``console`` (none when it is None)."""

    def __init__(self, console, live: bool, num_tasks: int, planned_steps: list[int]):
        self.console = console
        self.live = live and console is not None
        self.num_tasks = num_tasks
        self.planned = list(planned_steps)  # training steps of each task (exact for the current one)
        self.start = time.perf_counter()
        self.train_seconds = 0.0  # measured in this process (a resumed run starts afresh)
        self.train_steps = 0
        self.eval_seconds: list[float] = []  # the evaluations after each task
        self.other_eval_seconds: list[float] = []  # e.g. the untrained model's
        self._evaluated = -1  # the last task whose evaluation is done
        self._eval_counts = False
        self.task = 0
        self.step = 0
        self._task_start = self._last_step = self.start
        self._task_first = 0
        self._eval_start = None
        self._progress = None
        self._bars: dict[str, int] = {}
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[loss]}"),
                TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                console=console,
                transient=False,
            )
            self._progress.start()
            self._bars["run"] = self._progress.add_task(
                "run", total=max(1, sum(self.planned)), completed=0, loss="", speed="", eta=""
            )

    @property
    def plain(self) -> bool:
        """Plain lines per epoch are printed (a console, no live bars)."""
        return self._progress is None and self.console is not None

    # estimates ---------------------------------------------------------------------------------------------------
    def seconds_per_step(self) -> float | None:
        done = self.train_steps + (self.step - self._task_first)
        seconds = self.train_seconds + (self._last_step - self._task_start)
        return seconds / done if done > 0 else None

    def eta_run(self) -> float | None:
        """Seconds left in the run: training steps left × time per step + evaluations left × time per evaluation."""
        per_step = self.seconds_per_step()
        if per_step is None:
            return None
        steps_left = (self.planned[self.task] - self.step) + sum(self.planned[self.task + 1 :])
        timed = self.eval_seconds or self.other_eval_seconds  # before the first task's: the untrained model's
        per_eval = timed[-1] if timed else 0.0  # the latest: fits on the seen data grow from task to task
        evaluations_left = self.num_tasks - self.task
        running = 0.0
        if self._evaluated == self.task:
            evaluations_left -= 1
        elif self._eval_start is not None and self._eval_counts:  # what the running one has left of a typical one
            evaluations_left -= 1
            running = max(0.0, per_eval - (time.perf_counter() - self._eval_start))
        return steps_left * per_step + evaluations_left * per_eval + running

    def done_steps(self) -> int:
        return sum(self.planned[: self.task]) + self.step

    # training ----------------------------------------------------------------------------------------------------
    def start_task(self, task: int, total: int, first: int) -> None:
        if self.task != task:
            self.train_seconds += self._last_step - self._task_start
            self.train_steps += self.step - self._task_first
        self.planned[task] = total
        self.task, self.step, self._task_first = task, first, first
        self._task_start = self._last_step = time.perf_counter()
        if self._progress is not None:
            self._progress.update(self._bars["run"], total=max(1, sum(self.planned)), completed=self.done_steps())
            if "task" in self._bars:
                self._progress.remove_task(self._bars.pop("task"))
            self._bars["task"] = self._progress.add_task(
                f"task {task + 1}/{self.num_tasks}", total=total, completed=first, loss="", speed="", eta=""
            )

    def train_step(
        self, step: int, epoch: int, epochs: int, loss: float | None = None, speed: float | None = None
    ) -> None:
        """After step ``step`` (0-based) of the current task: move the bars (only called every few steps)."""
        self.step = step + 1
        self._last_step = time.perf_counter()
        if self._progress is None:
            return
        per_step = self.seconds_per_step()
        task_left = (self.planned[self.task] - self.step) * per_step if per_step is not None else None
        self._progress.update(
            self._bars["task"],
            completed=self.step,
            description=f"task {self.task + 1}/{self.num_tasks} epoch {epoch + 1}/{epochs}",
            loss="" if loss is None else f"loss {loss:.4f}",
            speed="" if speed is None else f"{speed:,.0f} img/s",
            eta=f"ETA {hms(task_left)}",
        )
        self._progress.update(self._bars["run"], completed=self.done_steps(), eta=f"ETA run {hms(self.eta_run())}")

    def epoch_end(
        self, step: int, epoch: int, epochs: int, loss: float | None, lr: float | None, speed: float | None
    ) -> None:
        """The plain line of an epoch (only when there are no live bars)."""
        self.step = step + 1
        self._last_step = time.perf_counter()
        if self._progress is not None or self.console is None:
            return
        parts = [
            f"task {self.task + 1}/{self.num_tasks}",
            f"epoch {epoch + 1}/{epochs}",
            f"step {self.step}/{self.planned[self.task]}",
        ]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if lr is not None:
            parts.append(f"lr {lr:.4g}")
        if speed is not None:
            parts.append(f"{speed:,.0f} img/s")
        parts += [f"elapsed {hms(time.perf_counter() - self.start)}", f"ETA run ~{hms(self.eta_run())}"]
        self.console.print("  ".join(parts), markup=False, highlight=False, soft_wrap=True)

    # evaluation --------------------------------------------------------------------------------------------------
    def start_evaluation(self, what: str, units: int, count: bool = True) -> None:
        """``count``: one of the per-task evaluations the ETA extrapolates (not the untrained model's)."""
        self._eval_start = time.perf_counter()
        self._eval_counts = count
        if self._progress is not None:
            self._bars["eval"] = self._progress.add_task(
                what, total=max(1, units), completed=0, loss="", speed="", eta=""
            )

    def evaluation_step(self, description: str, advance: int = 1) -> None:
        if self._progress is not None and "eval" in self._bars:
            self._progress.update(self._bars["eval"], advance=advance, description=description)
            self._progress.update(self._bars["run"], eta=f"ETA run {hms(self.eta_run())}")

    def end_evaluation(self) -> float:
        now = time.perf_counter()
        seconds = now - self._eval_start if self._eval_start is not None else 0.0
        self._eval_start = None
        if self._eval_counts:
            self.eval_seconds.append(seconds)
            self._evaluated = self.task
        else:
            self.other_eval_seconds.append(seconds)
            if not self.live and self.console is not None and self.task == 0 and self.step == 0:
                # the line of a task's evaluation comes with its accuracies; this one would otherwise pass unseen
                self.console.print(
                    f"before task 1: the untrained network evaluated in {seconds:.1f}s (FWT's baseline: the "
                    f"same classifiers on the network as initialised, before any training)",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        if self._progress is not None and "eval" in self._bars:
            self._progress.remove_task(self._bars.pop("eval"))
        return seconds

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


class GuardedStream:
    """A stream (stdout) that a run's output cannot kill: when writing fails, because the reader of a pipe went away
    (``protosphere run ... | head -1``) or the device is full (``> /dev/full``), the output is switched off and the
    run goes on writing its results. File descriptor 1 is then pointed at /dev/null, so that nothing else (a
    ``print``, the interpreter's own flush at exit) meets the broken stream either."""

    def __init__(self, stream):
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self.stream.write(text)
            except (OSError, ValueError):  # EPIPE, ENOSPC, EIO; a closed file
                self._switch_off()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self._switch_off()

    def _switch_off(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no descriptor (e.g. a notebook's stream): nothing to redirect
            pass

    def isatty(self) -> bool:
        try:
            return not self.broken and self.stream.isatty()
        except (OSError, ValueError, AttributeError):
            return False

    def __getattr__(self, name):
        return getattr(self.stream, name)


def stdout_console(width: int | None = None):
    """A rich console on stdout that survives a broken stdout (:class:`GuardedStream`); ``width`` when stdout is not
    a terminal (logs and CI: wide lines, no live bars)."""
    import sys

    from rich.console import Console

    stream = GuardedStream(sys.stdout)
    console = Console(file=stream)
    if not console.is_terminal and width is not None:
        console = Console(file=stream, width=width)
    return console
