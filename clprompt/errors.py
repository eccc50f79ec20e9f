"""Errors of the model side. Each message says what was wrong and how to fix it."""


class ClpromptError(Exception):
    """Base class: a run cannot go on as configured."""


class WeightsUnavailableError(ClpromptError):
    """Pretrained weights could not be found or downloaded."""


class UnsupportedBackboneError(ClpromptError):
    """A method cannot run on the chosen backbone."""


class ConfigValueError(ClpromptError):
    """A config value is invalid; the message names the key."""


class NonFiniteLossError(ClpromptError):
    """The training loss became NaN or infinite."""


class ParametersDivergedError(ClpromptError):
    """An experience's training left the method's parameters non-finite or beyond a bound: it diverged."""
