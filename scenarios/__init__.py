"""The data side of clprompt: downstream datasets arranged into Avalanche task streams.

Nothing here imports the model side; a scenario receives the image transforms it should apply.
The stream builders are imported on first use (``scenarios.TaskStream`` loads Avalanche), so that
``scenarios.errors`` and ``scenarios.atomic_write`` stay light for the command line.
"""

from scenarios.errors import DatasetNotFoundError, StreamConfigError

__all__ = ["DatasetNotFoundError", "StreamConfigError", "TaskStream", "class_incremental_stream",
           "make_class_order", "split_classes"]


def __getattr__(name: str):
    if name in ("TaskStream", "class_incremental_stream", "make_class_order", "split_classes"):
        from scenarios import stream
        return getattr(stream, name)
    raise AttributeError(f"module 'scenarios' has no attribute {name!r}")
