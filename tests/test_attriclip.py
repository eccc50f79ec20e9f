"""AttriCLIP against plain computations of its paper's equations on open_clip's own modules, and as a run.

The reference side never goes through clprompt's adapter or layouts: it tokenizes the official code's
"x x ... x {name}." with open_clip's tokenizer, writes the chosen prompts over the "x" words' embeddings,
adds the positions, runs the blocks, ``ln_final``, pools at EOT and projects (the full 77-token forward).
Selection, logits, the key-matching loss L_K, the orthogonality loss L_P and their gradients must agree
to 1e-5 in fp32.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clprompt.errors import ConfigValueError
from clprompt.methods.attriclip import AttriCLIP
from clprompt.run import run
from helpers import compose_config, traced_run

NAMES = ["red", "green", "golden retriever", "blue"]
TOL = dict(atol=1e-5, rtol=1e-5)
SMALL = dict(bank_size=6, prompt_length=2, top_c=3)


@pytest.fixture(autouse=True)
def one_thread():
    """Many small kernels on a busy 2-core machine: two threads wait on each other (a tiny run measured 4.7 s
    on one thread, about 15 s on two while another job used the cores). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def features(n, dim=64, seed=0):
    """n random normalized image features (what the feature cache holds)."""
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def images(n=3):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def make(tiny_backbone, seed=0, **options):
    torch.manual_seed(seed)
    return AttriCLIP(tiny_backbone, NAMES, **{**SMALL, **options}).train()


def reference_text_features(clip, tokens, start, contexts):
    """open_clip's full text forward with contexts[r] ([n, width]) written over positions start.. of row r."""
    x = clip.token_embedding(tokens)
    rows = [torch.cat([x[r, :start], contexts[r], x[r, start + len(contexts[r]):]]) for r in range(len(tokens))]
    x = torch.stack(rows) + clip.positional_embedding
    for block in clip.transformer.resblocks:
        x = block(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)[torch.arange(len(tokens)), tokens.argmax(dim=-1)] @ clip.text_projection
    return F.normalize(x, dim=-1)


def reference_forward(method, tokenizer, clip, image):
    """The paper's equations, image by image: (selection [B, C], logits [B, K], L_K, L_P)."""
    keys, prompts = method.keys, method.prompts
    m, length, c = method.bank_size, method.prompt_length, method.top_c
    x_words = " ".join(["x"] * (length * c))
    # selection: the C keys of largest cos(z, k_m), best first
    similarity = image @ (keys / keys.norm(dim=-1, keepdim=True)).t()
    selection = similarity.topk(c, dim=1).indices
    # logits: "[SOT][P_i1]..[P_iC] name . [EOT]" per image and class
    tokens = tokenizer([f"{x_words} {name}." for name in NAMES])
    logits = []
    for b in range(len(image)):
        context = torch.cat([prompts[i] for i in selection[b].tolist()])
        text = reference_text_features(clip, tokens, 1, [context] * len(NAMES))
        logits.append(clip.logit_scale.exp() * image[b] @ text.t())
    # L_K = 1 - mean_{b, c} cos(z_b, k_{s_bc})
    chosen = keys[selection]
    key_loss = 1 - (image[:, None] * chosen / chosen.norm(dim=-1, keepdim=True)).sum(-1).mean()
    # L_P = mean_{i != j} |cos(g_i, g_j)|, g_m = f_t("[SOT][P_m] x .. x . [EOT]") (the official text)
    alone = tokenizer([f"{x_words}."] * m)
    g = reference_text_features(clip, alone, 1, [prompts[i] for i in range(m)])
    pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
    orthogonality = torch.stack([(g[i] @ g[j]).abs() for i, j in pairs]).mean()
    return selection, torch.stack(logits), key_loss, orthogonality


def test_selection_logits_and_losses_equal_the_papers_equations(tiny_backbone):
    method = make(tiny_backbone)
    clip, tokenizer = tiny_backbone.model, tiny_backbone.tokenizer
    image = features(5)
    targets = torch.tensor([0, 2, 3, 1, 2])
    logits = method.logits_from_image_features(image)
    regularization = method.regularization(logits, targets)
    terms = method.loss_terms()
    selection, reference_logits, key_loss, orthogonality = reference_forward(method, tokenizer, clip, image)
    assert torch.equal(method.last_selection, selection)
    assert len({tuple(s) for s in selection.tolist()}) > 1        # the images do not all share one selection
    torch.testing.assert_close(logits, reference_logits, **TOL)
    torch.testing.assert_close(terms["attriclip_keys"], key_loss.detach(), **TOL)
    torch.testing.assert_close(terms["attriclip_orthogonality"], orthogonality.detach(), **TOL)
    ours = F.cross_entropy(logits, targets) + regularization
    theirs = F.cross_entropy(reference_logits, targets) + 0.7 * key_loss + 0.3 * orthogonality
    torch.testing.assert_close(ours, theirs, **TOL)
    parameters = [method.keys, method.prompts]
    for a, b in zip(torch.autograd.grad(ours, parameters), torch.autograd.grad(theirs, parameters)):
        torch.testing.assert_close(a, b, **TOL)
        assert b.abs().sum() > 0


def test_orthogonality_alone_reads_each_prompt_without_the_x_fillers(tiny_backbone):
    method = make(tiny_backbone, orthogonality_text="alone")
    clip, tokenizer = tiny_backbone.model, tiny_backbone.tokenizer
    alone = tokenizer([" ".join(["x"] * method.prompt_length) + "."] * method.bank_size)   # "[SOT][P_m].[EOT]"
    g = reference_text_features(clip, alone, 1, list(method.prompts))
    off_diagonal = ~torch.eye(method.bank_size, dtype=torch.bool)
    torch.testing.assert_close(method.orthogonality_loss(), (g @ g.t())[off_diagonal].abs().mean(), **TOL)


def test_dot_similarity_ranks_by_the_unnormalized_keys_as_the_official_code(tiny_backbone):
    method = make(tiny_backbone, similarity="dot")
    with torch.no_grad():   # keys of very different norms: the two rankings differ
        method.keys.mul_(torch.linspace(0.1, 10, method.bank_size)[:, None])
    image = features(8)
    dot = (image @ method.keys.t()).topk(method.top_c, dim=1).indices
    cosine = (image @ F.normalize(method.keys, dim=-1).t()).topk(method.top_c, dim=1).indices
    assert torch.equal(method.select(image), dot)
    assert not torch.equal(dot, cosine)


def test_without_attributes_the_run_would_be_zero_shot_and_is_refused(tiny_backbone):
    """top_c = 0 would leave every class's prompt "{name}." (zero-shot CLIP under AttriCLIP's name)."""
    with pytest.raises(ConfigValueError, match=r"method.top_c=0: an image that takes no attribute prompt .*zero-shot "
                                               r"CLIP; give an integer >= 1"):
        make(tiny_backbone, top_c=0)


def test_an_images_logits_do_not_depend_on_the_rest_of_its_batch(tiny_backbone):
    method = make(tiny_backbone)
    image = features(9)
    for mode in ("train", "eval"):
        getattr(method, mode)()
        with torch.inference_mode():
            method.clear_text_cache()
            batch = method.logits_from_image_features(image)
            for b in range(len(image)):
                method.clear_text_cache()
                alone = method.logits_from_image_features(image[b:b + 1])
                torch.testing.assert_close(alone[0], batch[b], **TOL)
            order = torch.randperm(len(image), generator=torch.Generator().manual_seed(1))
            method.clear_text_cache()
            shuffled = method.logits_from_image_features(image[order])
            torch.testing.assert_close(shuffled, batch[order], **TOL)
            method.clear_text_cache()
            mixed = method.logits_from_image_features(torch.cat([features(4, seed=2), image[:3]]))
            torch.testing.assert_close(mixed[4:], batch[:3], **TOL)


def test_grouping_by_selection_equals_a_per_image_loop(tiny_backbone):
    method = make(tiny_backbone)
    base = features(4)   # 4 distinct images, each three times (exact and slightly moved copies)
    image = F.normalize(torch.cat([base, base, base + 1e-4 * features(4, seed=3)]), dim=-1)
    calls = []
    original = method.clip.encode_token_embeddings

    def counting(embeddings, *args, **kwargs):
        calls.append(embeddings.shape[0])
        return original(embeddings, *args, **kwargs)
    method.clip.encode_token_embeddings = counting
    with torch.no_grad():
        grouped = method.logits_from_image_features(image)
        selection = method.last_selection
        distinct = len({tuple(s) for s in selection.tolist()})
        assert calls == [distinct * len(NAMES)] and distinct < len(image)
        loop = []
        for b in range(len(image)):
            text = method.selection_text_features(range(len(NAMES)), selection[b:b + 1])[0]
            loop.append(method.clip.logit_scale * image[b] @ text.t())
        torch.testing.assert_close(grouped, torch.stack(loop), **TOL)
        method.prompts_per_pass = len(NAMES)   # one selection per text-tower pass
        torch.testing.assert_close(method.logits_from_image_features(image), grouped, **TOL)


def test_trainable_parameters_are_exactly_the_keys_and_the_prompts(tiny_backbone):
    method = make(tiny_backbone)
    trainable = {name for name, p in method.named_parameters() if p.requires_grad}
    assert trainable == {"keys", "prompts"}
    assert {id(p) for p in method.trainable_parameters()} == {id(method.keys), id(method.prompts)}
    assert set(method.adapted_state_dict()) == {"keys", "prompts"}
    assert method.keys.shape == (6, 64) and method.prompts.shape == (6, 2, 64)
    assert method.frozen_image_side and method.plugins() == []


def test_cached_features_and_images_give_the_same_loss_and_gradients(tiny_backbone):
    method = make(tiny_backbone)
    targets = torch.tensor([0, 3, 1])
    losses, gradients = [], []
    for path in ("images", "features"):
        if path == "images":
            logits = method(images(), candidate_classes=range(len(NAMES)))
        else:
            with torch.no_grad():
                cached = method.frozen_image_features(images())
            logits = method.logits_from_image_features(cached)
        loss = F.cross_entropy(logits, targets) + method.regularization(logits, targets)
        losses.append(loss)
        gradients.append(torch.autograd.grad(loss, [method.keys, method.prompts]))
    torch.testing.assert_close(losses[0], losses[1], **TOL)
    for a, b in zip(*gradients):
        torch.testing.assert_close(a, b, **TOL)


def test_a_run_trains_the_same_through_the_feature_cache_and_through_images(tmp_path, monkeypatch):
    """Every training step's loss (CE + the two terms) is the same whether the strategy feeds cached features
    to ``logits_from_image_features`` or images to ``forward`` (the views are the same pure functions)."""
    options = ["method=attriclip", "method.bank_size=4", "method.top_c=2", "method.prompt_length=3",
               "train.epochs=1", "train.batch_size=4", "scenario.n_experiences=2"]
    cached, cached_results = traced_run(tmp_path, monkeypatch, "cached", [*options, "train.feature_cache=on"])
    direct, direct_results = traced_run(tmp_path, monkeypatch, "direct", [*options, "train.feature_cache=off"])
    assert cached_results["feature_cache"]["enabled"] and not direct_results["feature_cache"]["enabled"]
    assert len(cached) == len(direct) > 0
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cached_results["accuracy_matrix"], direct_results["accuracy_matrix"])


@pytest.mark.parametrize("options, key", [
    (dict(bank_size=0), "method.bank_size"),
    (dict(prompt_length=0), "method.prompt_length"),
    (dict(top_c=-1), "method.top_c"),
    (dict(top_c=0), "method.top_c"),
    (dict(init_std=0.0), "method.init_std"),
    (dict(key_weight=float("nan")), "method.key_weight"),
    (dict(top_c=7), "method.top_c"),                       # more than the bank's 6
    (dict(key_weight=-0.1), "method.key_weight"),
    (dict(orthogonality_weight="high"), "method.orthogonality_weight"),
    (dict(similarity="l2"), "method.similarity"),
    (dict(orthogonality_text="nope"), "method.orthogonality_text"),
    (dict(prompts_per_pass=0), "method.prompts_per_pass"),
    (dict(prompt_length=30), "method.prompt_length"),      # 1 + 90 + name + 2 > 77 tokens
])
def test_bad_options_are_refused_with_the_key_and_the_fix(tiny_backbone, options, key):
    with pytest.raises(ConfigValueError) as error:
        make(tiny_backbone, **options)
    message = str(error.value)
    assert key in message
    assert any(fix in message for fix in ("give", "choose", "lower"))


def test_a_run_trains_the_shared_bank_in_every_experience(tmp_path):
    """``python -m clprompt.run scenario=split_shapes_palette model=miniclip method=attriclip ...`` in-process (as
    tests/test_sandbox_methods.py runs methods), 2 experiences through the feature cache: the one bank (keys
    and prompts) moves in both experiences, nothing is added, the loss terms are logged. A small bank keeps
    the evaluation's distinct selections few."""
    out = tmp_path / "run"
    results = run(compose_config([
        "scenario=split_shapes_palette", "model=miniclip", "method=attriclip", "train.epochs=1",
        "train.augmentation=none", "method.bank_size=4", "method.top_c=2", "method.prompt_length=4",
        "scenario.n_experiences=2", "scenario.train_per_class=1", "scenario.valid_per_class=1",
        "scenario.test_per_class=1", "progress=false", f"cache.dir={tmp_path / 'cache'}"]), out)
    assert len(results["accuracy_matrix"]) == 2 and results["feature_cache"]["enabled"]
    events = b"".join(f.read_bytes() for f in (out / "tensorboard" / "train").iterdir())
    assert b"train/attriclip_keys" in events and b"train/attriclip_orthogonality" in events
    states = [torch.load(out / "adapted_state" / f"experience_{i}.pt") for i in (1, 2)]
    assert set(states[0]) == set(states[1]) == {"keys", "prompts"}
    assert states[0]["keys"].shape == states[1]["keys"].shape == (4, 128)          # embed_dim, not text width
    assert states[0]["prompts"].shape == states[1]["prompts"].shape == (4, 4, 96)
    for name in ("keys", "prompts"):
        assert not torch.equal(states[0][name], states[1][name])
