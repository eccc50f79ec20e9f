"""The command line answers at once: --help describes clprompt, and --cfg job, an unknown option, a misspelled
key or a bad value are answered before torch, Avalanche, open_clip or TensorBoard are imported (their import
is what takes seconds; bench/cli_speed.py measures the times)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "avalanche", "open_clip", "torch.utils.tensorboard", "matplotlib")

PROBE = textwrap.dedent("""
    import json, runpy, sys
    heavy_modules, module = json.loads(sys.argv[2]), sys.argv[3]
    sys.argv = [module, *json.loads(sys.argv[1])]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__")
    except SystemExit as stop:
        if isinstance(stop.code, str):   # sys.exit("message"): the interpreter would print it
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else (1 if stop.code else 0)
    print("PROBE", json.dumps({"code": code, "heavy": [m for m in heavy_modules if m in sys.modules]}))
""")


def probe(tmp_path, *arguments, module="clprompt.run"):
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(arguments)), json.dumps(HEAVY), module],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    line = next((l for l in done.stdout.splitlines() if l.startswith("PROBE ")), None)
    assert line is not None, done.stderr[-3000:]
    return json.loads(line[len("PROBE "):]), done.stdout + done.stderr


@pytest.mark.parametrize("arguments, code, says", [
    (["--help"], 0, "Config groups"),
    (["--cfg", "job"], 0, "train:"),
    (["method=nope"], 1, "Could not find 'method/nope'"),
    (["train.epoch=2"], 1, "train.epoch is not a setting of clprompt. Did you mean train.epochs?"),
    (["-m", "seeed=1,2"], 1, "Did you mean seed?"),
    (["train.epochs=-1"], 1, "error: train.epochs=-1"),
    (["precision=fp64"], 1, "error: precision='fp64' is not allowed"),
    (["device=gpu"], 1, "error: device='gpu'"),
])
def test_a_config_is_answered_before_the_heavy_imports(tmp_path, arguments, code, says):
    result, output = probe(tmp_path, *arguments)
    assert result["code"] == code, output[-2000:]
    assert says in output, output[-2000:]
    assert result["heavy"] == [], f"imported before answering: {result['heavy']}"


@pytest.mark.parametrize("module, says", [("clprompt.pretrain", "mini-CLIP"), ("clprompt.report", "usage:")])
def test_the_other_commands_help_answers_before_the_heavy_imports(tmp_path, module, says):
    result, output = probe(tmp_path, "--help", module=module)
    assert result["code"] == 0 and says in output, output[-2000:]
    assert result["heavy"] == [], f"{module} --help imported {result['heavy']}"


def test_help_describes_clprompt(tmp_path):
    done = subprocess.run([sys.executable, "-m", "clprompt.run", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0
    for expected in ("continual learning of prompts for frozen CLIP", "Config groups", "method: attriclip",
                     "scenario: caltech101", "model: miniclip", "outputs/<scenario>/<method>/<time>",
                     "clprompt report", "resume="):
        assert expected in done.stdout, expected


def test_no_qp_solver_warning_without_quadprog(tmp_path):
    """quadprog is not a dependency (clprompt solves no QP); Avalanche's qpsolvers would warn without it."""
    code = textwrap.dedent("""
        import importlib.abc, sys, warnings
        class NoQuadprog(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "quadprog":
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, NoQuadprog())
        sys.modules.pop("quadprog", None)
        warnings.simplefilter("default")
        import clprompt.stages
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no QP solver" not in done.stderr
