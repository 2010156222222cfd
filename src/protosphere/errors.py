"""User-facing errors.

Every problem a user can cause (bad data, bad config, bad paths) raises a subclass of :class:`ProtosphereError` whose
message is one sentence: what is wrong, where, and how to fix it. The CLI prints that sentence and exits non-zero;
anything else is a bug and keeps its traceback.
"""


class ProtosphereError(Exception):
    """Base class of errors caused by input; the message is shown to the user as is."""


class DatasetError(ProtosphereError):
    """A dataset is missing, truncated, corrupt or fails its checksum."""


class ConfigError(ProtosphereError):
    """A configuration key is unknown, ill-typed or out of range, or settings contradict each other."""


class ScenarioError(ProtosphereError):
    """A scenario cannot be built from the dataset (e.g. an empty task)."""


class RunError(ProtosphereError):
    """A run cannot start or continue (output directory conflicts, non-finite loss, incompatible checkpoint)."""


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped the work at a safe point; the message says where and how to continue. Not an input
    error: the command line exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports
    a process that the signal ended."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def describe(self, imports=()) -> str:
        """The line the command line prints; ``imports``: its ``--import`` modules, for a command to continue."""
        return str(self)


_OS_ADVICE = {
    "ENOSPC": "free space on that device (or choose another output_dir=...)",
    "EDQUOT": "free space within your disk quota (or choose another output_dir=...)",
    "EROFS": "that file system is read-only; choose a writable output_dir=...",
    "EACCES": "fix its permissions or choose another path",
    "EPERM": "fix its permissions or choose another path",
    "ENAMETOOLONG": "shorten the run name or output_dir",
    "ENOENT": "check that the path exists",
    "ENOTDIR": "a part of the path is a file, not a folder; fix the path",
    "EISDIR": "it is a folder where a file was expected; move it away",
    "EIO": "the device reports an I/O error; check the disk or the network file system",
}


def shorten(text: object, limit: int = 80) -> str:
    """``text`` for an error message: at most ``limit`` characters, with the length of what was cut."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} characters)"


def quote(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters with the value's own length."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{str(value)[: limit - 2]!r}… ({len(str(value))} characters)"


def describe_os_error(exc: OSError, kept: str = "") -> str:
    """One sentence for an OSError that reached the user: the path, what the system said, what to free or fix, and
    ``kept`` (e.g. which checkpoint is intact)."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    path = exc.filename if exc.filename is not None else "a file"
    advice = _OS_ADVICE.get(name, "fix the path or its device")
    reason = exc.strerror or type(exc).__name__
    return f"Cannot use {shorten(path, 160)}: {reason}{f' ({name})' if name else ''}; {advice}{kept}."
