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
