"""Reading a dataset's pickles without running code: only what a real archive holds is admitted.

``pickle.load`` executes whatever a file names (a crafted ``cifar-100-python/train`` could run any
command when loaded). ``load_data_pickle`` admits dicts, lists, tuples, strings, bytes, numbers and
NumPy arrays (the three NumPy globals an array's pickle names) and refuses every other global with a
message naming the file; a truncated or garbage file is refused the same way.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from scenarios.errors import DatasetFileError

# (module, name) pairs a NumPy array's pickle refers to (numpy 1 and numpy 2 module paths)
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class DataUnpickler(pickle.Unpickler):
    def __init__(self, handle, path: Path):
        super().__init__(handle, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise DatasetFileError(
                f"{self.path} asks to load {module}.{name} when unpickled, which a dataset file never needs "
                "(it may run code): refused. Replace the file with the original archive's (or use "
                "data.download=true on a machine with internet)."
            )
        return super().find_class(module, name)


def load_data_pickle(path: Path):
    """The object pickled in ``path``, built from plain data and NumPy arrays only."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return DataUnpickler(handle, path).load()
    except DatasetFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as error:
        raise DatasetFileError(
            f"{path} is not a readable pickle ({type(error).__name__}: {error}); it may be truncated or not "
            "the dataset's file. Re-extract the archive (or use data.download=true on a machine with internet)."
        ) from None
