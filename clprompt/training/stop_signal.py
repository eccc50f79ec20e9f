"""A stop asked for by a signal (SIGTERM: a scheduler's pre-emption, ``kill``): raised as ``Interrupted``, so
the run unwinds like Ctrl-C and records "interrupted (SIGTERM)" with its finished experiences kept.

A Python signal handler raises wherever the interpreter happens to be, and some places discard what is
raised there: a library's fork hook (filelock's, when a DataLoader starts its workers) prints "Exception
ignored in ..." and carries on. So the handler also remembers the stop, and ``StopSignalPlugin`` raises it
again at the next training or evaluation step; an error that the stop causes before then (the DataLoader's
workers, killed by the same signal to the process group, as Slurm sends it) is recorded as the
interruption it is (``requested``)."""

from __future__ import annotations

import signal
from typing import Optional

from avalanche.core import SupervisedPlugin


class Interrupted(BaseException):
    """A stop signal, unwinding like Ctrl-C's KeyboardInterrupt (not an Exception: nothing catches it by accident)."""


_requested: Optional[str] = None


def requested() -> Optional[str]:
    """The name of the stop signal this process received ('SIGTERM'), or None."""
    return _requested


def install(signum: int = signal.SIGTERM) -> None:
    """Handle ``signum`` by raising ``Interrupted`` (and remembering it); forgets an earlier request."""
    global _requested
    _requested = None
    signal.signal(signum, _raise_interrupted)


def _raise_interrupted(signum, frame):
    global _requested
    _requested = signal.Signals(signum).name
    raise Interrupted(_requested)


def raise_if_requested() -> None:
    if _requested is not None:
        raise Interrupted(_requested)


class StopSignalPlugin(SupervisedPlugin):
    """Raises a remembered stop at the next step: a stop whose first raise was discarded still stops the run."""

    def before_training_iteration(self, strategy, **kwargs):
        raise_if_requested()

    def before_eval_iteration(self, strategy, **kwargs):
        raise_if_requested()
