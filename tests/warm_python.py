"""``python -m clprompt.run ...`` for the tests, without paying its imports each time.

A test that checks what a command prints, writes and returns needs a process of its own (its exit status,
its signals, its ``os._exit``), but not a fresh interpreter: importing torch, Avalanche and open_clip takes
4-7 s of a CLI test's time on 2 cores. ``run`` starts, once per test process, a *warm* Python that has
imported ``clprompt.stages`` (everything a valid run loads) and nothing else of the tests; each call then
forks it. The forked child is set up as ``subprocess.run([sys.executable, *args], cwd=cwd, env=env)`` would
set up a new interpreter: its working directory, environment, ``sys.argv``, ``sys.path`` (with the
``PYTHONPATH`` it is given) and ``__main__``; stdout and stderr go to files that come back as
``CompletedProcess`` text; it ends as an interpreter does (threads joined, atexit handlers, streams
flushed), with the exit status or the signal that ended it.

What a fork cannot give, a real process does, and ``run`` starts one instead:
- ``CLPROMPT_TEST_WARM=0`` in the environment of the suite (every call then starts a new interpreter);
- an environment that differs from the warm process's in a variable read when an interpreter or torch
  starts (``PYTHON*`` other than ``PYTHONPATH``, ``LD_*``, ``MALLOC_*``, ``OMP_*``, ``MKL_*``, ...);
- a command that is not ``-m <module>`` or ``-c <code>``.
Tests about the process itself (which modules a command imports, the interpreter's teardown, launchers'
and torchrun's worker processes, an installed copy) call ``subprocess`` directly.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = "clprompt.stages"   # what `python -m clprompt.run` imports for a valid config
# Variables read when the interpreter, the C library, the OpenMP runtime or torch load: the warm process read
# them at its own start. Others are read later, in the forked child: CUDA_* (CUDA starts in the child, never
# in the warm process), TORCHINDUCTOR_* and the rest that torch.compile itself writes into the environment.
AT_START = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES", "OMP_", "GOMP_", "MKL_", "OPENBLAS_", "TORCH_LOGS",
            "TORCH_CPP_LOG_LEVEL", "PYTORCH_JIT")
HERE = Path(__file__).resolve().parent
# The warm process's environment: this test process's when it collected the tests (conftest has set the
# threads and the cache folder), not whatever a test changed before the first call.
START_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run(args: list[str], *, cwd, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout)``, forked from the warm process where that gives the same process (see the module)."""
    env = dict(os.environ if env is None else env)
    args = [str(a) for a in args]
    if not _servable(args, env):
        return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, preexec_fn=_shell_like_signals)
    return _server().run(args, str(cwd), env, timeout)


def _servable(args: list[str], env: dict) -> bool:
    if os.environ.get("CLPROMPT_TEST_WARM", "1") == "0" or len(args) < 2 or args[0] not in ("-m", "-c"):
        return False
    return all(env.get(key) == START_ENV.get(key) for key in set(env) | set(START_ENV)
               if key.startswith(AT_START) and key != "PYTHONPATH")


class _Server:
    """The warm process of this test process, and the line protocol to it: a request (JSON) in; the
    child's pid, then its status, out."""

    instance: _Server | None = None

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, __file__], cwd=HERE, env=START_ENV, bufsize=0,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_shell_like_signals)
        self.pending = b""
        atexit.register(self.process.kill)
        ready = self._line(timeout=120)
        if ready != "ready":
            raise RuntimeError(f"the warm process did not start: {ready!r}")

    def _line(self, timeout: float, child: int | None = None) -> str:
        """The next line from the warm process; "" if none came within ``timeout`` (``child`` is then killed
        and its status line read)."""
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.process.stdout], [], [], timeout)
            chunk = os.read(self.process.stdout.fileno(), 4096) if ready else b""
            if not chunk:   # the time is up, or the warm process ended
                if child is not None and ready == []:
                    os.kill(child, signal.SIGKILL)
                    self._line(timeout=60)
                return ""
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode().strip()

    def run(self, args, cwd, env, timeout) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="warm-") as folder:
            out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
            request = {"args": args, "cwd": cwd, "env": env, "stdout": out, "stderr": err}
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            pid = self._line(timeout=60)
            status = self._line(timeout=timeout, child=int(pid)) if pid else ""
            read = [Path(name).read_text(errors="replace") if os.path.exists(name) else "" for name in (out, err)]
            if self.process.poll() is not None:
                raise RuntimeError(f"the warm process ended (status {self.process.returncode}): {read[1][-2000:]}")
            if not status:
                raise subprocess.TimeoutExpired([sys.executable, *args], timeout, read[0], read[1])
            return subprocess.CompletedProcess([sys.executable, *args], int(status), read[0], read[1])


def _server() -> _Server:
    if _Server.instance is None or _Server.instance.process.poll() is not None:
        _Server.instance = _Server()
    return _Server.instance


def _shell_like_signals():
    """As a command started from a terminal: SIGINT not ignored (a shell's background job, a CI runner's,
    inherits it ignored, and Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- the warm process -------------------------------------------------------------------------------------

def _serve() -> None:
    import importlib

    base_path = sys.path[1:]   # without this file's folder: a child's own first entry goes there
    importlib.import_module(PRELOAD)
    for name in [n for n in sys.modules if n == "helpers" or n.startswith("tests")]:
        raise RuntimeError(f"the warm process imported {name}: a child would find it without its PYTHONPATH")
    requests, replies = sys.stdin, sys.stdout
    print("ready", file=replies, flush=True)
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, base_path)   # never returns
        print(pid, file=replies, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), file=replies, flush=True)


def _child(request: dict, base_path: list[str]) -> None:
    """Become ``python <args>`` started in ``cwd`` with ``env``; ends the process."""
    import runpy
    import threading
    import traceback
    import types

    code = 1
    try:
        nowhere = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nowhere, 0)
        for fd, name in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        kind, target, *rest = request["args"]
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.getcwd() if kind == "-m" else "", *extra, *base_path]
        try:
            if kind == "-m":
                for name in [n for n in sys.modules if n == target or n.startswith(target + ".")]:
                    del sys.modules[name]   # as in a new interpreter: the module runs as __main__ only
                sys.argv = [target, *rest]
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                main = types.ModuleType("__main__")
                main.__dict__["__builtins__"] = __builtins__
                sys.modules["__main__"] = main
                sys.argv = ["-c", *rest]
                exec(compile(target, "<string>", "exec"), main.__dict__)
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except KeyboardInterrupt:
            traceback.print_exc()
            code = -signal.SIGINT
        except BaseException:   # noqa: BLE001 - as the interpreter: the traceback, status 1
            traceback.print_exc()
        if hasattr(threading, "_shutdown"):
            threading._shutdown()   # the interpreter waits for non-daemon threads before atexit
        atexit._run_exitfuncs()
    except BaseException:   # noqa: BLE001 - the child must never go back into the server's loop
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if code < 0:   # an uncaught KeyboardInterrupt ends the process by SIGINT, as the interpreter does
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


if __name__ == "__main__":
    _serve()
