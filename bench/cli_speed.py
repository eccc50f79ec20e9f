"""How long the command line takes to answer when nothing is run: --help, --cfg job, an unknown option of a
config group, a misspelled key, a bad value. Whole-process wall time (min and median of --repeats),
interleaved over the source trees given, plus ``python -X importtime -c "import clprompt.run"``.

    python bench/cli_speed.py                            # this checkout
    python bench/cli_speed.py --trees /tmp/before .      # an older checkout against this one, one run

Each tree is put first on PYTHONPATH; the commands run from a temporary folder (so no ``clprompt`` folder in
the working directory shadows the package) with the current interpreter.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "--help": ["--help"],
    "--cfg job": ["--cfg", "job"],
    "unknown option (method=nope)": ["method=nope"],
    "misspelled key (train.epoch=2)": ["train.epoch=2"],
    "bad value (train.epochs=-1)": ["train.epochs=-1"],
    "bad value (precision=fp64)": ["precision=fp64"],
}


def timed(tree: Path, arguments: list[str], folder: str) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HYDRA_FULL_ERROR": "0"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clprompt.run", *arguments], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    return time.perf_counter() - start, done.returncode


def import_seconds(tree: Path, folder: str) -> tuple[float, list[str]]:
    """``import clprompt.run``'s cumulative time and the five costliest imports it makes itself."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import clprompt.run"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    rows = [re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line) for line in done.stderr.splitlines()]
    rows = [(int(m.group(2)), len(m.group(3)), m.group(4)) for m in rows if m]
    total = next(cumulative for cumulative, depth, name in rows if name == "clprompt.run")
    top = sorted((r for r in rows if r[1] == 3), reverse=True)[:5]   # the imports clprompt.run makes
    return total / 1e6, [f"{name} {cumulative / 1e6:.2f} s" for cumulative, _, name in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs="+", default=[str(Path(__file__).resolve().parents[1])])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees]
    print(f"{platform.node()}: {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}")
    times = {(tree, case): [] for tree in trees for case in CASES}
    codes = {}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for case, arguments in CASES.items():
                for tree in (trees if repeat % 2 == 0 else trees[::-1]):
                    seconds, code = timed(tree, arguments, folder)
                    times[(tree, case)].append(seconds)
                    codes[(tree, case)] = code
        imports = {tree: import_seconds(tree, folder) for tree in trees}
    header = "| case | " + " | ".join(f"{tree} min / median (s)" for tree in trees) + " |"
    print(header + "\n|" + "---|" * (len(trees) + 1))
    for case in CASES:
        cells = [f"{min(times[(t, case)]):.2f} / {statistics.median(times[(t, case)]):.2f} (exit {codes[(t, case)]})"
                 for t in trees]
        print(f"| {case} | " + " | ".join(cells) + " |")
    for tree, (seconds, top) in imports.items():
        print(f"import clprompt.run from {tree}: {seconds:.2f} s; costliest: {', '.join(top)}")


if __name__ == "__main__":
    main()
