"""Bad input ends in one line that says what was wrong and how to fix it, before any work.

1. Class names the text context cuts: refused where two classes become one, else warned and recorded.
2. Every option of every method (configs/method/*.yaml and the constructors): empty, zero, negative, NaN or
   out-of-range values are refused with what the value would make the method and the valid range (an empty
   pool, a prompt of no tokens or no prompted block would run zero-shot CLIP under the method's name).
3. The run config: NaN and inf, seeds outside numpy's range, device=mps without MPS, the launcher's n_jobs.
The command line is checked for a few: exit status 1 and one ``error:`` line, no traceback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys

import open_clip
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image

from clprompt import config_check
from clprompt.config_check import check_config, check_launcher
from clprompt.errors import ConfigValueError
from clprompt.methods.cocoop import CoCoOp
from clprompt.methods.linear_probe import LinearProbe
from clprompt.methods.maple import MaPLe
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.methods.sprompts import SPrompts
from clprompt.methods.text_encoder_finetune import TextEncoderFinetune
from clprompt.methods.zeroshot import ZeroShot
from clprompt.parts.context import TemplateContext
from clprompt.parts.label_alignment import LabelAlignmentLoss
from clprompt.parts.labels import LearnedLabels, NameLabels, check_cut_names
import warm_python
from helpers import CONFIGS, compose_config

NAMES = ["red", "green", "blue", "yellow"]


def build(backbone, method: str, *overrides, names=NAMES):
    """The method as a run builds it from ``method=<method> <overrides>`` on the tiny CLIP (the cause of a
    refusal raised as is, as ``clprompt.stages.build`` does)."""
    cfg = compose_config(["model=tiny", f"method={method}", *overrides])
    try:
        return instantiate(cfg.method, backbone=backbone, class_names=names)
    except InstantiationException as error:
        raise error.__cause__ or error


def clprompt_run(tmp_path, *args):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    return warm_python.run(["-m", "clprompt.run", *args, f"hydra.run.dir={tmp_path / 'run'}", "progress=false"],
                           cwd=tmp_path, env=env)


def assert_one_error_line(done, says: str) -> str:
    """Exit status 1, one ``error:`` line holding ``says``, no traceback; returns the line."""
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert says in errors[0], errors[0]
    return errors[0]


# ----- 1. class names the text context cuts ----------------------------------------------------------------

def long_name(words: int, end: str) -> str:
    """A name of ``words`` + 1 tokens ("land" is one token) ending in ``end``."""
    return " ".join(["land"] * words + [end])


def test_names_that_differ_only_after_the_cut_are_refused_naming_both_and_the_room():
    tokenizer = open_clip.SimpleTokenizer(context_length=16)   # "a photo of a {}.": 16 - 2 - 5 = 9 tokens for a name
    names = ["sea", long_name(12, "north"), long_name(12, "south")]
    with pytest.raises(ConfigValueError) as refused:
        check_cut_names(tokenizer, names, ["a photo of a {}."], "method.templates")
    message = str(refused.value)
    assert "land north'" in message and "land south'" in message and "\n" not in message   # the ends, where they differ
    assert "text context of 16 tokens" in message and "first 9 tokens" in message and "shorter class names" in message


def test_a_name_that_fits_exactly_and_a_longer_one_cut_to_its_tokens_are_refused():
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    fits = long_name(8, "north")           # 9 name tokens: 16 tokens with the template, SOT and EOT
    with pytest.raises(ConfigValueError, match="become one class"):
        check_cut_names(tokenizer, [fits, fits + ". river"], ["a photo of a {}."], "method.templates")


def test_names_cut_but_still_distinct_are_warned_once_and_recorded(caplog):
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    names = ["sea", "north " + long_name(12, "x"), "south " + long_name(12, "x")]
    with caplog.at_level(logging.WARNING):
        record = check_cut_names(tokenizer, names, ["a photo of a {}."], "method.templates")
    assert record == {"context_length": 16, "templates": ["a photo of a {}."], "names": names[1:]}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 class name(s) do not fit the text context of 16 tokens" in warnings[0]
    assert "'north land land land land land' ... 'and land land land x'" in warnings[0]   # a long name's start, end
    assert "method_resolved.cut_class_names" in warnings[0]


def test_names_that_fit_and_names_the_tokenizer_already_reads_as_one_are_left_alone(caplog):
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    assert check_cut_names(tokenizer, NAMES, ["a photo of a {}."], "method.templates") == {}
    same = long_name(12, "north")   # one name twice (a shared label, e.g. 5-datasets' digits): not the cut's doing
    with caplog.at_level(logging.WARNING):
        record = check_cut_names(tokenizer, [same, same.upper()], ["a photo of a {}."], "method.templates")
    assert record["names"] == [same, same.upper()]


def test_zero_shot_refuses_names_cut_into_one_in_every_template_and_records_distinct_ones(tiny_backbone):
    clash = [long_name(80, "north"), long_name(80, "south"), "sea"]   # CLIP's 77 tokens cut both
    for templates in ("a photo of a {}.", "openai_7"):
        with pytest.raises(ConfigValueError, match="become one class: the text context of 77 tokens"):
            ZeroShot(tiny_backbone, clash, templates=templates)
    distinct = ["north " + long_name(80, "x"), "south " + long_name(80, "x"), "sea"]
    method = ZeroShot(tiny_backbone, distinct)
    assert method.resolved_options()["cut_class_names"]["names"] == distinct[:2]
    assert ZeroShot(tiny_backbone, NAMES).resolved_options() == {}


def test_every_method_that_tokenizes_whole_prompts_checks_the_cut(tiny_backbone):
    clash = [long_name(80, "north"), long_name(80, "south")]
    short_clash = [long_name(72, "north"), long_name(72, "south")]   # "[SOT] name . [EOT]" fits, the template not
    for make in (lambda: TextEncoderFinetune(tiny_backbone, clash),
                 lambda: LinearProbe(tiny_backbone, clash, init="text"),
                 lambda: SPrompts(tiny_backbone, short_clash, context_length=0)):
        with pytest.raises(ConfigValueError, match="become one class"):
            make()
    distinct = ["north " + long_name(80, "x"), "south " + long_name(80, "x")]
    assert TextEncoderFinetune(tiny_backbone, distinct).resolved_options()["cut_class_names"]["names"] == distinct
    assert LinearProbe(tiny_backbone, distinct, init="text").resolved_options()["cut_class_names"]["names"] == distinct
    # prompts laid out token by token refuse a prompt that does not fit at all (nothing is cut there)
    with pytest.raises(ConfigValueError, match="more than the text tower's context length 77"):
        build(tiny_backbone, "coop", names=distinct)


def write_eurosat(root, names):
    """EuroSAT in CoOp's layout: eurosat/2750/<class>/*.jpg and split_zhou_EuroSAT.json naming ``names``."""
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(names):
        for i, part in enumerate(("train", "train", "val", "test", "test")):
            path = f"Class{label}/Class{label}_{i}.jpg"
            (root / "eurosat" / "2750" / f"Class{label}").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * label, 20 * i, 0)).save(root / "eurosat" / "2750" / path)
            split[part].append([path, label, name])
    (root / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(split))


@pytest.mark.slow   # a whole command line (~10 s); the in-process tests above check the same refusal
def test_the_command_line_refuses_a_split_file_whose_names_the_cut_makes_one(tmp_path):
    """The issue's case: a EuroSAT split file with two names that differ past CLIP's 77 tokens, method=zeroshot."""
    write_eurosat(tmp_path / "data", ["Forest", long_name(75, "north"), long_name(75, "south")])
    done = clprompt_run(tmp_path, "scenario=eurosat", "model=tiny", "method=zeroshot", f"data.root={tmp_path / 'data'}")
    line = assert_one_error_line(done, "become one class: the text context of 77 tokens")
    assert "Give shorter class names" in line
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_run_records_the_cut_names_in_results_json(tmp_path, caplog):
    from clprompt.run import run

    names = ["Forest", "north " + long_name(75, "x"), "south " + long_name(75, "x")]
    write_eurosat(tmp_path / "data", names)
    cfg = compose_config(["scenario=eurosat", "model=tiny", "method=zeroshot", f"data.root={tmp_path / 'data'}",
                          "progress=false", "cache.dir=null"])
    with caplog.at_level(logging.WARNING):
        run(cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["method_resolved"]["cut_class_names"]["names"] == names[1:]
    assert any("do not fit the text context of 77 tokens" in r.getMessage() for r in caplog.records)


# ----- 2. every option of every method ---------------------------------------------------------------------

ZERO_SHOT = "the run would be zero-shot CLIP"
BAD_OPTIONS = [
    # L2P (configs/method/l2p.yaml; clprompt.parts.prompt_pool.PromptPool)
    ("l2p", ["method.pool.size=0"], rf"method.pool.size=0: an empty pool inserts nothing: {ZERO_SHOT}; give an "
                                    r"integer >= 1"),
    ("l2p", ["method.pool.size=-2"], r"method.pool.size=-2: give an integer >= 1"),
    ("l2p", ["method.pool.length=0"], rf"method.pool.length=0: prompts of no tokens insert nothing: {ZERO_SHOT}"),
    ("l2p", ["method.pool.length=2.5"], r"method.pool.length=2.5: give an integer >= 1"),
    ("l2p", ["method.pool.top_k=0"], rf"method.pool.top_k=0: an image that takes no prompt .*{ZERO_SHOT}"),
    ("l2p", ["method.pool.top_k=11"], r"method.pool.top_k=11 is larger than method.pool.size=10"),
    ("l2p", ["method.pull_weight=-0.1"], r"method.pull_weight=-0.1: give a finite number >= 0"),
    ("l2p", ["method.pull_weight=nan"], r"method.pull_weight=nan: give a finite number >= 0"),
    ("l2p", ["method.classifier=mlp"], r"method.classifier='mlp'; choose text .* or linear"),
    # DualPrompt
    ("dualprompt", ["method.g_length=0"], r"method.g_length=0: G-prompts of no tokens insert nothing \(to leave the "
                                          r"G-prompt out, give method.g_layers=\[\]\); give an integer >= 1"),
    ("dualprompt", ["method.e_length=0"], r"method.e_length=0: E-prompts of no tokens .*method.e_layers=\[\]"),
    ("dualprompt", ["method.e_length=-1"], r"method.e_length=-1: give an integer >= 1"),
    ("dualprompt", ["method.g_layers=[]", "method.e_layers=[]"],
     rf"method.g_layers=\[\] and method.e_layers=\[\]: no block gets a G- or an E-prompt.*{ZERO_SHOT}"),
    ("dualprompt", ["method.g_layers=[0,0]"], r"method.g_layers=\[0, 0\]: distinct block indices in 0..1"),
    ("dualprompt", ["method.e_layers=[2]"], r"method.e_layers=\[2\]: distinct block indices in 0..1"),
    ("dualprompt", ["method.e_layers=abc"], r"method.e_layers=abc: distinct block indices in 0..1"),
    ("dualprompt", ["method.pull_weight=-1"], r"method.pull_weight=-1: give a finite number >= 0"),
    ("dualprompt", ["method.pull_weight=inf"], r"method.pull_weight=inf: give a finite number >= 0"),
    ("dualprompt", ["method.freeze_old=maybe"], r"method.freeze_old='maybe': give true or false"),
    ("dualprompt", ["method.classifier=mlp"], r"method.classifier='mlp'; choose"),
    ("dualprompt", ["method.paper_blocks.of=0"], r"method.paper_blocks.of=0"),
    # CODA-Prompt
    ("coda_prompt", ["method.length=0"], rf"method.length=0: prompts of no tokens insert nothing: {ZERO_SHOT}; give "
                                         r"an integer >= 2 and even"),
    ("coda_prompt", ["method.length=3"], r"method.length=3: an even integer >= 2 .* e.g. method.length=4"),
    ("coda_prompt", ["method.length=-2"], r"method.length=-2: give an integer >= 2"),
    ("coda_prompt", ["method.components_per_task=0"],
     rf"method.components_per_task=0: no components make every prompt empty: {ZERO_SHOT}; give an integer >= 1"),
    ("coda_prompt", ["method.components_per_task=65"],
     r"method.components_per_task=65: .* cannot be in 64 dimensions .* give at most 64"),
    ("coda_prompt", ["method.layers=[]"], rf"method.layers=\[\]: no block gets a prompt: {ZERO_SHOT}; give block "
                                          r"indices in 0..1"),
    ("coda_prompt", ["method.paper_blocks.layers=[]"], rf"method.paper_blocks.layers=\[\]: .*{ZERO_SHOT}"),
    ("coda_prompt", ["method.layers=[0,0]"], r"method.layers=\[0, 0\]: distinct block indices in 0..1"),
    ("coda_prompt", ["method.layers=[2]"], r"method.layers=\[2\]: distinct block indices in 0..1"),
    ("coda_prompt", ["method.ortho_weight=-1"], r"method.ortho_weight=-1: give a finite number >= 0"),
    ("coda_prompt", ["method.ortho_weight=inf"], r"method.ortho_weight=inf: give a finite number >= 0"),
    ("coda_prompt", ["method.classifier=none"], r"method.classifier='none'; choose"),
    ("coda_prompt", ["method.paper_blocks.of=0"], r"method.paper_blocks.of=0: give the block count"),
    # VPT (clprompt.parts.visual.VisualPrompts)
    ("vpt_shallow", ["method.visual.length=0"], rf"method.visual.length=0: prompts of no tokens insert nothing: "
                                                rf"{ZERO_SHOT}; give an integer >= 1"),
    ("vpt_shallow", ["method.visual.length=-1"], r"method.visual.length=-1: give an integer >= 1"),
    ("vpt_shallow", ["method.visual.depth=0"], rf"method.visual.depth=0: no block gets prompts: {ZERO_SHOT}"),
    ("vpt_shallow", ["method.visual.depth=3"], r"method.visual.depth=3, but the image tower has 2 blocks: give a "
                                               r"depth in 1..2"),
    ("vpt_shallow", ["method.visual.init=uniform"], r"method.visual.init='uniform'; choose normal .* or xavier"),
    ("vpt_shallow", ["method.context.template=photo"], r"method.context.template='photo'"),
    ("vpt_deep", ["method.visual.init=x"], r"method.visual.init='x'; choose"),
    ("vpt_deep", ["method.visual.length=0"], rf"method.visual.length=0: .*{ZERO_SHOT}"),
    ("vpt_deep", ["method.visual.depth=-1"], r"method.visual.depth=-1: give an integer >= 1"),
    ("vpt_deep", ["method.context.template='a photo'"], r"method.context.template='a photo': without '\{\}' every "
                                                         r"class gets the same prompt"),
    # CoOp and the other PromptTuning compositions (clprompt.parts.context / labels / label_alignment)
    ("coop", ["method.context.length=0"], r"method.context.length=0: a learned context of no vectors learns nothing"),
    ("coop", ["method.context.length=-3"], r"method.context.length=-3: give an integer >= 1"),
    ("coop", ["method.context.init_words=''"], r"method.context.init_words='': no words give no context vectors"),
    ("coop", ["method.context.init_words='  '"], r"method.context.init_words='  ': no words give no context"),
    ("coop", ["method.context.position=start"], r"method.context.position='start'; choose end .* middle .* front"),
    ("coop", ["method.context.class_specific=maybe"], r"method.context.class_specific='maybe': give true or false"),
    ("coop", ["+method.context.suffix=5"], r"method.context.suffix=5: give words"),
    ("coop", ["+method.context.words_after=5"], r"method.context.words_after=5: give words"),
    ("full_prompt_tuning", ["method.context.length=0"], r"method.context.length=0: a learned context of no vectors"),
    ("full_prompt_tuning", ["method.context.init_words=' '"], r"method.context.init_words=' '"),
    ("full_prompt_tuning", ["method.context.class_specific=x"], r"method.context.class_specific='x'"),
    ("full_prompt_tuning", ["method.context.position=x"], r"method.context.position='x'"),
    ("full_prompt_tuning", ["method.labels.learn=first"], r"method.labels.learn='first'; choose all .* or min_len"),
    ("full_prompt_tuning", ["method.labels.freeze_old=maybe"], r"method.labels.freeze_old='maybe': give true or false"),
    ("cls_tuning", ["method.context.template='{} {}'"], r"method.context.template='\{\} \{\}': give a prompt with "
                                                         r"exactly one"),
    ("cls_tuning", ["method.labels.learn=none"], r"method.labels.learn='none'; choose"),
    ("cls_tuning", ["method.labels.freeze_old=2"], r"method.labels.freeze_old=2: give true or false"),
    ("lamm", ["method.alignment.kd_temperature=0"], r"method.alignment.kd_temperature=0: logits divided by a "
                                                    r"temperature of 0 are not finite; give a finite number > 0"),
    ("lamm", ["method.alignment.kd_temperature=-2"], r"method.alignment.kd_temperature=-2: give a finite number > 0"),
    ("lamm", ["method.alignment.wc_weight=-1"], r"method.alignment.wc_weight=-1: give a finite number >= 0"),
    ("lamm", ["method.alignment.cos_weight=nan"], r"method.alignment.cos_weight=nan: give a finite number >= 0"),
    ("lamm", ["method.alignment.kd_weight=inf"], r"method.alignment.kd_weight=inf: give a finite number >= 0"),
    ("lamm", ["method.alignment.wc_weight=0", "method.alignment.cos_weight=0", "method.alignment.kd_weight=0"],
     r"method.alignment: wc_weight, cos_weight and kd_weight are all 0, so LAMM's alignment adds nothing"),
    ("lamm", ["method.labels.learn=x"], r"method.labels.learn='x'; choose"),
    ("lamm", ["method.labels.freeze_old=maybe"], r"method.labels.freeze_old='maybe'"),
    ("lamm", ["method.context.template=photo"], r"method.context.template='photo'"),
    ("coop_lamm", ["method.alignment.kd_weight=-1"], r"method.alignment.kd_weight=-1: give a finite number >= 0"),
    ("coop_lamm", ["method.alignment.wc_weight=nan"], r"method.alignment.wc_weight=nan"),
    ("coop_lamm", ["method.alignment.cos_weight=-1"], r"method.alignment.cos_weight=-1"),
    ("coop_lamm", ["method.alignment.kd_temperature=0"], r"method.alignment.kd_temperature=0"),
    ("coop_lamm", ["method.context.length=0", "method.context.init_words=null"], r"method.context.length=0"),
    ("coop_lamm", ["method.context.init_words=''"], r"method.context.init_words=''"),
    ("coop_lamm", ["method.context.class_specific=1"], r"method.context.class_specific=1: give true or false"),
    ("coop_lamm", ["method.context.position=up"], r"method.context.position='up'; choose"),
    ("coop_lamm", ["method.labels.learn=x"], r"method.labels.learn='x'"),
    ("coop_lamm", ["method.labels.freeze_old=x"], r"method.labels.freeze_old='x'"),
    # CoCoOp
    ("cocoop", ["method.reduction=0"], r"method.reduction=0: give an integer >= 1 \(meta-net hidden width"),
    ("cocoop", ["method.prompts_per_pass=0"], r"method.prompts_per_pass=0: give an integer >= 1"),
    ("cocoop", ["method.context.length=0", "method.context.init_words=null"], r"method.context.length=0"),
    ("cocoop", ["method.context.init_words=''"], r"method.context.init_words=''"),
    ("cocoop", ["method.context.class_specific=x"], r"method.context.class_specific='x'"),
    ("cocoop", ["method.context.position=x"], r"method.context.position='x'"),
    # MaPLe
    ("maple", ["method.depth=0"], r"method.depth=0: between 1 and 2"),
    ("maple", ["method.depth=3"], r"method.depth=3: between 1 and 2"),
    ("maple", ["method.paper_blocks.depth=0"], r"method.paper_blocks.depth=0: between 1 and 12"),
    ("maple", ["method.paper_blocks.of=0"], r"method.paper_blocks.of=0"),
    ("maple", ["method.context.class_specific=true"], r"MaPLe couples one shared context"),
    ("maple", ["method.context.init_words=''"], r"method.context.init_words=''"),
    ("maple", ["method.context.length=0", "method.context.init_words=null"], r"method.context.length=0"),
    ("maple", ["method.context.position=x"], r"method.context.position='x'"),
    ("maple", ["method.context.words_after=5"], r"method.context.words_after=5"),
    ("maple_lamm", ["method.alignment.kd_temperature=0"], r"method.alignment.kd_temperature=0"),
    ("maple_lamm", ["method.alignment.wc_weight=-1"], r"method.alignment.wc_weight=-1"),
    ("maple_lamm", ["method.alignment.cos_weight=-1"], r"method.alignment.cos_weight=-1"),
    ("maple_lamm", ["method.alignment.kd_weight=-1"], r"method.alignment.kd_weight=-1"),
    ("maple_lamm", ["method.labels.learn=x"], r"method.labels.learn='x'"),
    ("maple_lamm", ["method.labels.freeze_old=x"], r"method.labels.freeze_old='x'"),
    ("maple_lamm", ["method.depth=0"], r"method.depth=0"),
    ("maple_lamm", ["method.paper_blocks.depth=-1"], r"method.paper_blocks.depth=-1"),
    ("maple_lamm", ["method.paper_blocks.of=-1"], r"method.paper_blocks.of=-1"),
    ("maple_lamm", ["method.context.init_words=''"], r"method.context.init_words=''"),
    ("maple_lamm", ["method.context.length=0", "method.context.init_words=null"], r"method.context.length=0"),
    ("maple_lamm", ["method.context.class_specific=x"], r"method.context.class_specific='x'"),
    ("maple_lamm", ["method.context.position=x"], r"method.context.position='x'"),
    ("maple_lamm", ["method.context.words_after=5"], r"method.context.words_after=5"),
    # S-Prompts
    ("sprompts", ["method.context_length=0", "method.image_prompt_length=0"],
     r"method.context_length=0 and method.image_prompt_length=0: a task learns no context and no image prompts, so "
     r"the run would be zero-shot CLIP"),
    ("sprompts", ["method.context_length=-1"], r"method.context_length=-1: give an integer >= 0"),
    ("sprompts", ["method.image_prompt_length=-1"], r"method.image_prompt_length=-1: give an integer >= 0"),
    ("sprompts", ["method.clusters=0"], r"method.clusters=0: no centre to choose a task by; give an integer >= 1"),
    ("sprompts", ["method.kmeans_iterations=0"], r"method.kmeans_iterations=0: give an integer >= 1"),
    ("sprompts", ["method.kmeans_seed=-1"], r"method.kmeans_seed=-1: give an integer in 0..4294967295"),
    ("sprompts", ["method.kmeans_seed=4294967296"], r"method.kmeans_seed=4294967296: give an integer in 0..4294967295"),
    ("sprompts", ["method.distance=cosine"], r"method.distance='cosine'; choose l1 .* or euclidean"),
    ("sprompts", ["method.template='a photo'"], r"method.template='a photo': without '\{\}'"),
    ("sprompts", ["method.context_init=''"], r"method.context_init='': no words give no context vectors"),
    # AttriCLIP
    ("attriclip", ["method.bank_size=0"], r"method.bank_size=0: an empty bank has no attribute to choose"),
    ("attriclip", ["method.prompt_length=0"], r"method.prompt_length=0: attribute prompts of no tokens add nothing"),
    ("attriclip", ["method.paper_prompt_length=0"], r"method.paper_prompt_length=0: give an integer >= 1"),
    ("attriclip", ["method.top_c=0"], rf"method.top_c=0: an image that takes no attribute prompt .*{ZERO_SHOT}"),
    ("attriclip", ["method.top_c=11"], r"method.top_c=11 is larger than method.bank_size=10"),
    ("attriclip", ["method.key_weight=-1"], r"method.key_weight=-1: give a finite number >= 0"),
    ("attriclip", ["method.orthogonality_weight=nan"], r"method.orthogonality_weight=nan: give a finite number >= 0"),
    ("attriclip", ["method.init_std=0"], r"method.init_std=0: keys and prompts all 0 cannot be ranked"),
    ("attriclip", ["method.init_std=-1"], r"method.init_std=-1: give a finite number > 0"),
    ("attriclip", ["method.prompts_per_pass=0"], r"method.prompts_per_pass=0: give an integer >= 1"),
    ("attriclip", ["method.similarity=l2"], r"method.similarity='l2'; choose cosine"),
    ("attriclip", ["method.orthogonality_text=x"], r"method.orthogonality_text='x'; choose reference"),
    # zero-shot, the linear probe, TEnc-FT
    ("zeroshot", ["method.templates=[]"], r"method.templates=\[\]: no template gives no class text feature"),
    ("zeroshot", ["method.templates='a photo'"], r"method.templates: each template needs exactly one"),
    ("zeroshot", ["method.templates='a photo of a {}.'", "+method.text_batch_size=0"],
     r"method.text_batch_size=0: give an integer >= 1"),
    ("linear_probe", ["method.init=zero"], r"method.init='zero'; choose random \(Classifier-R\) or text"),
    ("linear_probe", ["method.init=text", "method.template='a photo'"], r"method.template='a photo': without"),
    ("tenc_ft", ["method.template='a photo'"], r"method.template='a photo': without '\{\}' every class gets the same"),
]

# Options of the YAMLs with no bad value of their own to try (block lists written for the paper's tower are
# checked in tests/test_method_defaults.py; each part's key is tried through the methods that compose it above).
NOT_TRIED = {"paper_blocks.g_layers", "paper_blocks.e_layers", "paper_blocks.layers"}


def yaml_options(method: str) -> set:
    """The option keys of configs/method/<method>.yaml's ``method`` node (dotted, ``_target_`` left out)."""
    def keys(node, prefix=""):
        found = set()
        for key, value in node.items():
            if isinstance(value, dict):
                found |= keys(value, f"{prefix}{key}.")
            elif key != "_target_":
                found.add(f"{prefix}{key}")
        return found
    return keys(yaml.safe_load((CONFIGS / "method" / f"{method}.yaml").read_text())["method"])


@pytest.mark.parametrize("method, overrides, message", BAD_OPTIONS,
                         ids=[f"{m}:{' '.join(o)}" for m, o, _ in BAD_OPTIONS])
def test_a_bad_method_option_is_refused_in_one_line_saying_why_and_the_range(tiny_backbone, method, overrides,
                                                                                message):
    with pytest.raises(ConfigValueError, match=message) as refused:
        build(tiny_backbone, method, *overrides)
    assert "\n" not in str(refused.value)


def test_every_option_of_every_method_yaml_has_a_bad_value_tried():
    tried: dict = {}
    for method, overrides, _ in BAD_OPTIONS:
        for override in overrides:
            tried.setdefault(method, set()).add(override.lstrip("+").split("=", 1)[0].removeprefix("method."))
    for path in sorted((CONFIGS / "method").glob("*.yaml")):
        missing = yaml_options(path.stem) - tried.get(path.stem, set()) - NOT_TRIED
        assert not missing, f"{path.stem}: no bad value tried for {sorted(missing)}"


def test_the_shipped_defaults_and_the_papers_ablations_still_build(tiny_backbone):
    for path in sorted((CONFIGS / "method").glob("*.yaml")):   # "scenario" templates: the run's, given here
        build(tiny_backbone, path.stem, *(["method.templates='a photo of a {}.'"] if path.stem == "zeroshot" else []))
    build(tiny_backbone, "dualprompt", "method.g_layers=[]", "method.e_layers=[1]")      # without the G-prompt
    build(tiny_backbone, "dualprompt", "method.g_layers=[0]", "method.e_layers=[]")      # without E-prompts
    build(tiny_backbone, "sprompts", "method.image_prompt_length=0")                    # language prompts only
    build(tiny_backbone, "sprompts", "method.context_length=0")                         # image prompts only
    build(tiny_backbone, "attriclip", "method.top_c=1", "method.bank_size=1")


def test_compositions_that_learn_nothing_or_cannot_run_are_refused(tiny_backbone):
    with pytest.raises(ConfigValueError, match=rf"learn nothing: {ZERO_SHOT} under this method's name; give a "
                                               r"learned part .* or use method=zeroshot"):
        PromptTuning(tiny_backbone, NAMES, TemplateContext(), NameLabels())
    with pytest.raises(ConfigValueError, match=r"method.alignment \(LAMM's loss\) aligns learned labels, but "
                                               r"method.labels is NameLabels"):
        PromptTuning(tiny_backbone, NAMES, TemplateContext(), NameLabels(), alignment=LabelAlignmentLoss())
    with pytest.raises(ConfigValueError, match=r"CoCoOp adds its image-conditioned bias to learned context vectors"):
        CoCoOp(tiny_backbone, NAMES, TemplateContext())
    with pytest.raises(ConfigValueError, match=r"MaPLe couples learned context vectors"):
        MaPLe(tiny_backbone, NAMES, TemplateContext())
    with pytest.raises(ConfigValueError, match=r"method.labels.learn=min_len .* the class name '' has no token"):
        PromptTuning(tiny_backbone, ["red", ""], TemplateContext(), LearnedLabels(learn="min_len"))


@pytest.mark.slow   # a whole command line (~10 s); the in-process tests above check the same refusal
def test_the_command_line_refuses_an_empty_pool_before_any_work(tmp_path):
    """The issue's ``method=l2p method.pool.top_k=0`` ran to the end with zero-shot's matrix under L2P's name."""
    done = clprompt_run(tmp_path, "scenario=tiny_colors", "model=tiny", "method=l2p", "method.pool.top_k=0")
    assert_one_error_line(done, "error: method.pool.top_k=0: an image that takes no prompt from the pool is the "
                                f"frozen tower's: {ZERO_SHOT}; give an integer >= 1")
    assert not (tmp_path / "run" / "results.json").exists()


# ----- 3. the run config: NaN and inf, seeds, devices, the launcher ----------------------------------------

BAD_SETTINGS = [
    ("train.optimizer.lr=nan", r"train.optimizer.lr=nan is not allowed: give a finite number > 0"),
    ("train.optimizer.lr=inf", r"train.optimizer.lr=inf is not allowed: give a finite number > 0"),
    ("train.optimizer.weight_decay=nan", r"train.optimizer.weight_decay=nan is not allowed: give a finite number >= 0"),
    ("train.optimizer.weight_decay=-inf", r"train.optimizer.weight_decay=-inf is not allowed"),
    ("train.optimizer.momentum=nan", r"train.optimizer.momentum=nan is not allowed: give a number in \[0, 1\)"),
    ("train.warmup_lr=inf", r"train.warmup_lr=inf is not allowed: give a finite number > 0"),
    ("train.warmup_lr=nan", r"train.warmup_lr=nan is not allowed"),
    ("protocol.noise.rate=nan", r"protocol.noise.rate=nan is not allowed: give a number in \[0, 1\]"),
    ("protocol.noise.rate=1.5", r"protocol.noise.rate=1.5 is not allowed: give a number in \[0, 1\]"),
    ("seed=-1", r"seed=-1 is not allowed: give an integer in 0..4294967295 \(numpy's seed range\)"),
    ("seed=4294967296", r"seed=4294967296 is not allowed: give an integer in 0..4294967295"),
    ("train.augmentation_seed=-1", r"train.augmentation_seed=-1 is not allowed: give an integer in 0..4294967295"),
    ("protocol.shots_seed=-5", r"protocol.shots_seed=-5 is not allowed: give an integer in 0..4294967295"),
    ("protocol.noise.seed=-1", r"protocol.noise.seed=-1 is not allowed"),
    ("protocol.pseudo_labels.seed=-1", r"protocol.pseudo_labels.seed=-1 is not allowed"),
    ("train/optimizer=adam train.optimizer.betas=[0.9,1.0]",
     r"train.optimizer.betas=\(0.9, 1.0\) is not allowed: give two numbers in \[0, 1\)"),
    ("train/optimizer=adam train.optimizer.betas=[nan,0.9]", r"train.optimizer.betas=\(nan, 0.9\) is not allowed"),
    ("train/optimizer=adam +train.optimizer.eps=-1", r"train.optimizer.eps=-1 is not allowed: give a finite number"),
    ("+train.optimizer.dampening=2", r"train.optimizer.dampening=2 is not allowed: give a number in \[0, 1\]"),
    ("+train.optimizer.nesterov=maybe", r"train.optimizer.nesterov='maybe' is not allowed: give true or false"),
]


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
def test_non_finite_and_out_of_range_settings_are_refused(overrides, message):
    with pytest.raises(ConfigValueError, match=message):
        check_config(compose_config(["scenario=tiny_colors", "model=tiny", *overrides.split()]))


def test_the_range_edges_pass():
    for overrides in (["seed=0"], ["seed=4294967295"], ["protocol.noise.rate=1.0"], ["train.optimizer.momentum=0"],
                      ["train/optimizer=adam", "train.optimizer.betas=[0.0,0.999]"]):
        check_config(compose_config(["scenario=tiny_colors", "model=tiny", *overrides]))


def test_mps_is_refused_where_torch_has_no_mps_backend_and_allowed_where_it_has(monkeypatch):
    monkeypatch.setattr(config_check, "mps_available", lambda: False)
    with pytest.raises(ConfigValueError, match=r"device='mps' is not allowed: give auto, per_job, cpu, cuda or cuda:N "
                                               r"\(mps: torch has no MPS backend on this machine"):
        check_config(compose_config(["scenario=tiny_colors", "model=tiny", "device=mps"]))
    monkeypatch.setattr(config_check, "mps_available", lambda: True)
    check_config(compose_config(["scenario=tiny_colors", "model=tiny", "device=mps"]))
    with pytest.raises(ConfigValueError, match=r"device='tpu' is not allowed: give auto, per_job, cpu, cuda, cuda:N "
                                               r"or mps$"):
        check_config(compose_config(["scenario=tiny_colors", "model=tiny", "device=tpu"]))


def test_mps_availability_is_torchs_own_answer_here():
    assert config_check.mps_available() == (sys.platform == "darwin" and torch.backends.mps.is_available())


def launcher(*overrides):
    """``hydra.launcher`` as Hydra composes it for ``hydra/launcher=... <overrides>`` (what a sweep's start sees)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True).hydra.launcher


def test_the_launchers_job_count_and_sizes_are_checked():
    with pytest.raises(ConfigValueError, match=r"hydra.launcher.n_jobs=0 is not allowed: give an integer >= 1 \(jobs "
                                               r"at once\) or a negative one \(joblib's -1: every core"):
        check_launcher(launcher("hydra/launcher=joblib", "hydra.launcher.n_jobs=0"))
    for jobs in (-1, -2, 1, 4):
        check_launcher(launcher("hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"))
    check_launcher(launcher("hydra/launcher=slurm"))
    with pytest.raises(ConfigValueError, match=r"hydra.launcher.timeout_min=0 is not allowed: give an integer >= 1"):
        check_launcher(launcher("hydra/launcher=slurm", "hydra.launcher.timeout_min=0"))
    with pytest.raises(ConfigValueError, match=r"hydra.launcher.array_parallelism=0 is not allowed"):
        check_launcher({"array_parallelism": 0})
    with pytest.raises(ConfigValueError, match=r"hydra.launcher.timeout=nan is not allowed"):
        check_launcher({"timeout": math.nan})


@pytest.mark.parametrize("argument, says", [
    ("train.optimizer.lr=nan", "error: train.optimizer.lr=nan is not allowed: give a finite number > 0"),
    ("seed=-1", "error: seed=-1 is not allowed: give an integer in 0..4294967295 (numpy's seed range)"),
])
def test_the_command_line_answers_nan_and_a_negative_seed_in_one_line(tmp_path, argument, says):
    done = clprompt_run(tmp_path, "scenario=tiny_colors", "model=tiny", "method=l2p", argument)
    assert_one_error_line(done, says)
    assert not (tmp_path / "run" / "results.json").exists()
