#!/usr/bin/env bash
# Prepare the wheels that bench/gpu_check.sh installs on a GPU machine that has torch and torchvision but
# no network: every runtime dependency of clprompt except torch / torchvision (and their CUDA packages),
# at the exact versions of constraints.txt, plus a wheel of clprompt itself built from this working tree.
#
#     bash bench/gpu_wheels.sh                          # for this machine's Python (e.g. 3.11, Linux x86-64)
#     bash bench/gpu_wheels.sh --python-version 3.12    # for a GPU machine with another Python (Linux x86-64,
#                                                       # glibc >= 2.28; --platform TAG for another)
#     bash bench/gpu_wheels.sh --dest /some/folder      # elsewhere than .whl/
#
# Run it in the project's environment (.venv), on a machine that reaches the package registry. The list
# of packages is clprompt's dependency closure as installed in that environment (importlib.metadata,
# markers and extras evaluated, not descending into torch / torchvision / triton / nvidia-* / cuda-*, which
# the GPU machine's torch brings), each at its constraints.txt version (else the installed one): test,
# docs and launcher packages are not in it. A package without a wheel (antlr4-python3-runtime 4.9.3,
# GPUtil 1.4.0) is built into one with `pip wheel` (pure Python: any Python 3). Packages that an extra
# asks for but this environment does not install either (qpsolvers' solvers) are left out, as here. Writes
# DEST/MANIFEST.txt (name==version, one a line) and removes wheels of other versions from DEST.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO/.whl"
PYVER=""
PLATFORM="manylinux_2_28_x86_64"   # glibc 2.28 or newer; covers the older manylinux tags too
JOBS=4
while [ $# -gt 0 ]; do
    case "$1" in
        --dest) DEST="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
        --python-version) PYVER="$2"; shift 2 ;;
        --platform) PLATFORM="$2"; shift 2 ;;
        --jobs) JOBS="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "gpu_wheels.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-python}"
cd "$REPO"
mkdir -p "$DEST"

# 1. the package list: clprompt's runtime closure, pinned by constraints.txt
"$PYTHON" - "$REPO/constraints.txt" > "$DEST/.requirements" <<'EOF'
import importlib.metadata as md
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

def brought_by_torch(name):   # installed on the GPU machine with torch itself
    return name in {"torch", "torchvision", "triton"} or name.startswith(("nvidia-", "cuda-"))

pins = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, version = line.split("==", 1)
        pins[canonicalize_name(name)] = version.strip()

def wanted(requirement, extras=("",)):
    return requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras)

found, left_out, todo = {}, set(), [Requirement(r) for r in md.requires("clprompt") or []]
todo = [r for r in todo if wanted(r)]   # no extras of clprompt (test, docs, launchers)
while todo:
    requirement = todo.pop()
    name = canonicalize_name(requirement.name)
    if brought_by_torch(name):
        continue
    try:
        dist = md.distribution(requirement.name)
    except md.PackageNotFoundError:
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            # asked for through an extra (avalanche-lib's qpsolvers[open_source_solvers]) that the tested
            # environment does not install either: left out, as there
            left_out.add(canonicalize_name(requirement.name))
            continue
        sys.exit(f"gpu_wheels.sh: {requirement.name} (needed by clprompt) is not installed in this environment: "
                 "pip install -e . -c constraints.txt first")
    extras = ("", *sorted(requirement.extras))
    if name in found and set(extras) <= found[name][1]:
        continue
    found.setdefault(name, [pins.get(name, dist.version), set()])[1].update(extras)
    todo += [r for r in map(Requirement, dist.requires or []) if wanted(r, extras)]
for name, (version, _) in sorted(found.items()):
    print(f"{name}=={version}")
if left_out:
    print(f"gpu_wheels.sh: left out {len(left_out)} packages of extras that this environment does not install "
          f"either: {', '.join(sorted(left_out))}", file=sys.stderr)
EOF
COUNT=$(wc -l < "$DEST/.requirements")
echo "gpu_wheels.sh: $COUNT packages (clprompt's runtime closure less torch's), into $DEST"

# 2. one wheel per package: the registry's binary wheel, else one built from the source distribution
#    (antlr4-python3-runtime 4.9.3 and GPUtil 1.4.0 have none; both are pure Python). 4 downloads at a time.
export PYTHON DEST TARGET_ARGS=""
if [ -n "$PYVER" ]; then
    TARGET_ARGS="--python-version $PYVER --platform $PLATFORM --implementation cp"
fi
# shellcheck disable=SC2016
xargs -P "$JOBS" -I{} bash -c '
    log="$DEST/.log.$1"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: $TARGET_ARGS -d "$DEST" "$1" >"$log" 2>&1 ||
        "$PYTHON" -m pip wheel --quiet --no-deps -w "$DEST" "$1" >>"$log" 2>&1 ||
        { echo "gpu_wheels.sh: FAILED $1 (log: $log)" >&2; exit 1; }
    rm -f "$log"' _ {} < "$DEST/.requirements"

# 3. clprompt itself, from this working tree (tracked and new files, not what .gitignore hides), built in
#    a clean copy so that the checkout's build/ and *.egg-info are neither used nor touched
rm -f "$DEST"/clprompt-*.whl
SRC="$(mktemp -d)"
trap 'rm -rf "$SRC"' EXIT
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | tar -c --null -T - -f - | tar -x -C "$SRC" -f -
"$PYTHON" -m pip wheel --quiet --no-deps -w "$DEST" "$SRC"

# 4. keep exactly one wheel per wanted package; say what is there
"$PYTHON" - "$DEST" "$PYVER" <<'EOF'
import sys
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

dest, pyver = Path(sys.argv[1]), sys.argv[2] or "%d.%d" % sys.version_info[:2]
cp = "cp" + pyver.replace(".", "")
wanted = dict(line.strip().split("==") for line in (dest / ".requirements").read_text().split())
wanted = {canonicalize_name(k): v for k, v in wanted.items()}
have, problems = {}, []
for wheel in sorted(dest.glob("*.whl")):
    name, version, _, tags = parse_wheel_filename(wheel.name)
    if name == "clprompt":
        have[name] = (str(version), wheel)
    elif name not in wanted or str(version) != wanted[name]:
        wheel.unlink()   # an earlier version, or a package no longer needed
        print(f"gpu_wheels.sh: removed {wheel.name} (not in the current list)")
    else:
        have[name] = (str(version), wheel)
        if not any(t.interpreter.startswith("py") or t.interpreter == cp or t.abi == "abi3" for t in tags):
            problems.append(f"{wheel.name} is not for Python {pyver} (built here from a source distribution?)")
missing = sorted(set(wanted) - set(have))
if missing:
    problems.append(f"no wheel for: {', '.join(missing)}")
(dest / "MANIFEST.txt").write_text("".join(f"{n}=={v}\n" for n, (v, _) in sorted(have.items())))
size = sum(w.stat().st_size for _, w in have.values())
print(f"gpu_wheels.sh: {len(have)} wheels, {size / 2**20:.1f} MiB in {dest} (list: {dest / 'MANIFEST.txt'})")
if problems:
    sys.exit("gpu_wheels.sh: " + "; ".join(problems))
EOF
rm -f "$DEST/.requirements"
