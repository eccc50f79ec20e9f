#!/usr/bin/env bash
# The GPU check: one script for a few minutes on a lent GPU machine that has torch and torchvision but no
# network. Installs the wheels prepared by bench/gpu_wheels.sh into a temporary folder, checks that the
# stack imports, then runs bench/gpu_check.py, which prints each result as it comes and ends with one
# markdown table.
#
#     bash bench/gpu_check.sh                          # full: CUDA, ViT-B/16, about 8 minutes on an H100
#     bash bench/gpu_check.sh --quick                  # every measurement shrunk (tiny model, few images)
#     bash bench/gpu_check.sh --quick --device cpu --wheels none   # in the project's venv: no install
#
# Options: --quick, --device cuda|cpu (default cuda), --wheels DIR|none (default <repo>/.whl; "none", or
# a stack that already imports, skips the install); everything else goes to bench/gpu_check.py
# (python bench/gpu_check.py --help). PYTHON=... picks the interpreter (default: python, else python3).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$REPO/.whl"
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="${2:?--wheels needs a folder or none}"; shift 2 ;;
        --wheels=*) WHEELS="${1#--wheels=}"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
if [ -z "$PYTHON" ]; then
    echo "gpu_check: no python on PATH (set PYTHON=/path/to/python)" >&2; exit 2
fi
START=$(date +%s)
cd "$REPO"

# (a) the wheels, into a temporary folder put on PYTHONPATH (unless the stack is installed already: looked up,
#     not imported, so that (b) is the one import)
installed() {
    "$PYTHON" -c "import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ('clprompt', 'open_clip', 'avalanche', 'hydra', 'torch')))" 2>/dev/null
}
if [ "$WHEELS" != "none" ] && ! installed; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "gpu_check: no wheels in $WHEELS and the stack does not import: run bash bench/gpu_wheels.sh on a" \
             "machine with the package registry, copy .whl/ here (or give --wheels DIR)" >&2
        exit 2
    fi
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/clprompt-gpu-check.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    echo "gpu_check: installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $TMP/site" >&2
    if "$PYTHON" -m pip --version >/dev/null 2>&1; then
        "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
            --target "$TMP/site" "$WHEELS"/*.whl >"$TMP/pip.log" 2>&1
        rc=$?
    else   # no pip: a wheel is a zip archive; unpack each, with its .data/{purelib,platlib} at the top
        "$PYTHON" - "$TMP/site" "$WHEELS"/*.whl >"$TMP/pip.log" 2>&1 <<'EOF'
import shutil, sys, zipfile
from pathlib import Path
site = Path(sys.argv[1])
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(site)
for data in site.glob("*.data"):
    for kind in ("purelib", "platlib"):
        if (data / kind).is_dir():
            shutil.copytree(data / kind, site, dirs_exist_ok=True)
    shutil.rmtree(data)
EOF
        rc=$?
    fi
    if [ $rc -ne 0 ]; then
        echo "gpu_check: installing the wheels failed (a wheel for another Python? rebuild them with" \
             "bash bench/gpu_wheels.sh --python-version $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')):" >&2
        tail -5 "$TMP/pip.log" >&2
        exit 2
    fi
    export PYTHONPATH="$TMP/site${PYTHONPATH:+:$PYTHONPATH}"
fi

# (b) the stack imports, or nothing else is tried; (c) then, in the same process (the imports are not paid
#     twice), the measurements: bench/gpu_check.py
"$PYTHON" - "$REPO/bench/gpu_check.py" "${ARGS[@]}" <<'EOF'
import runpy, sys, time
started = time.perf_counter()
try:
    import clprompt.run, open_clip, avalanche.training, hydra   # noqa: F401
except BaseException as error:
    print(f"gpu_check: STOP: the stack does not import (import clprompt.run, open_clip, avalanche.training, hydra): "
          f"{type(error).__name__}: {error}\n"
          "gpu_check: torch and torchvision must be installed on this machine; the rest comes from the wheels "
          "(bash bench/gpu_wheels.sh on a machine with the registry, then copy .whl/ with the checkout)",
          file=sys.stderr)
    sys.exit(3)
print(f"gpu_check: stack imports ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
EOF
rc=$?
echo "gpu_check: done in $(( $(date +%s) - START )) s (exit $rc)" >&2
exit $rc
