"""clprompt's version and commit, and the versions of what it runs on (results.json's ``versions``, and
``--version``, which answers without importing torch, open_clip or Avalanche)."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

# module name -> the distribution that installs it
PACKAGES = {"torch": "torch", "open_clip": "open_clip_torch", "avalanche": "avalanche-lib"}


def package_version(module: str, distribution: str) -> str:
    """The version of the module this process imported, else that of the installed distribution."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return str(loaded.__version__)
    if module == "torch":   # its build (e.g. 2.14.1+cu130) is in torch/version.py, not in the metadata
        written = torch_build_version()
        if written:
            return written
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def torch_build_version() -> Optional[str]:
    """``torch.__version__`` read from torch/version.py without importing torch (None if not found)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", path.read_text(), re.M) if path.is_file() else None
    return found.group(1) if found else None


def versions() -> dict:
    import clprompt

    return {"clprompt": clprompt.__version__, "clprompt_commit": git_commit(), "python": platform.python_version(),
            **{module: package_version(module, distribution) for module, distribution in PACKAGES.items()}}


def git_commit() -> Optional[str]:
    """The checkout's commit (with '+dirty' for uncommitted changes) when clprompt runs from one, else None."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None
