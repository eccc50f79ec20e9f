"""The run's heap keeps freed memory for the next batch (clprompt/heap.py), unless the environment chose
the allocator; results.json says which."""

import json
import os
import subprocess
import sys

import pytest

import warm_python
from clprompt import heap
from helpers import REPO

GLIBC = heap._libc() is not None

# Resident memory after 200 MB of 20 MB buffers are freed, in a new interpreter: glibc's defaults give them
# back to the system at once (each has its own mapping); with keep_freed_memory they stay for reuse.
AFTER_FREE = """
import sys
from clprompt import heap
def resident_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2 ** 20
if sys.argv[1] == "keep":
    heap.keep_freed_memory()
before = resident_mb()
buffers = [bytearray(b"1") * (20 * 2 ** 20) for _ in range(10)]
del buffers
print(resident_mb() - before, heap.setting())
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc (Linux)")
@pytest.mark.parametrize("mode", ["keep", "defaults"])
def test_freed_memory_is_kept_for_reuse_only_when_set(mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    done = subprocess.run([sys.executable, "-c", AFTER_FREE, mode], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    kept_mb, setting = done.stdout.split(" ", 1)
    if mode == "keep":
        assert float(kept_mb) > 150 and setting.startswith("glibc, freed memory kept: mmap threshold 32 MiB")
    else:
        assert float(kept_mb) < 50 and "not set by the command line" in setting


@pytest.mark.parametrize("environ, chosen", [
    ({}, None), ({"PATH": "/bin"}, None),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "LD_PRELOAD"), ({"LD_PRELOAD": " "}, None),
    ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_"), ({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}, "GLIBC_TUNABLES"),
    ({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, None),
])
def test_an_allocator_chosen_in_the_environment_is_named(environ, chosen):
    assert heap.chosen_in_environment(environ) == chosen


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc (Linux)")
@pytest.mark.parametrize("extra, says", [({}, "glibc, freed memory kept"),
                                         ({"MALLOC_ARENA_MAX": "2"}, "left as the environment chose it (MALLOC_ARENA_MAX)")])
def test_a_run_records_what_its_heap_does(tmp_path, extra, says):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **extra}
    done = warm_python.run(["-m", "clprompt.run", "scenario=tiny_colors", "model=tiny", "method=zeroshot",
                            "progress=false", f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "results.json").read_text())["resources"]["heap"].startswith(says)
