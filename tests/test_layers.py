"""The package's rooms form layers: a module imports only its own floor and the floors below it.

The floors, bottom to top (docs/architecture.md draws them):

    scenarios            the data side: datasets -> Avalanche streams (imports nothing of clprompt)
    foundation           clprompt/__init__, errors, config_check, versions
    model                the frozen CLIP: backbone, the open_clip adapter, losses
    parts                the slots a method composes
    methods              one file per method
    training             strategy, compiled step, checkpoints, torchrun, stop signals
    data                 views, batched transforms, feature cache, training protocols
    records              accuracy matrix, metrics, logs, outputs
    command line         run, stages, pretrain (miniclip_pretraining), report, sweep, __main__

The check reads the source (every import, at module level or inside a function), so a lazy import
upwards is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["scenarios", "foundation", "model", "parts", "methods", "training", "data", "records", "command line"]
FOUNDATION = {"clprompt", "clprompt.errors", "clprompt.config_check", "clprompt.versions", "clprompt.heap"}
COMMAND_LINE = {"clprompt.run", "clprompt.stages", "clprompt.pretrain", "clprompt.miniclip_pretraining",
                "clprompt.report", "clprompt.sweep", "clprompt.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> str:
    if module.split(".")[0] == "scenarios":
        return "scenarios"
    if module in FOUNDATION:
        return "foundation"
    if module in COMMAND_LINE:
        return "command line"
    room = module.split(".")[1]
    assert room in FLOORS, f"{module} is in no floor: add its room to tests/test_layers.py and the architecture page"
    return room


def sources() -> dict[str, str]:
    """module name -> source text, for every module of clprompt and scenarios."""
    paths = [*(ROOT / "clprompt").rglob("*.py"), *(ROOT / "scenarios").rglob("*.py")]
    return {module_name(path): path.read_text() for path in sorted(paths)}


def imported(source: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``source`` imports (``from clprompt import x`` names clprompt.x when that
    is a module)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names & known


def upward_imports(modules: dict[str, str]) -> list[str]:
    found = []
    for here, source in modules.items():
        for target in sorted(imported(source, set(modules))):
            if FLOORS.index(floor(target)) > FLOORS.index(floor(here)):
                found.append(f"{here} ({floor(here)}) imports {target} ({floor(target)})")
    return found


def test_no_module_imports_a_floor_above_its_own():
    upwards = upward_imports(sources())
    assert not upwards, "imports upwards:\n" + "\n".join(upwards)


def test_the_module_graph_has_no_cycle():
    modules = sources()
    graph = {name: imported(source, set(modules)) - {name} for name, source in modules.items()}
    for package in [m for m in graph if (ROOT / m.replace(".", "/") / "__init__.py").exists()]:
        graph[package] = {m for m in graph[package] if not m.startswith(package + ".")}  # a package's own modules
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            assert state.get(target) != 1, "import cycle: " + " -> ".join(path[path.index(target):] + [target])
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_check_sees_an_upward_import_and_a_scenarios_import_of_clprompt():
    """The checker itself: planted imports (a lazy one from model/ up to records/, and one from scenarios/ into
    clprompt) are reported."""
    modules = sources()
    modules["clprompt.model.planted"] = "def f():\n    from clprompt.records.metrics import summarize\n"
    modules["scenarios.planted"] = "import clprompt.errors\n"
    assert upward_imports(modules) == [
        "clprompt.model.planted (model) imports clprompt.records.metrics (records)",
        "scenarios.planted (scenarios) imports clprompt.errors (foundation)"]
