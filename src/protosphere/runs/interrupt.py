"""Graceful stops: SIGTERM (what SLURM and systemd send some time before they kill a job) and SIGINT (Ctrl-C).

While :func:`stop_on_signals` is active, either signal only sets a flag; the engine looks at it after every training
step and after every task, saves a checkpoint there and raises :class:`RunInterrupted`, which tells where the run
stopped and the command that continues it. A second signal is not waited on: the previous handler gets it (Python's
defaults: SIGINT raises KeyboardInterrupt, SIGTERM ends the process), so an impatient user can always stop at once,
and the atomic checkpoint writes keep the last good checkpoint either way.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Whether (and by which signal) the work was asked to stop."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        previous = self._previous.get(signum)  # the second signal: stop now, as without this handler
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def handling_signals(handler: Callable, signals: Sequence[int] = STOP_SIGNALS) -> Iterator[dict]:
    """``handler`` receives ``signals`` within the block and the previous handlers (yielded) come back after. Only
    the main thread can set handlers (elsewhere nothing changes), and a signal the process was started ignoring
    (`nohup`, a background job of a script) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    wanted = [signum for signum in signals if signal.getsignal(signum) is not signal.SIG_IGN]
    previous = {signum: signal.signal(signum, handler) for signum in wanted}
    try:
        yield previous
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Within the block, SIGTERM/SIGINT only set the yielded request's flag (see :func:`handling_signals`)."""
    request = StopRequest()
    with handling_signals(request._handle, signals) as previous:
        request._previous = previous
        yield request


class RunInterrupted(Interrupted):
    """A run stopped on a signal after saving ``checkpoint``: in task ``task`` at ``step`` (the first step not yet
    taken), or after the task when ``step`` is None."""

    def __init__(self, signum: int, run_dir: Path, checkpoint: Path, task: int, step: int | None):
        self.signum, self.run_dir, self.checkpoint = signum, Path(run_dir), Path(checkpoint)
        self.task, self.step = task, step
        super().__init__(signum, self.describe())

    def resume_command(self, imports: Sequence[str] = ()) -> str:
        """The command that continues the run: its own resolved config.yaml (overrides included) with --resume."""
        from .rundir import RunDir

        words = [
            "protosphere",
            *(w for module in imports for w in ("--import", module)),
            "run",
            str(RunDir(self.run_dir).config),
            "--resume",
        ]
        return shlex.join(words)

    def describe(self, imports: Sequence[str] = ()) -> str:
        where = f"at task {self.task}, step {self.step}" if self.step is not None else f"after task {self.task}"
        return (
            f"interrupted by {signal.Signals(self.signum).name} {where}; {self.checkpoint} holds the run up to "
            f"there; continue with: {self.resume_command(imports)}"
        )
