"""The headline command means what it says: a real dataset runs on a real CLIP by default, the sandbox on
its mini-CLIP; a mismatch given explicitly runs, warns in one line and is recorded in results.json."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clprompt.run import run
from clprompt.stages import worlds
from helpers import compose_config, write_fashion_mnist

SCENARIOS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" / "scenario").glob("*.yaml"))
SANDBOX = {"shapes_domains", "shapes_fine", "shapes_lowcontrast", "shapes_novel", "shapes_palette", "shapes_sequence",
           "shapes_textured", "split_shapes", "split_shapes_palette", "tiny_colors"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_defaults_to_a_model_of_its_own_world(scenario):
    cfg = compose_config([f"scenario={scenario}"])
    if scenario in SANDBOX:
        assert (cfg.model.arch, cfg.model.pretrained) == ("miniclip", "clprompt/pretrained/miniclip-v1.safetensors")
    else:
        assert (cfg.model.arch, cfg.model.pretrained) == ("ViT-B-16", "openai")
    assert worlds(cfg) == {"scenario": "sandbox" if scenario in SANDBOX else "real",
                           "model": "sandbox" if scenario in SANDBOX else "real", "match": True}
    explicit = compose_config([f"scenario={scenario}", "model=tiny"])     # the command line wins, either order
    assert explicit.model.arch == "tiny" == compose_config(["model=tiny", f"scenario={scenario}"]).model.arch


def test_a_real_dataset_on_the_sandbox_model_runs_warns_once_and_is_recorded(tmp_path, caplog):
    write_fashion_mnist(tmp_path / "data", train_per_class=2, test_per_class=2)
    cfg = compose_config(["scenario=split_fmnist", "model=tiny", "method=zeroshot", "progress=false",
                          f"data.root={tmp_path / 'data'}", f"cache.dir={tmp_path / 'cache'}"])
    with caplog.at_level(logging.WARNING, logger="clprompt"):
        results = run(cfg, tmp_path / "run")
    assert results["status"] == "complete"
    assert results["worlds"] == {"scenario": "real", "model": "sandbox", "match": False}
    warned = [r.getMessage() for r in caplog.records if "scenario with a" in r.getMessage()]
    assert len(warned) == 1 and "a real scenario with a sandbox model (tiny)" in warned[0] and "model=vit_b16" in warned[0]


def test_a_sandbox_run_on_its_own_model_does_not_warn(tmp_path, caplog):
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "method=zeroshot", "progress=false",
                          f"cache.dir={tmp_path / 'cache'}"])
    with caplog.at_level(logging.WARNING, logger="clprompt"):
        results = run(cfg, tmp_path / "run")
    assert results["worlds"]["match"] and not [r for r in caplog.records if "scenario with a" in r.getMessage()]
