"""The data side of clprompt: downstream datasets arranged into Avalanche task streams.

Nothing here imports the model side; a scenario receives the image transforms it should apply.
"""

from scenarios.errors import DatasetNotFoundError, StreamConfigError
from scenarios.stream import TaskStream, class_incremental_stream, make_class_order, split_classes

__all__ = ["DatasetNotFoundError", "StreamConfigError", "TaskStream", "class_incremental_stream",
           "make_class_order", "split_classes"]
