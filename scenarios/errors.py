"""Errors of the data side: each says what was missing, where we looked, and how to supply it."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing or incomplete on disk."""


class StreamConfigError(ValueError):
    """A stream cannot be built as configured (class order, number of experiences, ...)."""


class DatasetFileError(DatasetNotFoundError):
    """A dataset file is there but unreadable, damaged, or asks to run code."""
