"""The run directory (``runs/<name>/``): the one owner of its files.

:class:`RunDir` names every file of a run, and is the only code that prepares, checks, writes and reads them:
config.yaml, results.json (through the typed record of :mod:`protosphere.runs.record`), metrics.csv (appended by the
engine's log at the path named here), the checkpoints, plots, report.html, report.log, embeddings.npz, the trackers'
folders and run.lock (:class:`RunLock`). Every file but metrics.csv is written whole through :func:`atomic_write`: a
temporary file in the same folder, flushed to disk and renamed over the target, so a crash or a failing serializer
never leaves a half-written file in place of a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from ..errors import ConfigError, RunError, shorten
from .record import RunRecord, StoredRecord

__all__ = ["CHECKPOINT_VERSION", "RunDir", "RunLock", "atomic_write", "read_record", "save_embedding_snapshot"]

CHECKPOINT_VERSION = 1  # the layout of a checkpoint's state; a resume refuses any other
LOCK_FD_VARIABLE = "PROTOSPHERE_RUN_LOCK_FD"  # a report process started by its run inherits the run's lock


Writer = Callable[[IO[bytes]], Any]


def atomic_write(path: str | Path, content: str | bytes | Writer) -> Path:
    """Write ``content`` to ``path`` so that ``path`` holds either its old or its complete new content, never a part.

    ``content`` is text (UTF-8), bytes, or a function that writes to a binary file object (e.g.
    ``lambda f: torch.save(state, f)``). The data go to a temporary file beside ``path``, are flushed to disk and
    renamed over ``path`` (atomic on POSIX and Windows); when writing fails the temporary file is removed and the
    error propagates, leaving ``path`` as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # unique: parallel writers never share one
    # os.open with 0o666 honours the umask, so the file gets the permissions a plain open() would give it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(content, str):
                file.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray)):
                file.write(content)
            else:
                content(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write or fsync: name the file it was for
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX: fsync the directory); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_record(run_dir: str | Path) -> StoredRecord:
    """The record of a run directory's results.json; :class:`RunError` with one sentence when it cannot be read."""
    return RunDir(run_dir).read_results()


class RunDir:
    """The files of one run directory (``runs/<name>/``): their names, and every check, write and read of them.

    ``metrics.csv`` is appended row by row as the run goes (see :class:`protosphere.runs.engine.MetricsLog`) and the
    trackers write their own folders; every other file is written whole through :func:`atomic_write`.
    """

    CONFIG = "config.yaml"
    RESULTS = "results.json"
    METRICS = "metrics.csv"
    CHECKPOINTS = "checkpoints"
    LAST_CHECKPOINT = "last.ckpt"
    PLOTS = "plots"
    REPORT = "report.html"
    REPORT_LOG = "report.log"
    EMBEDDINGS = "embeddings.npz"
    TENSORBOARD = "tensorboard"
    WANDB = "wandb"
    LOCK = "run.lock"
    WRITE_TEST = ".write-test"
    # everything a run writes: --overwrite removes a folder only when it holds nothing else
    FILES = frozenset(
        {
            CONFIG,
            RESULTS,
            METRICS,
            CHECKPOINTS,
            PLOTS,
            REPORT,
            REPORT_LOG,
            EMBEDDINGS,
            TENSORBOARD,
            WANDB,
            LOCK,
            WRITE_TEST,
        }
    )

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of(cls, config) -> RunDir:
        """The run directory of a :class:`~protosphere.config.RunConfig`: ``<output_dir>/<name>``."""
        return cls(Path(config.output_dir) / config.name)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # names ------------------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def results(self) -> Path:
        return self.path / self.RESULTS

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / self.LAST_CHECKPOINT

    def task_checkpoint(self, task: int) -> Path:
        return self.checkpoints / f"task-{task}.ckpt"

    def task_checkpoints(self) -> list[Path]:
        """The ``task-<t>.ckpt`` files present, latest task first."""

        def task(path: Path) -> int:
            number = path.stem[len("task-") :]
            return int(number) if number.isdigit() else -1

        return sorted(self.checkpoints.glob("task-*.ckpt"), key=task, reverse=True)

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint file present (``last.ckpt`` and the ``task-<t>.ckpt``), by name."""
        return sorted(self.checkpoints.glob("*.ckpt")) if self.checkpoints.is_dir() else []

    @property
    def plots(self) -> Path:
        return self.path / self.PLOTS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def report_log(self) -> Path:
        return self.path / self.REPORT_LOG

    @property
    def embeddings(self) -> Path:
        return self.path / self.EMBEDDINGS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def wandb(self) -> Path:
        return self.path / self.WANDB

    @property
    def lock_file(self) -> Path:
        return self.path / self.LOCK

    # records ----------------------------------------------------------------------------------------------------
    def write_config(self, config) -> Path:
        """``config.yaml``: the resolved :class:`~protosphere.config.RunConfig`."""
        from ..config import dump_config

        return atomic_write(self.config, dump_config(config))

    def write_results(self, record: RunRecord) -> Path:
        """``results.json``: the record of the finished run."""
        return atomic_write(self.results, record.to_json())

    def read_results(self) -> StoredRecord:
        """``results.json`` as read (:class:`~.record.StoredRecord`), from any version of protosphere."""
        if not self.path.is_dir():
            raise RunError(f"{self.path} is not a directory; pass a run directory such as runs/<name>.")
        if not self.results.is_file():
            raise RunError(
                f"{self.path} has no {self.RESULTS} (the run has not finished or this is not a run "
                f"directory); finish it with `protosphere run CONFIG --resume` or pass runs/<name>."
            )
        try:
            data = json.loads(self.results.read_text())
        except (OSError, ValueError) as exc:
            raise RunError(
                f"{self.results} is not readable JSON ({type(exc).__name__}); rerun the run to rewrite it."
            ) from None
        return StoredRecord.from_data(data, source=str(self.results))

    def write_text(self, name: str, text: str) -> Path:
        """Any other text file of the run directory (e.g. ``report.html``), atomically."""
        return atomic_write(self.path / name, text)

    # checkpoints ------------------------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict, task: int | None = None, keep_earlier: bool = True) -> Path:
        """``last.ckpt`` (``torch.save``), after ``task-<task>.ckpt`` when ``state`` ends task ``task``; both are
        written atomically, so a crash keeps the previous checkpoint. ``keep_earlier=False`` then removes the previous
        task's checkpoint, once the new ones are whole. Returns ``last.ckpt``."""
        import torch

        def write(path: Path) -> Path:
            return atomic_write(path, lambda file: torch.save(state, file))

        self.checkpoints.mkdir(parents=True, exist_ok=True)
        if task is not None:
            write(self.task_checkpoint(task))
        last = write(self.last_checkpoint)
        if task is not None and not keep_earlier and task > 0:
            self.task_checkpoint(task - 1).unlink(missing_ok=True)
        return last

    def load_checkpoint(self, config) -> dict:
        """The newest readable checkpoint of ``config``'s run: ``last.ckpt``, or when it is missing or unreadable (a
        truncated copy, a full disk) the ``task-<t>.ckpt`` of the latest task that reads. ``state["loaded_from"]``
        names the file."""
        from ..config import config_fingerprint

        unreadable = []
        for path in [self.last_checkpoint, *self.task_checkpoints()]:
            state = _read_checkpoint(path, unreadable)
            if state is None:
                continue
            if state.get("version") != CHECKPOINT_VERSION:
                raise RunError(
                    f"Checkpoint {path} has format version {state.get('version')}, this protosphere reads "
                    f"{CHECKPOINT_VERSION}; rerun with --overwrite."
                )
            if state.get("fingerprint") != config_fingerprint(config):
                raise RunError(
                    f"Checkpoint {path} was written by a different config; resume with the run's own "
                    f"{self.config} or start a new run with --overwrite."
                )
            state["loaded_from"] = str(path)
            return state
        if unreadable:
            raise RunError(
                f"Cannot resume: no checkpoint in {self.checkpoints} is readable ({', '.join(unreadable)}); "
                f"rerun with --overwrite."
            )
        raise RunError(
            f"Cannot resume: {self.checkpoints} holds no checkpoint (the run stopped before its first one); "
            f"rerun with --overwrite."
        )

    def final_checkpoint_path(self, last_task: int) -> Path:
        """The checkpoint holding the model after the last task: ``last.ckpt``, else that task's own."""
        candidates = [self.last_checkpoint, self.task_checkpoint(last_task)]
        for path in candidates:
            if path.is_file():
                return path
        raise RunError(
            f"{self.path} has no checkpoint of its last task ({' or '.join(map(str, candidates))}); "
            f"rerun it to get a model."
        )

    def load_final_checkpoint(self, last_task: int) -> dict:
        """The state after the last task (``last_task``), from ``last.ckpt`` or else that task's checkpoint; each
        candidate must be whole, of this format and written at the end of that task."""
        import torch

        problems = []
        for path in [self.last_checkpoint, self.task_checkpoint(last_task)]:
            if not path.is_file():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # truncated or foreign: try the task checkpoint
                problems.append(f"{path} is unreadable ({type(exc).__name__})")
                continue
            if state.get("version") != CHECKPOINT_VERSION:
                problems.append(f"{path} has format version {state.get('version')}, not {CHECKPOINT_VERSION}")
            elif state.get("task") != last_task or state.get("phase") != "task_done":
                problems.append(f"{path} was written before the end of the last task")
            elif not isinstance(state.get("method"), dict):
                problems.append(
                    f"{path} holds no `method` entry (the trained model), so it is not a whole protosphere checkpoint"
                )
            else:
                return state
        detail = "; ".join(problems) if problems else "no checkpoint of the last task exists"
        raise RunError(f"Cannot load the model of {self.path}: {detail}.")

    def check_world_size(self, state: dict, world_size: int) -> None:
        """A checkpoint continues only with the number of processes that wrote it (each holds its own RNG stream and
        share of the replay memory); checked before config.yaml is rewritten with the new fabric settings."""
        written = state.get("world_size", 1)
        if written != world_size:
            raise RunError(
                f"The checkpoint {state.get('loaded_from', self.path)} was written by {written} "
                f"process(es) and this run has {world_size}; resume with the fabric.devices and "
                f"fabric.num_nodes of {self.config}."
            )

    @contextlib.contextmanager
    def errors_name_checkpoint(self) -> Iterator[None]:
        """An OSError while the run writes its folder (a full disk, a quota, a read-only or vanished folder) becomes
        one sentence naming the file, what to free or fix, and the checkpoint that is intact (checkpoints are written
        atomically, so the last one is always whole)."""
        from ..errors import describe_os_error

        try:
            yield
        except OSError as exc:
            last = self.last_checkpoint
            kept = (
                f"; the last checkpoint {last} is intact, so --resume continues from it once that is fixed"
                if last.is_file()
                else "; no checkpoint was written yet, so start the run again once that is fixed"
            )
            raise RunError(describe_os_error(exc, kept=kept)) from None

    # the folder -------------------------------------------------------------------------------------------------
    def entries(self) -> list[Path]:
        """What the folder holds besides the lock of the process looking at it."""
        return [path for path in self.path.iterdir() if path.name != self.LOCK]

    def holds_run(self) -> bool:
        """Whether this is a folder a protosphere run wrote: a real folder (not a link) whose config.yaml or
        results.json is a mapping naming this folder. Only such a folder is ever removed (``--overwrite``)."""
        import yaml

        if self.path.is_symlink() or not self.path.is_dir():
            return False
        for file, parse in ((self.config, yaml.safe_load), (self.results, json.loads)):
            try:
                data = parse(file.read_text())
            except (OSError, ValueError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and data.get("name") == self.path.name:
                return True
        return False

    def check(self, resume: bool = False, overwrite: bool = False) -> None:
        """The checks of :meth:`prepare`, without touching anything (so a run that fails later leaves no trace)."""
        if resume and overwrite:
            raise RunError("--resume and --overwrite contradict each other; pass one of them.")
        self.check_no_links()
        if self.path.is_dir() and self.entries():
            if not overwrite and not resume:
                raise RunError(
                    f"Output directory {self.path} already exists; pass --resume to continue that run, --overwrite "
                    f"to replace it, or name=<new name> for a new run."
                )
            if overwrite and not self.holds_run():
                raise RunError(
                    f"--overwrite removes only a protosphere run folder, and {self.path} is not one (no "
                    f"{self.CONFIG} or {self.RESULTS} of a run named {self.path.name}); choose another name=... or "
                    f"move its files away."
                )
            if overwrite:
                self.check_removable()
        elif resume:
            raise RunError(f"Cannot resume: {self.path} holds no run; start it without --resume.")
        existing = self.path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise RunError(
                f"Cannot write to output directory {self.path} ({existing} is not a directory); choose a "
                f"writable output_dir=...."
            )

    def check_no_links(self) -> None:
        """Refuse a run folder that is a symbolic link or holds one where the run writes (any entry of the folder,
        and anything in checkpoints/ and plots/): metrics.csv is appended and cut back in place and plots are saved
        by path, so a link would send those writes out of the folder (into a file of someone else's, say)."""
        if self.path.is_symlink():
            raise RunError(
                f"The run folder {self.path} is a symbolic link (to {shorten(os.readlink(self.path))}); a "
                f"run writes only into a real folder, so set output_dir= to where the link points instead."
            )
        if not self.path.is_dir():
            return
        inside = [
            path
            for sub in (self.checkpoints, self.plots)
            if sub.is_dir() and not sub.is_symlink()
            for path in sub.rglob("*")
        ]
        for path in [*self.path.iterdir(), *inside]:
            if path.is_symlink():
                raise RunError(
                    f"{path} is a symbolic link (to {shorten(os.readlink(path))}), and a run never writes "
                    f"through a link out of its folder; replace the link by the file it points to, or "
                    f"remove it."
                )

    def check_removable(self) -> None:
        """Before --overwrite removes anything: every entry of the folder is one a run writes (a user's own file is
        never removed with it) and every folder in it can be written (so the removal cannot stop half-way)."""
        foreign = sorted(p.name for p in self.path.iterdir() if p.name not in self.FILES and not _temporary(p))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise RunError(
                f"--overwrite would remove {self.path}, which also holds files no run writes ({shown}); "
                f"move them out of the folder first, or choose another name=...."
            )
        for folder, subfolders, _ in os.walk(self.path):
            if not os.access(folder, os.W_OK | os.X_OK):
                raise RunError(
                    f"--overwrite cannot remove the old run in {self.path}: {folder} is not writable "
                    f"(read-only file system or permissions); fix that first, or choose another name=...."
                )
            subfolders[:] = [d for d in subfolders if not os.path.islink(os.path.join(folder, d))]

    def check_same_config(self, config) -> None:
        """Refuse to resume a run directory whose config.yaml differs from ``config`` in anything that changes
        numbers."""
        from ..config import config_fingerprint, read_yaml, validate_config

        if not self.config.exists():
            return
        try:
            saved = validate_config(read_yaml(self.config), source=str(self.config))
        except ConfigError:
            saved = None
        if saved is None or config_fingerprint(saved) != config_fingerprint(config):
            raise RunError(
                f"The run in {self.path} was made with a different config; resume with the run's own "
                f"{self.config} and no changed overrides, or start a new run with --overwrite."
            )

    def prepare(self, resume: bool = False, overwrite: bool = False, lock: RunLock | None = None) -> Path:
        """Check, then create or (--overwrite) empty the folder; ``lock``: the run's :class:`RunLock`, taken here
        when the folder is new."""
        self.check(resume=resume, overwrite=overwrite)
        if overwrite and self.path.is_dir() and self.entries():
            try:
                self._remove_run_files()
            except OSError as exc:  # checked before (check_removable), so a race or a device failure
                raise RunError(
                    f"--overwrite could not empty {self.path} ({exc.strerror}: {exc.filename}), so part of "
                    f"the old run may be gone; fix that and run with --overwrite again."
                ) from None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if lock is not None:
                lock.acquire()
            self._remove_leftover_temporaries()
            probe = self.path / self.WRITE_TEST
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise RunError(
                f"Cannot write to output directory {self.path} ({exc.strerror}); choose a writable "
                f"output_dir=... or fix its permissions."
            ) from None
        return self.path

    def _remove_run_files(self) -> None:
        """Empty the folder for --overwrite, keeping the lock this process holds in it (removing the folder would
        drop the lock: another process could then start in a new folder of the same name)."""
        for path in self.entries():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _remove_leftover_temporaries(self) -> None:
        """The temporary files of writes a killed run left half-done (see :func:`atomic_write`): never a complete
        file, so they only take space. Safe under the run's lock, which no writer of this folder can hold now."""
        for folder in (self.path, self.checkpoints):
            if folder.is_dir() and not folder.is_symlink():
                for path in folder.iterdir():
                    if _temporary(path) and path.is_file() and not path.is_symlink():
                        path.unlink()


def _temporary(path: Path) -> bool:
    """Whether ``path`` is the temporary file of an :func:`atomic_write` (``.<name>.<id>.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _read_checkpoint(path: Path, unreadable: list[str]) -> dict | None:
    """The state in ``path``, or None (with the reason added to ``unreadable``) when it is absent or not whole."""
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        unreadable.append(f"{path.name} ({type(exc).__name__})")
        return None
    if not isinstance(state, dict):
        unreadable.append(f"{path.name} (not a protosphere checkpoint)")
        return None
    return state


class RunLock:
    """``run.lock``: one process at a time trains, resumes, overwrites or reports a run folder.

    The lock is ``flock`` on an open file, so it belongs to the processes that hold the file open and disappears with
    them, a SIGKILL included (a stale run.lock file is then just a file, locked by nobody). The file holds the
    holder's PID, host and command, for the refusal of the next process; it is removed when the lock is released
    (unlinked before the unlock, and a process that locked a file that was removed meanwhile retries, so two
    processes never both hold it). A lock can be handed to a child process (:meth:`inheritable`): the background
    report of a finished run keeps the folder locked until it has written the report.
    """

    def __init__(self, run_dir: str | Path, purpose: str = "run"):
        self.path = RunDir(run_dir).lock_file
        self.purpose = purpose
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> RunLock:
        """Lock the folder, or raise :class:`RunError` naming the process that holds it; a no-op when held."""
        import fcntl

        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise RunError(
                    f"{self.path.parent} is in use by {holder} (see {self.path}); wait until it ends or "
                    f"stop it, then try again."
                ) from None
            if self._is_current(fd):
                self.fd = fd
                self._write_holder()
            else:  # the previous holder removed the file between our open and our lock: lock the new one
                os.close(fd)
        return self

    def adopt_inherited(self) -> bool:
        """Take over the lock a parent process handed down (its descriptor in $PROTOSPHERE_RUN_LOCK_FD) when it is
        this folder's; returns whether it was."""
        value = os.environ.pop(LOCK_FD_VARIABLE, "")
        if not value.isdigit() or self.fd is not None:
            return False
        fd = int(value)
        try:
            if not self._is_current(fd):
                os.close(fd)
                return False
        except OSError:  # not an open descriptor (the variable leaked from elsewhere)
            return False
        self.fd = fd
        self._write_holder()
        return True

    def inheritable(self) -> int:
        """The lock's descriptor, made inheritable for a child process that takes the lock over (pass it with
        ``pass_fds`` and $PROTOSPHERE_RUN_LOCK_FD); after :meth:`hand_over` this process no longer holds it."""
        os.set_inheritable(self.fd, True)
        return self.fd

    def hand_over(self) -> None:
        """Close this process's descriptor without unlocking or removing the file: the child holds the lock now."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self._is_current(self.fd):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        if not self.adopt_inherited():
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is the file now at :attr:`path` (not one removed since it was opened)."""
        try:
            current = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)

    def _write_holder(self) -> None:
        import socket

        text = f"{os.getpid()} {socket.gethostname()} protosphere {self.purpose}\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)


def _lock_holder(fd: int) -> str:
    """Who holds a lock, from its file: "process 123 on host (protosphere run)"; the holder writes it right after
    locking, so an empty file is read again a few times."""
    import time

    for _ in range(20):
        words = os.pread(fd, 512, 0).decode(errors="replace").split()
        if len(words) >= 2 and words[0].isdigit():
            return f"process {words[0]} on {words[1]} ({' '.join(words[2:]) or 'protosphere'})"
        time.sleep(0.01)
    return "another process"


def save_embedding_snapshot(
    run_dir: str | Path, features, labels, prototypes=None, max_points: int = 3000, seed: int = 0
) -> Path:
    """Write ``run_dir/embeddings.npz`` for the report's sphere picture and prototype–class-mean cosine matrix.

    Args:
        features: (N, d) features (tensor or array; normalised here).
        labels: (N,) integer class labels (indices into the scenario's label space).
        prototypes: optional (K, d) prototypes/classifier weights over the whole label space (row k = class k),
            in the same space as ``features``.
        max_points: at most this many rows are kept (a seeded random subset) for the picture; the class means and
            the cosine matrix use all N rows.

    Stored arrays: ``features`` (float32), ``labels`` (int64), ``classes`` (sorted present labels), ``class_means``
    (unit-norm mean of the unit-norm features per present class) and, with prototypes, ``prototypes`` (float32) and
    ``cosine`` (C_present × C_present: cos(class mean of class a, prototype of class b)).
    """
    import numpy as np

    f = _to_numpy(features).astype(np.float64)
    y = _to_numpy(labels).astype(np.int64).reshape(-1)
    if f.ndim != 2 or len(f) != len(y):
        raise ValueError(f"features must be (N, d) and labels (N,), got {f.shape} and {y.shape}.")
    z = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    classes = np.unique(y)
    means = np.stack([z[y == c].mean(0) for c in classes]) if len(classes) else np.zeros((0, f.shape[1]))
    means = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    keep = np.arange(len(y))
    if len(y) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), size=max_points, replace=False))
    arrays = {
        "features": f[keep].astype(np.float32),
        "labels": y[keep],
        "classes": classes,
        "class_means": means.astype(np.float32),
    }
    if prototypes is not None:
        w = _to_numpy(prototypes).astype(np.float64)
        if w.ndim != 2 or w.shape[1] != f.shape[1]:
            raise ValueError(f"prototypes must be (K, {f.shape[1]}) to match the features, got {w.shape}.")
        arrays["prototypes"] = w.astype(np.float32)
        present = classes[classes < len(w)]
        wn = w[present] / np.maximum(np.linalg.norm(w[present], axis=1, keepdims=True), 1e-12)
        arrays["cosine"] = (means[np.isin(classes, present)] @ wn.T).astype(np.float32)
    files = RunDir(run_dir)
    files.path.mkdir(parents=True, exist_ok=True)
    return atomic_write(files.embeddings, lambda file: np.savez_compressed(file, **arrays))


def _to_numpy(x):
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)
