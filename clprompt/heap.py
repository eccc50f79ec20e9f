"""The heap of a ``python -m clprompt.run`` process (glibc's malloc): freed memory is kept for reuse while
the run computes, and handed back to the system between the jobs of a sweep.

An image tower's activations are allocated and freed at every batch. With glibc's defaults, the freed
memory is returned to the system whenever more than a few tens of MB lie free at the top of the heap,
and the next batch faults the same pages in again, zero-filled. On a CPU this is measurable: a first
CoOp run on ViT-B/32 at 224 px (one thread; docs/performance.md, "The heap") took 3.0-4.4 million page
faults with glibc's defaults and about 1.1 million with the settings below, with the same peak resident
memory. A larger mmap threshold (64-256 MiB) saved more faults but raised the peak by 8-10 %.

``keep_freed_memory`` sets glibc's two thresholds once, when the command line starts a run:
allocations below ``MMAP_THRESHOLD`` come from the heap (above it, from their own mapping, returned when
freed), and free memory at the heap's top is returned only beyond ``TRIM_THRESHOLD``. An allocator chosen
in the environment is left as it is: another malloc preloaded (``LD_PRELOAD``, e.g. jemalloc or
tcmalloc) or glibc's own settings given (``MALLOC_*`` variables, ``GLIBC_TUNABLES`` with
``glibc.malloc``). A program that imports clprompt as a library keeps its own allocator settings.
``setting()`` says what was done; results.json records it under ``resources.heap``.
"""

from __future__ import annotations

import os
import sys

MMAP_THRESHOLD = 32 * 2 ** 20   # glibc's own ceiling for the threshold it adapts: no more memory at the peak
TRIM_THRESHOLD = 2 ** 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt's parameter numbers (malloc.h)

_setting = "glibc's defaults (not set by the command line)"


def chosen_in_environment(environ=os.environ) -> str | None:
    """The environment variable that chose the allocator or its settings, if any."""
    if environ.get("LD_PRELOAD", "").strip():
        return "LD_PRELOAD"
    for name in sorted(environ):
        if name.startswith("MALLOC_"):   # MALLOC_TRIM_THRESHOLD_, MALLOC_ARENA_MAX, ...
            return name
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def _libc():
    """glibc, or None (another C library, another system)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc has it; musl has no libc.so.6
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> str:
    """Keep freed memory in the heap for the next batch (see the module); returns ``setting()``."""
    global _setting
    chosen = chosen_in_environment()
    libc = _libc()
    if chosen:
        _setting = f"left as the environment chose it ({chosen})"
    elif libc is None:
        _setting = "not glibc: the system allocator's defaults"
    elif libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        _setting = (f"glibc, freed memory kept: mmap threshold {MMAP_THRESHOLD // 2 ** 20} MiB, "
                    f"trim threshold {TRIM_THRESHOLD // 2 ** 20} MiB")
    else:
        _setting = "glibc refused the thresholds: its defaults"
    return _setting


def setting() -> str:
    """What this process's heap does with freed memory (results.json's ``resources.heap``)."""
    return _setting


def release_freed_memory() -> None:
    """After a job of a sweep run in this process (Hydra's basic launcher): collect the job's garbage and
    hand the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing more).

    The jobs free what they built, but glibc's allocator keeps the freed heap, and the next job's model,
    images and activations land beside it: a six-job study of ViT-B/32 runs grew to 5.1 GB against 1.9-2.3
    GB for one run; with the trim, 2.0 GB. Measured between four jobs of a small ViT-B/32 run: 1.26-1.57 GB
    resident before the trim, 0.93 GB after, no object of a finished job alive."""
    import gc

    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
