"""train.text_chunk: the text tower over a class set in chunks gives the one-pass features, logits and gradients;
under grad each chunk is checkpointed (recomputed in the backward); and the chunked features are CLIP's text
features as its equations define them."""

import math

import numpy as np
import psutil
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from clprompt.config_check import check_config
from clprompt.errors import ConfigValueError
from clprompt.model.clip_adapter import (
    CLIPAdapter, configure_text_chunks, resolve_text_chunk,
)
from helpers import compose_config, traced_run

pytestmark = pytest.mark.filterwarnings("ignore")

# 23 classes of 1-4 name tokens (EOT positions differ), in chunks of 5: 5 + 5 + 5 + 5 + 3
WORDS = ["cat", "golden retriever", "aquarium fish", "t-shirt", "red panda bear", "car"]
NAMES = [f"{WORDS[i % len(WORDS)]} {i}" for i in range(23)]
CHUNK = 5
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def build(name, backbone, overrides=()):
    method = instantiate(compose_config([f"method={name}", "model=tiny", *overrides]).method, backbone=backbone,
                         class_names=NAMES)
    if getattr(method, "labels", None) is not None and hasattr(method.labels, "add_classes"):
        method.labels.add_classes(range(len(NAMES)))    # LAMM: a learned label for every class
    method.set_candidate_classes(range(len(NAMES)))
    return method.train()


def counting_tower(monkeypatch, adapter):
    """Counts the text tower's passes of ``adapter`` (the tower still runs): the prompts of each pass."""
    calls = []
    original = adapter.eager_text_tower

    def counted(embeddings, *args, **kwargs):
        calls.append(int(embeddings.shape[0]))
        return original(embeddings, *args, **kwargs)
    monkeypatch.setattr(adapter, "eager_text_tower", counted)
    return calls


def step(method, chunk, images=None, features=None):
    """(logits, {parameter: gradient}) of one step of the method's loss with text_chunk=chunk."""
    method.clip.text_chunk = chunk
    method.zero_grad(set_to_none=True)
    labels = torch.arange(8) % len(NAMES)
    logits = method(images) if images is not None else method.logits_from_image_features(features)
    loss = F.cross_entropy(logits[:, method.candidate_classes], labels) + method.regularization(logits, labels)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in method.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    return logits.detach(), grads


@pytest.mark.parametrize("name", ["coop", "lamm", "maple"])
def test_chunked_logits_and_gradients_equal_the_one_pass(tiny_backbone, monkeypatch, name):
    """The same method (the same seed) in one pass and in chunks of 5: logits and every trainable parameter's
    gradient agree, and under grad each chunk's tower ran twice (forward, recomputation in the backward)."""
    inputs = ({"images": torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))} if name == "maple"
              else {"features": F.normalize(torch.randn(8, 64, generator=torch.Generator().manual_seed(1)), dim=-1)})
    runs = {}
    for chunk in (0, CHUNK):
        torch.manual_seed(0)
        method = build(name, tiny_backbone, ["method.depth=2"] if name == "maple" else [])
        calls = counting_tower(monkeypatch, method.clip)
        runs[chunk] = step(method, chunk, **inputs) + (calls,)
    (whole_logits, whole_grads, whole_calls), (chunked_logits, chunked_grads, calls) = runs[0], runs[CHUNK]
    torch.testing.assert_close(chunked_logits, whole_logits, **TOLERANCE)
    assert chunked_grads.keys() == whole_grads.keys()
    for key in whole_grads:
        torch.testing.assert_close(chunked_grads[key], whole_grads[key], **TOLERANCE, msg=key)
    passes = [CHUNK] * (len(NAMES) // CHUNK) + [len(NAMES) % CHUNK]
    if name == "lamm":  # first the names' features (L_COS, L_KD), computed without grad: chunked, not checkpointed
        assert whole_calls == [len(NAMES)] * 2 and calls[:len(passes)] == passes
        calls = calls[len(passes):]
    else:
        assert whole_calls == [len(NAMES)]            # off: one pass, no recomputation
    # every chunk's forward, then its recomputation in the backward
    assert calls[:len(passes)] == passes and sorted(calls[len(passes):]) == sorted(passes)


def test_maple_deep_prompts_are_split_with_their_rows(tiny_backbone):
    """The text features of MaPLe (deep prompts at each prompt's context positions) in chunks of 1..23. The
    context in the middle (split around the name) puts the prompts at other positions in each row."""
    torch.manual_seed(0)
    method = build("maple", tiny_backbone, ["method.depth=2", "method.context.position=middle"])
    positions = method._class_set_layout(list(range(len(NAMES))))["context_index"][1]
    assert len({tuple(row) for row in positions.tolist()}) > 1
    with torch.no_grad():
        method.deep_text.normal_(std=0.5)   # prompts far from zero, so a misplaced row would show
        method.clip.text_chunk = 0
        whole = method.class_text_features(range(len(NAMES)))
        for chunk in (1, 4, 22, 23, 100):
            method.clip.text_chunk = chunk
            torch.testing.assert_close(method.class_text_features(range(len(NAMES))), whole, **TOLERANCE)


def test_no_checkpoint_for_one_chunk_or_without_grad(tiny_backbone, monkeypatch):
    method = build("coop", tiny_backbone)
    calls = counting_tower(monkeypatch, method.clip)
    features = F.normalize(torch.randn(4, 64), dim=-1)
    method.clip.text_chunk = len(NAMES)
    method.logits_from_image_features(features).sum().backward()
    assert calls == [len(NAMES)]
    calls.clear()
    method.clip.text_chunk = CHUNK
    with torch.no_grad():
        method.logits_from_image_features(features)
    assert calls == [5, 5, 5, 5, 3]


def test_auto_keeps_small_class_sets_in_one_pass_and_chunks_to_its_budget(tiny_backbone, monkeypatch):
    method = build("coop", tiny_backbone)
    adapter = method.clip
    record = configure_text_chunks(method, "auto", torch.device("cpu"))
    available = psutil.virtual_memory().available   # a quarter of the machine's available memory, when configured
    assert adapter.text_chunk == "auto" and 0.2 * available <= adapter.text_chunk_budget <= 0.3 * available
    assert record["budget_bytes"] == adapter.text_chunk_budget and record["train_chunk_at_length_77"] >= len(NAMES)
    calls = counting_tower(monkeypatch, adapter)
    features = F.normalize(torch.randn(4, 64), dim=-1)
    whole = method.logits_from_image_features(features)
    whole.sum().backward()
    assert calls == [len(NAMES)]                      # a small class set: today's single pass
    # a budget of 5 prompts' activations at this class set's length: chunks of 5 under grad
    length = method._class_set_layout(list(range(len(NAMES))))["length"]
    adapter.text_chunk_budget = 5 * adapter.activation_bytes_per_prompt(length, grad=True) + 1
    assert adapter.prompts_per_chunk(len(NAMES), length, grad=True) == 5
    assert adapter.prompts_per_chunk(len(NAMES), length, grad=False) == 10  # one of the 2 blocks' at a time
    calls.clear()
    chunked = method.logits_from_image_features(features)
    chunked.sum().backward()
    assert calls[:5] == [5, 5, 5, 5, 3] and sorted(calls[5:]) == [3, 5, 5, 5, 5]   # forward, then recomputed
    torch.testing.assert_close(chunked, whole, **TOLERANCE)
    # grad enabled but nothing to differentiate (LAMM's names' features): the no-grad chunks, no checkpoint
    calls.clear()
    frozen = method.prompt_embeddings(range(len(NAMES))).detach()
    eot = method._class_set_layout(list(range(len(NAMES))))["eot"]
    assert not adapter.encode_token_embeddings(frozen, eot, length=length).requires_grad
    assert calls == [10, 10, 3]


def test_the_activation_estimate_of_a_vit_b32_sized_tower():
    """auto's rule on ViT-B/32's text tower (12 blocks of width 512, fp32) at CoOp's length (~21 tokens):
    ~104 prompts a chunk under grad within 1 GiB, ~1248 without grad: 1000 classes train in 10 chunks."""
    adapter = CLIPAdapter.__new__(CLIPAdapter)
    torch.nn.Module.__init__(adapter)
    adapter.clip = type("Clip", (), {"transformer": type("T", (), {
        "width": 512, "resblocks": [None] * 12, "get_cast_dtype": staticmethod(lambda: torch.float32)})()})()
    adapter.text_chunk_budget = 1 << 30
    assert adapter.activation_bytes_per_prompt(21, grad=True) == 20 * 21 * 512 * 4 * 12
    assert adapter.prompts_per_chunk(1000, 21, grad=True) == 104
    assert adapter.prompts_per_chunk(21000, 21, grad=False) == 1248
    assert adapter.prompts_per_chunk(50, 21, grad=True) == 50


def test_settings_and_their_record(tiny_backbone):
    method = build("coop", tiny_backbone)
    assert resolve_text_chunk("auto") == "auto" and resolve_text_chunk("off") == 0 and resolve_text_chunk(0) == 0
    assert resolve_text_chunk(64) == 64
    for bad in ("on", -1, 2.5, True, None):
        with pytest.raises(ConfigValueError, match="train.text_chunk=.*auto.*integer >= 1.*off"):
            resolve_text_chunk(bad)
    assert configure_text_chunks(method, 7, "cpu") == {
        "setting": 7, "prompts_per_chunk": 7, "reason": "at most 7 prompts per pass (train.text_chunk=7)"}
    assert method.clip.text_chunk == 7
    assert configure_text_chunks(method, "off", "cpu")["prompts_per_chunk"] == 0 and method.clip.text_chunk == 0
    for good in ("auto", "off", 0, 1, 500):
        check_config(compose_config([f"train.text_chunk={good}"]))
    config = compose_config([])
    config.train.text_chunk = False       # `text_chunk: off` in a YAML file
    check_config(config)
    assert resolve_text_chunk(False) == 0
    for bad in ("on", -3, 1.5, "big"):
        with pytest.raises(ConfigValueError, match=r"train.text_chunk.*auto.*integer >= 1.*0 / off"):
            check_config(compose_config([f"train.text_chunk={bad}"]))


def clip_text_features_from_the_equations(clip, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's text encoder (Radford et al. 2021) written out over open_clip's weights, every prompt at once:
    x_0 = E[tokens] + P; per block x <- x + W_o MHA(LN_1(x)) (causal), x <- x + MLP(LN_2(x));
    f = LN_f(x)[EOT] W_text, EOT the highest token id of each prompt."""
    x = clip.token_embedding(tokens) + clip.positional_embedding
    n, length, width = x.shape
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    for block in clip.transformer.resblocks:
        attention = block.attn
        heads = attention.num_heads
        h = block.ln_1(x)
        q, k, v = (h @ attention.in_proj_weight.t() + attention.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
        weights = scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(n, length, width)
        x = x + attended @ attention.out_proj.weight.t() + attention.out_proj.bias
        h = block.ln_2(x)
        x = x + block.mlp.c_proj(block.mlp.gelu(block.mlp.c_fc(h)))
    x = clip.ln_final(x)
    pooled = x[torch.arange(n), tokens.argmax(dim=-1)]
    return pooled @ clip.text_projection


def test_chunked_features_are_clips_equations(tiny_backbone):
    clip = tiny_backbone.model
    tokens = tiny_backbone.tokenizer([f"a photo of a {name}." for name in NAMES])
    adapter = CLIPAdapter(clip)
    adapter.text_chunk = CHUNK
    with torch.no_grad():
        expected = clip_text_features_from_the_equations(clip, tokens)
        chunked = adapter.encode_token_embeddings(adapter.embed_tokens(tokens), adapter.eot_positions(tokens))
    torch.testing.assert_close(chunked, expected, **TOLERANCE)
    embeddings = adapter.embed_tokens(tokens).detach().requires_grad_()
    with_grad = adapter.encode_token_embeddings(embeddings, adapter.eot_positions(tokens))   # checkpointed chunks
    torch.testing.assert_close(with_grad.detach(), expected, **TOLERANCE)
    with_grad.sum().backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


def test_a_run_with_small_chunks_gives_the_losses_and_matrix_of_one_pass(tmp_path, monkeypatch):
    common = ["method=coop", "train.augmentation=none", "train.epochs=2", "train.batch_size=4", "precision=fp32",
              "device=cpu", "train.warmup_epochs=0", "train.compile=off"]
    whole_losses, whole = traced_run(tmp_path, monkeypatch, "whole", common + ["train.text_chunk=off"])
    chunked_losses, chunked = traced_run(tmp_path, monkeypatch, "chunked", common + ["train.text_chunk=1"])
    assert len(chunked_losses) == len(whole_losses) > 0
    torch.testing.assert_close(torch.tensor(chunked_losses), torch.tensor(whole_losses), **TOLERANCE)
    np.testing.assert_allclose(np.array(chunked["accuracy_matrix"], float), np.array(whole["accuracy_matrix"], float),
                               atol=1e-5)
    assert whole["text_chunk"]["prompts_per_chunk"] == 0
    assert chunked["text_chunk"] == {"setting": 1, "prompts_per_chunk": 1,
                                     "reason": "at most 1 prompts per pass (train.text_chunk=1)"}
    auto = compose_config(["model=tiny"]).train.text_chunk
    assert auto == "auto"
