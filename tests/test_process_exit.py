"""The process around runs: a finished, refused or interrupted run ends without the interpreter's teardown
(``clprompt.run.exit_without_teardown``), yet does what an exit must (atexit handlers, logs and output
flushed, the run's exit status; with another non-daemon thread alive it leaves the exit to the
interpreter); between the jobs of a sweep in one process the freed heap goes back to the system."""

import subprocess
import sys

import pytest

from helpers import REPO

SCRIPT = r"""
import atexit, logging, sys, threading, time
from pathlib import Path
folder = Path(sys.argv[1])
atexit.register(lambda: (folder / "atexit_ran").write_text("yes"))
handler = logging.FileHandler(folder / "run.log")
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
logging.info("the last line of the log")
print("the last line of stdout", end="")
import torch                                            # what makes the teardown slow
if sys.argv[2] == "thread":
    threading.Thread(target=time.sleep, args=(1,)).start()      # a non-daemon thread still alive
from clprompt.run import exit_without_teardown
exit_without_teardown(int(sys.argv[3]))
(folder / "after_the_call").write_text("the interpreter goes on, then exits the ordinary way")
"""


@pytest.mark.parametrize("status", [0, 1])
def test_the_exit_runs_the_handlers_flushes_and_skips_the_teardown(tmp_path, status):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "alone", str(status)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == status, done.stderr
    assert done.stdout == "the last line of stdout"
    assert (tmp_path / "atexit_ran").read_text() == "yes"
    assert "the last line of the log" in (tmp_path / "run.log").read_text()
    assert not (tmp_path / "after_the_call").exists()    # os._exit: nothing after the call ran


def test_with_another_thread_alive_the_interpreter_exits_as_usual(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "thread", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "after_the_call").exists() and (tmp_path / "atexit_ran").exists()


TRIM = r"""
import sys
from clprompt.heap import release_freed_memory

def rss():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) // 1024

chunks, pins = [], []
for _ in range(4000):               # 200 MB in 50 KB blocks (malloc's heap, not mmap), each followed by a live
    chunks.append(bytearray(50_000))    # 1 KB pin (malloc's too: above Python's small-object allocator)
    pins.append(bytearray(1_000))
del chunks                          # freed, but the pins keep the heap from shrinking at its top
freed = rss()
release_freed_memory()
print(freed, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim: glibc on Linux")
def test_between_sweep_jobs_the_freed_heap_goes_back_to_the_system():
    done = subprocess.run([sys.executable, "-c", TRIM], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    freed, trimmed = map(int, done.stdout.split())
    assert freed - trimmed > 150, (freed, trimmed)    # MiB of the 200 handed back
