"""L2P, DualPrompt and CODA-Prompt: against plain computations of their papers' equations on open_clip's
own modules (no clprompt adapter or pool helper on the reference side), empty prompts refused (they would be
zero-shot; tests/test_input_checks.py has every option), an untrained CODA pool = zero-shot, per-
image selection, frozen old tasks, exact trainable sets, task identification recorded."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from avalanche.models.dynamic_modules import avalanche_model_adaptation
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clprompt.errors import ConfigValueError
from clprompt.methods.coda_prompt import CODAPrompt, PromptComponents, orthonormal_extension
from clprompt.methods.dualprompt import DualPrompt, ExpertPrompts
from clprompt.methods.l2p import L2P
from clprompt.parts.prompt_pool import PromptPool
from helpers import traced_run

NAMES = ["red", "green", "golden retriever", "blue", "pink", "black"]
TASKS = [[0, 1, 2], [3, 4, 5]]
TOL = dict(atol=1e-5, rtol=1e-5)


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def adapt(method, task):
    method.train()
    avalanche_model_adaptation(method, SimpleNamespace(current_experience=task, classes_in_this_experience=TASKS[task]))


# ----- the references: open_clip's modules, the papers' equations ------------------------------------

def text_features(backbone, class_ids):
    tokens = backbone.tokenizer([f"a photo of a {NAMES[c]}." for c in class_ids])
    return F.normalize(backbone.model.encode_text(tokens), dim=-1)


def attention_with_prefix(block, x, prefix_keys, prefix_values):
    """Multi-head attention of ln_1(x) with prefix keys / values joined after the in-projection, head by head."""
    width = x.shape[-1]
    heads = block.attn.num_heads
    size = width // heads
    h = block.ln_1(x)
    weight, bias = block.attn.in_proj_weight, block.attn.in_proj_bias
    q = h @ weight[:width].t() + bias[:width]
    k = torch.cat([prefix_keys, h @ weight[width:2 * width].t() + bias[width:2 * width]], dim=0)
    v = torch.cat([prefix_values, h @ weight[2 * width:].t() + bias[2 * width:]], dim=0)
    outputs = []
    for head in range(heads):
        part = slice(head * size, (head + 1) * size)
        weights = torch.softmax(q[:, part] @ k[:, part].t() / math.sqrt(size), dim=-1)
        outputs.append(weights @ v[:, part])
    return torch.cat(outputs, dim=-1) @ block.attn.out_proj.weight.t() + block.attn.out_proj.bias


def reference_image_feature(clip, pixels, input_prompts=None, prefixes=None):
    """One image [3, H, W]: patches + class token + positions, prompts appended, ln_pre on every token,
    the blocks (prefix attention where ``prefixes[i]`` = (keys [Lp, width], values [Lp, width])),
    ln_post on the class token, projection, normalised."""
    visual = clip.visual
    x = visual.conv1(pixels[None])[0].flatten(1).t()                    # [patches, width]
    x = torch.cat([visual.class_embedding[None], x]) + visual.positional_embedding
    if input_prompts is not None:
        x = torch.cat([x, input_prompts])
    x = visual.ln_pre(x)
    for index, block in enumerate(visual.transformer.resblocks):
        if prefixes and prefixes.get(index) is not None:
            x = x + attention_with_prefix(block, x, *prefixes[index])
            x = x + block.mlp(block.ln_2(x))
        else:
            x = block(x[None])[0]
    return F.normalize(visual.ln_post(x[0]) @ visual.proj, dim=-1)


def reference_query(clip, pixels):
    with torch.no_grad():
        return F.normalize(clip.encode_image(pixels), dim=-1)


def cos(a, b):
    a, b = a.detach(), b.detach()
    return float(a @ b / (a.norm() * b.norm()))


def assert_logits_loss_gradients(method, pixels, targets, reference_logits, reference_terms, parameters):
    logits = method(pixels)
    loss = F.cross_entropy(logits, targets) + method.regularization(logits, targets)
    reference_loss = F.cross_entropy(reference_logits, targets) + reference_terms
    torch.testing.assert_close(logits, reference_logits, **TOL)
    torch.testing.assert_close(loss, reference_loss, **TOL)
    ours = torch.autograd.grad(loss, parameters, retain_graph=True)
    theirs = torch.autograd.grad(reference_loss, parameters)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)
        assert b.abs().sum() > 0


def scores(backbone, features, candidates):
    """[B, n_classes] logits, -inf outside the candidates."""
    logits = torch.full((features.shape[0], len(NAMES)), float("-inf"))
    logits[:, candidates] = backbone.model.logit_scale.exp() * features @ text_features(backbone, candidates).t()
    return logits


def assert_zero_shot(backbone, method):
    """The method's logits over all classes = open_clip's zero-shot ones (frozen image feature, template)."""
    with torch.no_grad():
        logits = method(images(), candidate_classes=range(6))
        expected = scores(backbone, F.normalize(backbone.model.encode_image(images()), dim=-1), list(range(6)))
    torch.testing.assert_close(logits, expected, **TOL)


# ----- L2P ------------------------------------------------------------------------------------------

def test_l2p_equals_the_papers_selection_prompts_and_surrogate_loss(tiny_backbone):
    torch.manual_seed(1)
    method = L2P(tiny_backbone, NAMES, PromptPool(size=6, length=3, top_k=2), pull_weight=0.1).train()
    method.set_candidate_classes(TASKS[0])
    pixels, targets = images(), torch.tensor([0, 1, 2, 0])
    clip = tiny_backbone.model
    query = reference_query(clip, pixels)
    features, pull = [], 0.0
    for b in range(len(pixels)):
        similarity = [cos(query[b], key) for key in method.pool.keys]
        chosen = sorted(range(len(similarity)), key=lambda m: -similarity[m])[:2]
        prompts = torch.cat([method.pool.prompts[m] for m in chosen])
        features.append(reference_image_feature(clip, pixels[b], input_prompts=prompts))
        pull = pull + sum(1 - F.cosine_similarity(query[b], method.pool.keys[m], dim=0) for m in chosen)
    reference = scores(tiny_backbone, torch.stack(features), TASKS[0])
    assert_logits_loss_gradients(method, pixels, targets, reference, 0.1 * pull / len(pixels),
                                 [method.pool.prompts, method.pool.keys])


@pytest.mark.parametrize("options, message", [
    (dict(size=0, length=5, top_k=0), r"method.pool.size=0: an empty pool inserts nothing: the run would be zero-shot"),
    (dict(size=4, length=0, top_k=2), r"method.pool.length=0: prompts of no tokens insert nothing"),
    (dict(size=4, length=2, top_k=0), r"method.pool.top_k=0: .*zero-shot CLIP; give an integer >= 1"),
])
def test_l2p_refuses_an_empty_pool_or_zero_length_prompts_which_would_be_zero_shot(options, message):
    with pytest.raises(ConfigValueError, match=message):
        PromptPool(**options)


def test_l2p_linear_head_scores_the_candidates_only(tiny_backbone):
    torch.manual_seed(0)
    method = L2P(tiny_backbone, NAMES, PromptPool(4, 2, 2), classifier="linear").train()
    logits = method(images(), candidate_classes=TASKS[1])
    features = method.last_image_features
    torch.testing.assert_close(logits[:, TASKS[1]], features @ method.head.weight[TASKS[1]].t() + method.head.bias[TASKS[1]],
                               **TOL)
    assert torch.isinf(logits[:, TASKS[0]]).all()
    assert {n for n, p in method.named_parameters() if p.requires_grad} == {"pool.keys", "pool.prompts", "head.weight",
                                                                            "head.bias"}


def test_l2p_refuses_a_top_k_beyond_the_pool(tiny_backbone):
    with pytest.raises(ConfigValueError, match="method.pool.top_k=6 is larger than method.pool.size=5"):
        PromptPool(size=5, length=5, top_k=6)


# ----- DualPrompt -------------------------------------------------------------------------------------

def dualprompt(backbone, **kwargs):
    torch.manual_seed(2)
    options = dict(g_length=2, g_layers=[0], e_length=3, e_layers=[1])
    options.update(kwargs)
    return DualPrompt(backbone, NAMES, **options)


def dualprompt_reference(method, clip, pixels, experts):
    """Features with the G-prefix in g_layers and expert ``experts[b]``'s prefix in e_layers."""
    features = []
    for b in range(len(pixels)):
        prefixes = {layer: (method.g_prompt[row, 0], method.g_prompt[row, 1]) for row, layer in enumerate(method.g_layers)}
        expert = method.experts.prefixes[experts[b]]
        for row, layer in enumerate(method.e_layers):
            prefixes[layer] = (expert[row, 0], expert[row, 1])
        features.append(reference_image_feature(clip, pixels[b], prefixes=prefixes))
    return torch.stack(features)


def test_dualprompt_training_uses_the_true_tasks_expert_and_pulls_its_key(tiny_backbone):
    method = dualprompt(tiny_backbone)
    adapt(method, 0)
    adapt(method, 1)
    method.set_candidate_classes(TASKS[1])
    pixels, targets = images(), torch.tensor([3, 4, 5, 3])
    clip = tiny_backbone.model
    query = reference_query(clip, pixels)
    reference = scores(tiny_backbone, dualprompt_reference(method, clip, pixels, [1] * 4), TASKS[1])
    pull = sum(1 - F.cosine_similarity(query[b], method.experts.keys[1], dim=0) for b in range(4)) / 4
    assert_logits_loss_gradients(method, pixels, targets, reference, 1.0 * pull,
                                 [method.g_prompt, method.experts.prefixes[1], method.experts.keys[1]])
    assert {n for n, p in method.named_parameters() if p.requires_grad} == {
        "g_prompt", "experts.keys.1", "experts.prefixes.1"}


def test_dualprompt_test_time_expert_is_the_best_key_and_is_recorded(tiny_backbone):
    method = dualprompt(tiny_backbone)
    adapt(method, 0)
    adapt(method, 1)
    method.eval()
    pixels = images(6)
    clip = tiny_backbone.model
    query = reference_query(clip, pixels)
    with torch.no_grad():
        method.experts.keys[0].copy_(query[0])   # image 0 must choose task 0, image 1 task 1
        method.experts.keys[1].copy_(query[1])
        expected = [max((0, 1), key=lambda t: cos(query[b], method.experts.keys[t])) for b in range(6)]
        logits = method(pixels, candidate_classes=TASKS[0] + TASKS[1])
        reference = scores(tiny_backbone, dualprompt_reference(method, clip, pixels, expected), TASKS[0] + TASKS[1])
    torch.testing.assert_close(logits, reference, **TOL)
    assert method.chosen_tasks.tolist() == expected and expected[:2] == [0, 1]
    with torch.no_grad():   # task-incremental scoring: the task is given, nothing is identified
        method(pixels, candidate_classes=TASKS[1])
    assert method.chosen_tasks is None


def test_dualprompt_refuses_zero_length_prompts_and_no_prompted_block(tiny_backbone):
    with pytest.raises(ConfigValueError, match=r"method.g_length=0: G-prompts of no tokens insert nothing .*"
                                               r"method.g_layers=\[\]\)"):
        dualprompt(tiny_backbone, g_length=0, e_length=0)
    with pytest.raises(ConfigValueError, match=r"method.g_layers=\[\] and method.e_layers=\[\]: .*zero-shot"):
        dualprompt(tiny_backbone, g_layers=[], e_layers=[])
    without_general = dualprompt(tiny_backbone, g_layers=[], e_layers=[1])   # the paper's ablation: no G-prompt
    assert without_general.g_layers == [] and without_general.e_layers == [1]


def test_dualprompt_refuses_blocks_the_tower_does_not_have(tiny_backbone):
    # a given list is the tower's own blocks (the defaults, null lists, are the paper's scaled: test_method_defaults.py)
    with pytest.raises(ConfigValueError, match=r"method.e_layers=\[2, 3, 4\]: distinct block indices in 0..1"):
        DualPrompt(tiny_backbone, NAMES, e_layers=[2, 3, 4])


# ----- CODA-Prompt -----------------------------------------------------------------------------------

def coda(backbone, **kwargs):
    torch.manual_seed(3)
    options = dict(components_per_task=3, length=4, layers=[0, 1], ortho_weight=0.1)
    options.update(kwargs)
    return CODAPrompt(backbone, NAMES, **options)


def test_coda_prompt_equals_the_papers_attention_weighted_components_and_ortho_loss(tiny_backbone):
    method = coda(tiny_backbone)
    adapt(method, 0)
    adapt(method, 1)
    method.set_candidate_classes(TASKS[1])
    with torch.no_grad():   # trained-looking values (the init is orthonormal, unit norm)
        for parameter in list(method.pool.components) + list(method.pool.keys) + list(method.pool.attention):
            parameter.add_(0.3 * torch.randn_like(parameter))
    pixels, targets = images(), torch.tensor([3, 4, 5, 3])
    clip = tiny_backbone.model
    query = reference_query(clip, pixels)
    P = [torch.cat([p[row] for p in method.pool.components]) for row in range(2)]   # [6, L, width] per block
    K = [torch.cat([k[row] for k in method.pool.keys]) for row in range(2)]
    A = [torch.cat([a[row] for a in method.pool.attention]) for row in range(2)]
    features = []
    for b in range(len(pixels)):
        prefixes = {}
        for row, layer in enumerate([0, 1]):
            alpha_t = torch.stack([F.cosine_similarity(query[b] * A[row][m], K[row][m], dim=0) for m in range(6)])
            prompt = torch.einsum("m,mlw->lw", alpha_t, P[row])
            prefixes[layer] = (prompt[:2], prompt[2:])
        features.append(reference_image_feature(clip, pixels[b], prefixes=prefixes))
    ortho = 0.0
    for row in range(2):
        for T in (K[row], A[row], P[row].flatten(1)):
            ortho = ortho + ((T @ T.t() - torch.eye(len(T))) ** 2).mean()
    reference = scores(tiny_backbone, torch.stack(features), TASKS[1])
    assert_logits_loss_gradients(method, pixels, targets, reference, 0.1 * ortho,
                                 [method.pool.components[1], method.pool.keys[1], method.pool.attention[1]])
    assert {n for n, p in method.named_parameters() if p.requires_grad} == {
        "pool.components.1", "pool.keys.1", "pool.attention.1"}


def test_coda_prompt_new_components_start_orthonormal_to_the_old(tiny_backbone):
    method = coda(tiny_backbone, components_per_task=4)
    adapt(method, 0)
    adapt(method, 1)
    for name in ("components", "keys", "attention"):
        for row in range(2):
            rows = torch.cat([p[row].reshape(4, -1) for p in getattr(method.pool, name)]).double()
            torch.testing.assert_close(rows @ rows.t(), torch.eye(8, dtype=torch.float64), atol=1e-5, rtol=0)
    previous = torch.linalg.qr(torch.randn(10, 5))[0].t()   # 5 orthonormal rows in 10 dimensions
    new = orthonormal_extension(previous, 5)
    torch.testing.assert_close(torch.cat([previous, new]) @ torch.cat([previous, new]).t(), torch.eye(10), atol=1e-5, rtol=0)
    with pytest.raises(ConfigValueError, match="11 components cannot be orthogonal in 10 dimensions"):
        orthonormal_extension(torch.cat([previous, new]), 1)


def test_coda_prompt_before_its_first_experience_is_zero_shot_and_empty_options_are_refused(tiny_backbone):
    assert_zero_shot(tiny_backbone, coda(tiny_backbone).eval())   # no components yet: nothing inserted
    with pytest.raises(ConfigValueError, match="method.length=0: prompts of no tokens insert nothing"):
        coda(tiny_backbone, length=0)


# ----- all three --------------------------------------------------------------------------------------

BUILDERS = {
    "l2p": lambda backbone: L2P(backbone, NAMES, PromptPool(size=5, length=2, top_k=2)),
    "dualprompt": dualprompt,
    "coda_prompt": coda,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_an_images_logits_do_not_depend_on_the_rest_of_its_batch(tiny_backbone, name):
    method = BUILDERS[name](tiny_backbone)
    adapt(method, 0)
    adapt(method, 1)
    method.eval()
    pixels = images(5, seed=4)
    with torch.no_grad():
        together = method(pixels, candidate_classes=range(6))
        alone = torch.cat([method(pixels[b:b + 1]) for b in range(5)])
        shuffled = method(pixels.flip(0)).flip(0)
    torch.testing.assert_close(alone, together, **TOL)
    torch.testing.assert_close(shuffled, together, **TOL)


@pytest.mark.parametrize("grown", [lambda: ExpertPrompts(query_dim=6, layers=2, length=3, width=8),
                                    lambda: PromptComponents(layers=2, per_task=3, length=2, width=8, query_dim=6)],
                         ids=["dualprompt_experts", "coda_prompt_components"])
def test_a_tasks_prompts_land_on_the_device_the_module_was_moved_to(grown):
    """Moved before its first task (as the speed bench does on CUDA): the first task's tensors follow it.
    'meta' stands in for a GPU here; the H200 run that found this raised a device mismatch."""
    module = grown().to("meta")
    module.train()
    module.adaptation(SimpleNamespace(current_experience=0, classes_in_this_experience=[0, 1]))
    assert {p.device.type for p in module.parameters()} == {"meta"}


def test_dualprompts_new_expert_is_drawn_on_the_cpu_whatever_the_device():
    """So a task starts from the same values on a GPU as on the CPU: the draw consumes the CPU generator."""
    states = []
    for device in ("cpu", "meta"):
        torch.manual_seed(0)
        experts = ExpertPrompts(query_dim=6, layers=2, length=3, width=8).to(device)
        experts.train()
        experts.adaptation(SimpleNamespace(current_experience=0, classes_in_this_experience=[0, 1]))
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])
    torch.manual_seed(0)
    assert not torch.equal(torch.get_rng_state(), states[0])


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_old_tasks_prompts_stay_as_they_were_while_a_new_task_trains(tiny_backbone, name):
    method = BUILDERS[name](tiny_backbone)

    def train_steps(task):
        adapt(method, task)
        method.set_candidate_classes(TASKS[task])
        optimizer = torch.optim.Adam(method.trainable_parameters(), lr=0.05)
        for step in range(2):
            logits = method(images(4, seed=step))
            loss = F.cross_entropy(logits, torch.tensor(TASKS[task] + TASKS[task][:1])) + method.regularization(logits, None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train_steps(0)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    train_steps(1)
    after = dict(method.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trained = {n for n, p in after.items() if p.requires_grad}
    assert changed == {n for n in trained if n in before}   # every trainable tensor that existed moved, no other
    expected_frozen = {"l2p": set(), "dualprompt": {"experts.keys.0", "experts.prefixes.0"},
                       "coda_prompt": {"pool.components.0", "pool.keys.0", "pool.attention.0"}}[name]
    assert expected_frozen <= set(before) - changed
    assert not any(n.startswith("clip.") for n in trained)


def test_dualprompt_run_records_task_identification_in_results_and_tensorboard(tmp_path, monkeypatch):
    _, results = traced_run(tmp_path, monkeypatch, "dualprompt", [
        "method=dualprompt", "method.g_layers=[0]", "method.e_layers=[1]", "train.epochs=1"])
    rows = results["task_identification"]["accuracy"]
    assert len(rows) == 3
    assert rows[0] == [None, None, None]                     # one trained task: nothing to identify
    assert all(v is not None for v in rows[1][:2]) and rows[1][2] is None and all(v is not None for v in rows[2])
    assert results["task_identification"]["mean_over_trained"][2] == pytest.approx(np.mean(rows[2]))
    events = EventAccumulator(str(tmp_path / "dualprompt" / "tensorboard"))
    events.Reload()
    assert {"task_identification/task_1", "task_identification/trained_mean"} <= set(events.Tags()["scalars"])
    assert results["config"]["train"]["optimizer"]["_target_"] == "torch.optim.Adam"
    assert results["config"]["train"]["schedule"] == "constant"
    saved = json.loads((tmp_path / "dualprompt" / "results.json").read_text())
    assert saved["task_identification"] == results["task_identification"]


@pytest.mark.slow   # the path of tests/test_sprompts.py::test_a_resumed_run_restores_the_centres, in subprocesses
@pytest.mark.parametrize("name, target, extra", [
    ("dualprompt", "clprompt.methods.dualprompt.DualPrompt", ["method.g_layers=[0]", "method.e_layers=[1]"]),
    ("coda_prompt", "clprompt.methods.coda_prompt.CODAPrompt", ["method.layers=[0,1]", "method.components_per_task=4"]),
])
def test_killed_and_resumed_equals_the_uninterrupted_run(tmp_path, name, target, extra):
    """The experts / components grown per task, and the task identification rows, survive a SIGKILL."""
    import os

    import warm_python
    from helpers import REPO

    def clprompt_run(run_dir, kill=None):
        env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONPATH=f"{REPO / 'tests'}{os.pathsep}{REPO}",
                   CLPROMPT_TEST_METHOD=target, CLPROMPT_TEST_KILL=kill or "")
        command = ["scenario=tiny_colors", "model=tiny", f"method={name}", "method._target_=helpers.killed_in_second_evaluation",
                   "train.epochs=1", "train.batch_size=4", "progress=false", "cache.dir=null", *extra,
                   f"hydra.run.dir={run_dir}"]
        return warm_python.run(["-m", "clprompt.run", *command], cwd=REPO, env=env)

    whole = clprompt_run(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    assert clprompt_run(tmp_path / "run", kill="eval:2").returncode == -9
    resumed = clprompt_run(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr
    assert "from experience 2 of 3" in resumed.stdout
    ours, theirs = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("run", "whole"))
    assert ours["accuracy_matrix"] == theirs["accuracy_matrix"]
    assert ours.get("task_identification") == theirs.get("task_identification")
    for e in (1, 2, 3):
        a = torch.load(tmp_path / "run" / "adapted_state" / f"experience_{e}.pt", weights_only=True)
        b = torch.load(tmp_path / "whole" / "adapted_state" / f"experience_{e}.pt", weights_only=True)
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
