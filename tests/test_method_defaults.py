"""Every method runs with its own shipped defaults on every shipped model it applies to.

Block lists and depths written for the papers' 12-block ViT-B (``method.paper_blocks``: DualPrompt, CODA-Prompt,
MaPLe) are scaled to the run's tower by clprompt.parts.blocks' rule, AttriCLIP's prompt length is fitted to the
text context; a list, depth or length given for the run's own tower is used as given, or refused with the
message it always had. RN50: the image-prompt methods refuse a ResNet tower, the others build on it with
their defaults."""

import logging
import random
import re

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from clprompt.errors import ConfigValueError, UnsupportedBackboneError
from clprompt.parts.blocks import scale_block_lists
from clprompt.run import run
from helpers import REPO, compose_config

METHODS = sorted(path.stem for path in (REPO / "configs" / "method").glob("*.yaml"))
SCALED = {"dualprompt": ("g_layers", "e_layers"), "coda_prompt": ("layers",), "maple": ("depth",),
          "maple_lamm": ("depth",)}
PAPER = {"dualprompt": {"g_layers": [0, 1], "e_layers": [2, 3, 4]}, "coda_prompt": {"layers": [0, 1, 2, 3, 4]},
         "maple": {"depth": 9}, "maple_lamm": {"depth": 9}, "attriclip": {"prompt_length": 12}}
NAMES = ["red", "green", "blue", "yellow"]


@pytest.fixture(scope="module")
def backbones():
    """The tiny CLIP (random weights, seeded) and the mini-CLIP, built once for this file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return {model: instantiate(compose_config([f"model={model}"]).model) for model in ("tiny", "miniclip")}


def build(backbone, model: str, method: str, *overrides, names=NAMES):
    """The method as a run builds it from ``method=<method> <overrides>`` (the cause of a refusal raised as is)."""
    cfg = compose_config([f"model={model}", f"method={method}", *overrides])
    try:
        return instantiate(cfg.method, backbone=backbone, class_names=names)
    except InstantiationException as error:
        raise error.__cause__ or error


# ----- every YAML, its defaults, one short experience ---------------------------------------------------

@pytest.mark.parametrize("model", ["tiny", "miniclip"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_one_experience_with_its_defaults(tmp_path_factory, caplog, model, method):
    """``python -m clprompt.run method=<m> scenario=tiny_colors model=<model> train.epochs=1``, in-process, on one
    short experience (2 classes, 2 training images each, batch 4, no warm-up: an epoch of 1 is all warm-up
    otherwise). Where the defaults are scaled, one log line says so."""
    shared = tmp_path_factory.getbasetemp() / "method_defaults_cache"
    caplog.set_level(logging.INFO, logger="clprompt")
    cfg = compose_config([
        "scenario=tiny_colors", f"model={model}", f"method={method}", "progress=false", "train.epochs=1",
        "train.warmup_epochs=0", "train.batch_size=4", "eval.batch_size=8", "scenario.n_classes=2",
        "scenario.n_experiences=1", "scenario.train_per_class=2", "scenario.test_per_class=2", f"cache.dir={shared}"])
    results = run(cfg, tmp_path_factory.mktemp(f"{method}_{model}"))
    assert results["status"] == "complete"
    assert len(results["accuracy_matrix"]) == 1 and results["accuracy_matrix"][0][0] is not None
    scaled_lines = [r.getMessage() for r in caplog.records if "scaled to" in r.getMessage()]
    if method in SCALED:   # both towers are smaller than ViT-B's 12 blocks: the paper's values change
        assert len(scaled_lines) == 1 and "the paper's" in scaled_lines[0]
        assert results["method_resolved"]["scaled_from"]["of"] == 12   # results.json records what was used
    else:
        assert not scaled_lines
    fitted = [r.getMessage() for r in caplog.records if "does not fit the text context" in r.getMessage()]
    assert len(fitted) == (1 if method == "attriclip" and model == "miniclip" else 0)


# in the default suite: LAMM's alignment (the path that needed fp32), the prompt-per-image and visual-prompt
# paths; the other methods with -m slow
BF16_QUICK = ("lamm", "maple_lamm", "cocoop", "vpt_deep", "dualprompt")


@pytest.mark.parametrize("method", [m if m in BF16_QUICK else pytest.param(m, marks=pytest.mark.slow) for m in METHODS])
def test_every_method_trains_in_bf16_on_a_cpu(tmp_path_factory, method):
    """``precision=bf16`` on a CPU (autocast there leaves normalised features in bf16, unlike CUDA's): every
    method trains one short experience and scores it with finite numbers."""
    cfg = compose_config([
        "scenario=tiny_colors", "model=tiny", f"method={method}", "progress=false", "train.epochs=1",
        "train.warmup_epochs=0", "train.batch_size=4", "scenario.n_classes=2", "scenario.n_experiences=1",
        "scenario.train_per_class=2", "scenario.test_per_class=2", "precision=bf16", "device=cpu", "cache.dir=null"])
    results = run(cfg, tmp_path_factory.mktemp(f"{method}_bf16"))
    assert results["status"] == "complete" and results["accuracy_matrix"][0][0] is not None


# ----- the rule -----------------------------------------------------------------------------------------

def test_the_rule_on_12_blocks_keeps_every_list():
    for lists in ({"g": [0, 1], "e": [2, 3, 4]}, {"layers": [0, 1, 2, 3, 4]}, {"depth": list(range(9))},
                  {"a": [4, 2, 3], "b": [11, 0]}, {"a": [0, 1], "b": [1, 2]}, {"a": []}):
        assert scale_block_lists(lists, 12, 12) == lists
    rng = random.Random(0)
    for _ in range(300):   # any tower onto itself, any lists
        of = rng.randint(1, 24)
        lists = {k: rng.sample(range(of), rng.randint(0, of)) for k in "abc"}
        assert scale_block_lists(lists, of, of) == lists


@pytest.mark.parametrize("blocks, general, expert, coda, maple", [
    (12, [0, 1], [2, 3, 4], [0, 1, 2, 3, 4], 9),
    (24, [0, 1, 2, 3], [4, 5, 6, 7, 8, 9], list(range(10)), 18),   # ViT-L
    (6, [0], [1, 2], [0, 1, 2], 5),          # ends 2, 5, 9 of 12 -> 1, 2.5, 4.5 -> 1, 3, 5 (halves up)
    (4, [0], [1], [0, 1], 3),                # the mini-CLIP's image tower: 0.67, 1.67, 3 -> 1, 2, 3
    (3, [0], [1], [0], 2),                   # the mini-CLIP's text tower: 0.5 -> 1; 1.25 -> 1; 2.25 -> 2
    (2, [0], [1], [0], 2),                   # the tiny CLIP: 0.33 -> 0, so g keeps one block and e moves along
    (1, [0], [0], [0], 1),                   # fewer blocks than runs: they share the one block
])
def test_the_rule_on_smaller_and_larger_towers(blocks, general, expert, coda, maple):
    assert scale_block_lists({"g": [0, 1], "e": [2, 3, 4]}, 12, blocks) == {"g": general, "e": expert}
    assert scale_block_lists({"layers": [0, 1, 2, 3, 4]}, 12, blocks) == {"layers": coda}
    assert len(scale_block_lists({"depth": range(9)}, 12, blocks)["depth"]) == maple


def test_the_rule_keeps_order_and_separation_and_never_drops_a_list():
    rng = random.Random(1)
    for _ in range(500):
        of, blocks = rng.randint(1, 24), rng.randint(1, 24)
        lists = {k: sorted(rng.sample(range(of), rng.randint(0, of))) for k in "ab"}
        out = scale_block_lists(lists, of, blocks)
        assert all(0 <= b < blocks for v in out.values() for b in v)
        assert all(bool(out[k]) == bool(lists[k]) for k in lists)
        assert all(out[k] == sorted(out[k]) for k in out)
        if lists["a"] and lists["b"] and max(lists["a"]) < min(lists["b"]) and blocks >= 2 * of:
            assert max(out["a"]) < min(out["b"])   # apart where they were apart (room for it)


@pytest.mark.parametrize("model", ["vit_b16", "vit_b32"])
def test_on_vit_b_the_defaults_are_the_papers(caplog, model):
    """Random weights (no download): the towers' shapes are what matters."""
    backbone = instantiate(compose_config([f"model={model}", "model.pretrained=null"]).model)
    caplog.set_level(logging.INFO, logger="clprompt")
    for method, paper in PAPER.items():
        resolved = build(backbone, model, method).resolved_options()
        assert {key: resolved[key] for key in paper} == paper
    assert not [r for r in caplog.records if "scaled to" in r.getMessage() or "does not fit" in r.getMessage()]


IMAGE_PROMPTED = {"vpt_shallow", "vpt_deep", "maple", "maple_lamm", "l2p", "dualprompt", "coda_prompt", "sprompts"}


def test_on_rn50_the_methods_it_applies_to_build_with_their_defaults_and_the_others_refuse():
    """Random weights (no download). A ResNet image tower has no blocks to prompt: those methods say so."""
    backbone = instantiate(compose_config(["model=rn50", "model.pretrained=null"]).model)
    for method in METHODS:
        options = ["method.templates='a photo of a {}.'"] if method == "zeroshot" else []
        options += ["method.template='a photo of a {}.'"] if method == "linear_probe" else []
        if method in IMAGE_PROMPTED:
            with pytest.raises(UnsupportedBackboneError, match="needs a ViT"):
                build(backbone, "rn50", method, *options)
        else:
            build(backbone, "rn50", method, *options)
    assert build(backbone, "rn50", "attriclip").prompt_length == 12   # 77 tokens: the paper's


def test_the_small_towers_get_what_the_rule_says(backbones):
    expected = {
        "tiny": {"dualprompt": {"g_layers": [0], "e_layers": [1]}, "coda_prompt": {"layers": [0]},
                 "maple": {"depth": 2}, "attriclip": {"prompt_length": 12}},
        "miniclip": {"dualprompt": {"g_layers": [0], "e_layers": [1]}, "coda_prompt": {"layers": [0, 1]},
                     "maple": {"depth": 2}, "attriclip": {"prompt_length": 9}},    # (32 - 2 - 1 - 1) // 3
    }
    for model, methods in expected.items():
        for method, used in methods.items():
            resolved = build(backbones[model], model, method).resolved_options()
            assert {key: resolved[key] for key in used} == used
            assert (resolved.get("scaled_from") or resolved.get("fitted_from")) is not None
    resolved = build(backbones["miniclip"], "miniclip", "maple").resolved_options()
    assert resolved["text_blocks"] == 3 and resolved["image_blocks"] == 4 and resolved["scaled_from"] == {"of": 12,
                                                                                                        "depth": 9}
    # AttriCLIP's fit counts the stream's longest name: "cyan hexagon" is 4 tokens in the sandbox -> 8
    long_names = NAMES + ["cyan hexagon"]
    assert build(backbones["miniclip"], "miniclip", "attriclip", names=long_names).prompt_length == 8
    assert build(backbones["miniclip"], "miniclip", "coop").resolved_options() == {}   # nothing scaled there


# ----- given values: the run's own tower, as given or refused --------------------------------------------

def test_given_lists_are_the_towers_own(backbones):
    mini = backbones["miniclip"]
    method = build(mini, "miniclip", "dualprompt", "method.g_layers=[0,1]", "method.e_layers=[2,3]")
    assert (method.g_layers, method.e_layers, method.resolved_options()["scaled_from"]) == ([0, 1], [2, 3], None)
    method = build(mini, "miniclip", "dualprompt", "method.e_layers=[2,3]")   # the other list: the paper's, scaled
    assert (method.g_layers, method.e_layers) == ([0], [2, 3])
    assert build(mini, "miniclip", "coda_prompt", "method.layers=[0,1,2,3]").layers == [0, 1, 2, 3]
    assert build(mini, "miniclip", "maple", "method.depth=3").depth == 3
    assert build(mini, "miniclip", "attriclip", "method.prompt_length=8").prompt_length == 8
    # the paper's values can be changed too, and are scaled the same way
    method = build(mini, "miniclip", "coda_prompt", "method.paper_blocks.layers=[0,1,2,3,4,5,6,7,8,9,10,11]")
    assert method.layers == [0, 1, 2, 3]


@pytest.mark.parametrize("model, method, overrides, message", [
    ("tiny", "dualprompt", ["method.e_layers=[2,3,4]"], r"method.e_layers=\[2, 3, 4\]: distinct block indices in 0..1"),
    ("miniclip", "dualprompt", ["method.e_layers=[2,3,4]"],
     r"method.e_layers=\[2, 3, 4\]: distinct block indices in 0..3 \(this image tower has 4 blocks"),
    ("miniclip", "dualprompt", ["method.g_layers=[0,0]"], r"method.g_layers=\[0, 0\]: distinct block indices"),
    ("miniclip", "coda_prompt", ["method.layers=[0,1,2,3,4]"],
     r"method.layers=\[0, 1, 2, 3, 4\]: distinct block indices in 0..3"),
    ("miniclip", "maple", ["method.depth=9"], r"method.depth=9: between 1 and 3 \(the blocks of the smaller tower\)"),
    ("tiny", "maple_lamm", ["method.depth=3"], r"method.depth=3: between 1 and 2"),
    ("miniclip", "attriclip", ["method.prompt_length=12"],
     r"method.prompt_length=12 x method.top_c=3 context tokens do not fit"),
    ("miniclip", "dualprompt", ["method.paper_blocks.e_layers=[2,12]"],
     r"method.paper_blocks.e_layers=\[2, 12\]: distinct block indices in 0..11"),
    ("miniclip", "coda_prompt", ["method.paper_blocks=null"], r"method.layers is null and method.paper_blocks is null"),
    ("miniclip", "maple", ["method.paper_blocks.of=0"], r"method.paper_blocks.of=0"),
    ("miniclip", "maple", ["method.paper_blocks.depth=13"], r"method.paper_blocks.depth=13: between 1 and 12"),
    ("miniclip", "attriclip", ["method.paper_prompt_length=0"], r"method.paper_prompt_length=0: give an integer >= 1"),
])
def test_given_values_beyond_the_tower_are_refused(backbones, model, method, overrides, message):
    with pytest.raises(ConfigValueError, match=message):
        build(backbones[model], model, method, *overrides)


def test_the_continual_table_keeps_its_blocks(backbones):
    """bench/continual_table.sh's overrides for the mini-CLIP give the blocks its published table used."""
    script = (REPO / "bench" / "continual_table.sh").read_text()
    used = {"dualprompt": {"g_layers": [0, 1], "e_layers": [2, 3]}, "coda_prompt": {"layers": [0, 1, 2, 3]},
            "maple": {"depth": 3}, "attriclip": {"prompt_length": 8}}
    for method, values in used.items():
        overrides = re.findall(rf"method={method}((?:\s+'?method\.[^\s']+'?)+)", script)
        assert overrides, f"no override of {method} in bench/continual_table.sh"
        for line in overrides:
            options = [option.strip("'") for option in line.split()]
            resolved = build(backbones["miniclip"], "miniclip", method, *options,
                             names=NAMES + ["cyan hexagon"]).resolved_options()
            assert {key: resolved[key] for key in values} == values
