"""The tests' warm process (tests/warm_python.py) gives a command the process a new interpreter would: the
same output, exit status, signal, working directory, environment, arguments and import path."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import warm_python
from helpers import REPO

PROBE = textwrap.dedent("""
    import json, os, sys
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0], "probe": os.environ.get("PROBE"),
                      "run_loaded": "clprompt.run" in sys.modules, "helpers": __import__("helpers").__file__}))
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
""")


def fresh(args, cwd, env):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("status", [0, 3])
def test_a_forked_command_sees_and_returns_what_a_new_interpreter_does(tmp_path, status):
    env = dict(os.environ, PROBE="x y", PYTHONPATH=str(REPO / "tests"))
    args = ["-c", PROBE, str(status), "second argument"]
    warm, new = warm_python.run(args, cwd=tmp_path, env=env), fresh(args, tmp_path, env)
    assert (warm.returncode, warm.stdout, warm.stderr) == (new.returncode, new.stdout, new.stderr) \
        == (status, new.stdout, "to stderr\n")
    assert '"run_loaded": false' in warm.stdout and '"probe": "x y"' in warm.stdout


def test_a_module_runs_as_main_with_the_folder_first_on_its_path(tmp_path):
    (tmp_path / "probe_module.py").write_text("import sys, os\nprint(sys.argv[1:], sys.path[0] == os.getcwd(), "
                                             "__name__)\nraise SystemExit('a message')\n")
    args = ["-m", "probe_module", "a", "b"]
    warm, new = warm_python.run(args, cwd=tmp_path), fresh(args, tmp_path, dict(os.environ))
    assert (warm.returncode, warm.stdout, warm.stderr) == (new.returncode, new.stdout, new.stderr) \
        == (1, "['a', 'b'] True __main__\n", "a message\n")


def test_an_uncaught_exception_a_signal_and_ctrl_c_end_the_process_as_they_would(tmp_path):
    raised = warm_python.run(["-c", "raise ValueError('no')"], cwd=tmp_path)
    assert raised.returncode == 1 and raised.stderr.rstrip().endswith("ValueError: no")
    killed = warm_python.run(["-c", "import os, signal; print('before', flush=True); os.kill(os.getpid(), signal.SIGKILL)"],
                             cwd=tmp_path)
    assert (killed.returncode, killed.stdout) == (-signal.SIGKILL, "before\n")
    interrupted = warm_python.run(["-c", "import os, signal; os.kill(os.getpid(), signal.SIGINT)"], cwd=tmp_path)
    assert interrupted.returncode == -signal.SIGINT and "KeyboardInterrupt" in interrupted.stderr


def test_threads_are_joined_and_atexit_handlers_run_before_the_end(tmp_path):
    code = textwrap.dedent("""
        import atexit, threading, time
        atexit.register(lambda: print("atexit"))
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread"))).start()
    """)
    assert warm_python.run(["-c", code], cwd=tmp_path).stdout == "thread\natexit\n"


def test_a_command_past_its_timeout_is_killed(tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        warm_python.run(["-c", "import time; print('started', flush=True); time.sleep(60)"], cwd=tmp_path, timeout=2)
    for number in range(10):   # the warm process goes on; quick commands one after another
        assert warm_python.run(["-c", f"print({number})"], cwd=tmp_path).stdout == f"{number}\n"


def test_an_environment_read_at_start_up_gets_a_new_interpreter(tmp_path, monkeypatch):
    monkeypatch.delenv("CLPROMPT_TEST_WARM", raising=False)
    started = []
    monkeypatch.setattr(warm_python._Server, "run", lambda *a: started.append("warm"))
    threads = str(int(os.environ.get("OMP_NUM_THREADS", "1")) + 1)
    done = warm_python.run(["-c", "import os; print(os.environ['OMP_NUM_THREADS'])"], cwd=tmp_path,
                           env=dict(os.environ, OMP_NUM_THREADS=threads))
    assert done.stdout == f"{threads}\n" and started == []
    warm_python.run(["-c", "pass"], cwd=tmp_path, env=dict(os.environ, PROBE="read later"))
    assert started == ["warm"]


def test_variables_torch_sets_while_it_compiles_keep_the_fork(tmp_path, monkeypatch):
    """torch.compile writes TORCHINDUCTOR_CACHE_DIR, CUDA_HOME, KMP_DUPLICATE_LIB_OK and TORCH_WARM_POOL into
    the test process's environment; they are read when a run compiles, so a command given that environment
    is still forked."""
    monkeypatch.delenv("CLPROMPT_TEST_WARM", raising=False)
    for name, value in (("TORCHINDUCTOR_CACHE_DIR", str(tmp_path)), ("CUDA_HOME", "/usr/local"),
                        ("KMP_DUPLICATE_LIB_OK", "TRUE"), ("TORCH_WARM_POOL", "0")):
        monkeypatch.setenv(name, value)
    started = []
    monkeypatch.setattr(warm_python._Server, "run", lambda *a: started.append("warm"))
    warm_python.run(["-c", "pass"], cwd=tmp_path)
    assert started == ["warm"]


def test_a_new_interpreter_receives_ctrl_c_even_from_a_background_job(tmp_path):
    """A shell's background job (a CI runner's) ignores SIGINT, and its children inherit that; the command
    gets SIGINT as from a terminal in both kinds of process."""
    threads = str(int(os.environ.get("OMP_NUM_THREADS", "1")) + 1)   # not forkable: a new interpreter
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        done = warm_python.run(["-c", "import os, signal; os.kill(os.getpid(), signal.SIGINT)"], cwd=tmp_path,
                               env=dict(os.environ, OMP_NUM_THREADS=threads))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done.returncode == -signal.SIGINT and "KeyboardInterrupt" in done.stderr
