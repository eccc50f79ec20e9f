"""The documentation as a user meets it: the README is a short front door whose links land, the site builds
strictly (a broken link or a missing page fails), and the worked examples of docs/extending.md run as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clprompt.run import run
from helpers import compose_config

ROOT = Path(__file__).resolve().parents[1]
EXTENDING = ROOT / "docs" / "extending.md"


def titled_blocks(page: Path) -> dict[str, str]:
    """The fenced code blocks of ``page`` that carry a ``title="path"``: path -> code."""
    blocks = re.findall(r'^```\w+ title="([^"]+)"\n(.*?)^```$', page.read_text(), flags=re.S | re.M)
    return dict(blocks)


def test_the_readme_is_a_front_door_whose_links_land():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links and all((ROOT / link).is_file() for link in links), [l for l in links if not (ROOT / l).is_file()]
    assert "<!-- test-command -->" in readme


def test_the_site_builds_strictly(tmp_path):
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-4000:]
    assert (tmp_path / "site" / "methods" / "coop" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "methods" / "index.html").read_text()
    assert "PromptMethod" in api and "class_text_features" in api     # mkdocstrings rendered the docstrings


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """docs/extending.md's files written where a user would keep them: my_lab/ (a package) and my_configs/."""
    for name, code in titled_blocks(EXTENDING).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    (tmp_path / "my_lab" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def quick(user_folder: Path, *overrides: str) -> list[str]:
    return [f"hydra.searchpath=[file://{user_folder / 'my_configs'}]", "model=tiny", "progress=false",
            "train.epochs=2", "train.warmup_epochs=0", "train.batch_size=4", f"cache.dir={user_folder / 'cache'}",
            *overrides]


def test_the_worked_examples_are_all_there():
    assert set(titled_blocks(EXTENDING)) == {"my_configs/method/csc_lamm.yaml", "my_lab/task_residual.py",
                                             "my_configs/method/task_residual.yaml", "my_lab/stripes.py",
                                             "my_configs/scenario/stripes.yaml"}


def test_the_worked_method_trains_from_zero_shot(user_folder):
    cfg = compose_config(quick(user_folder, "method=task_residual", "scenario=tiny_colors"))
    assert cfg.method._target_ == "my_lab.task_residual.TaskResidual" and cfg.train.epochs == 2
    results = run(cfg, user_folder / "run")
    assert results["status"] == "complete"
    learned = torch.load(user_folder / "run" / "adapted_state" / "experience_3.pt", weights_only=True)
    assert learned["residual"].abs().sum() > 0 and learned["zero_shot"].shape == learned["residual"].shape


def test_the_worked_composition_and_scenario_run(user_folder):
    cfg = compose_config(quick(user_folder, "method=csc_lamm", "scenario=stripes"))
    assert cfg.method.context.class_specific and cfg.method.context.length == 8
    results = run(cfg, user_folder / "run")
    assert results["status"] == "complete" and results["stream"]["n_experiences"] == 2
    assert results["class_names"] == ["red stripes", "green stripes", "blue stripes", "yellow stripes"]
