"""The one way clprompt writes a file that others read: whole or not at all, and on disk before it is used.

``write_atomic(path, write)`` calls ``write(temporary)`` on a temporary file beside ``path``, flushes it to
disk (fsync), renames it over ``path`` and flushes the folder's entry. A reader sees the old file or the new
one, never half of one; a kill, a full disk or a power cut mid-write leaves the previous file whole; an
error leaves no temporary file behind.

It lives at the bottom of the import graph (``scenarios`` imports nothing of ``clprompt``) so that both
packages use it: results.json, checkpoints, feature-cache shards, training-set records, sweep statuses and
the dataset split files built from an image folder.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Callable


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        handle = os.open(path, flags)
    except OSError:
        if directory:        # a folder that cannot be opened for reading (some network file systems): skip
            return
        raise
    try:
        os.fsync(handle)
    except OSError:
        if not directory:    # folders on some file systems refuse fsync; a file must not
            raise
    finally:
        os.close(handle)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary path)``, fsync, then rename over ``path`` (see the module docstring)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync(path.parent, directory=True)


def write_json_atomic(path: Path, payload) -> None:
    """``payload`` as indented JSON (values JSON does not know written as their ``str``), atomically."""
    write_atomic(path, lambda temporary: temporary.write_text(json.dumps(payload, indent=2, default=str),
                                                              encoding="utf-8"))
