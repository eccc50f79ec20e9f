"""The prepared GPU check (bench/gpu_check.sh) runs end to end on CPU in its quick mode: every row of its
final table is there and none failed. Run in this environment (--wheels none: nothing installed)."""

import os
import subprocess
import sys

import pytest

from helpers import REPO

ROWS = ["end-to-end LAMM", "end-to-end CoOp", "end-to-end VPT-deep", "text step (LAMM, batch 32)",
        "image tower bf16", "batched transforms", "1000-class memory (CoOp, batch 32)", "killed and resumed run"]


def final_table(output: str) -> dict:
    """The last markdown table of the output: check name -> its cells."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("| check |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def gpu_check(tmp_path, *options):
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    return subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--quick", "--device", "cpu",
                           "--wheels", "none", *options], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_quick_gpu_check_on_cpu_checks_the_imports_first_and_prints_the_table(tmp_path):
    """The default suite's share (the in-process rows, no command-line runs): the script's path from the
    import check to the table; the whole check (six runs, a killed and resumed one) is the slow test below."""
    done = gpu_check(tmp_path, "--only", "tower,transforms,text")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gpu_check: stack imports" in done.stderr
    table = final_table(done.stdout)
    assert list(table) == ROWS, done.stdout[-3000:]
    for row in ("text step (LAMM, batch 32)", "image tower bf16", "batched transforms"):
        text = " ".join(table[row])
        assert "failed" not in text and "skipped" not in text and "not run" not in text, f"{row}: {text}"
    assert "equal to PIL: yes" in table["batched transforms"][4]
    assert "not run (--only)" in " ".join(table["killed and resumed run"])


@pytest.mark.slow   # about 60-90 s on 2 cores: six command-line runs and a killed-and-resumed one
def test_quick_gpu_check_on_cpu_fills_every_row(tmp_path):
    done = gpu_check(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gpu_check: stack imports" in done.stderr   # the import check ran first
    table = final_table(done.stdout)
    assert list(table) == ROWS, done.stdout[-3000:]
    for row, cells in table.items():
        text = " ".join(cells)
        assert "failed" not in text and "skipped" not in text and "not run" not in text, f"{row}: {text}"
    assert table["killed and resumed run"][2] == "identical"
    assert "equal to PIL: yes" in table["batched transforms"][4]
    assert "n/a (CPU)" in table["image tower bf16"][3]
    assert not list(tmp_path.glob("clprompt-gpu-check-*"))   # its temporary folder is removed
