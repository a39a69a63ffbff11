"""Errors a user can fix. The entry point prints them as one line, without a traceback."""

from hydra.errors import CompactHydraException


class NeuralForgeError(CompactHydraException):
    """A problem with the user's input or files; the message says what to change."""


class ConfigError(NeuralForgeError):
    pass


class DataError(NeuralForgeError):
    pass


class CheckpointError(NeuralForgeError):
    pass


class LockedError(NeuralForgeError):
    pass


class DivergedError(NeuralForgeError):
    pass


class DiskFullError(NeuralForgeError):
    """No space left where a run writes: nothing finished is lost, the relaunch resumes."""


class RecordError(NeuralForgeError):
    """A results.json that cannot be read."""


class SearchError(NeuralForgeError):
    """A search that cannot go on, or in which nothing trained."""

