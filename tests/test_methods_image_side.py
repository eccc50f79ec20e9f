"""MaPLe, CoCoOp, the linear probe and TEnc-FT: correctness against hand-built computations."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from clprompt.model.backbone import load_backbone
from clprompt.errors import ConfigValueError, UnsupportedBackboneError
from clprompt.methods.cocoop import CoCoOp
from clprompt.methods.linear_probe import LinearProbe
from clprompt.methods.maple import MaPLe
from clprompt.methods.zeroshot import ZeroShot
from clprompt.parts.context import LearnedContext
from helpers import compose_config

NAMES = ["red", "green", "golden retriever", "blue"]


def images(n=3):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def maple_context():
    return LearnedContext(length=2, init_words="a photo", words_after="of a")


def test_maple_prompt_is_the_references_two_tokens_then_of_a(tiny_backbone):
    method = MaPLe(tiny_backbone, NAMES, maple_context(), depth=1)
    tokenizer = tiny_backbone.tokenizer
    expected = tokenizer(["a photo of a red."])[0]
    assert method.prompt_tokens[0, 3:7].tolist() == expected[3:7].tolist()  # "of a red ."
    assert method.context_index[0].tolist() == [1, 2]
    with torch.no_grad():  # before training, the context holds the words "a photo": zero-shot's text
        zeroshot = ZeroShot(tiny_backbone, NAMES).class_text_features(range(4))
        torch.testing.assert_close(method.class_text_features(range(4)), zeroshot, atol=1e-5, rtol=1e-5)


def test_maple_trains_text_prompts_and_coupling_only(tiny_backbone):
    method = MaPLe(tiny_backbone, NAMES, maple_context(), depth=2).train()
    trainable = {n.split(".")[0] for n, p in method.named_parameters() if p.requires_grad}
    assert trainable == {"context", "deep_text", "coupling"}
    method(images(), candidate_classes=[0, 1]).logsumexp(1).sum().backward()
    assert method.deep_text.grad.abs().sum() > 0 and method.coupling[1].weight.grad.abs().sum() > 0


def test_maple_refuses_resnets_and_too_deep_prompts(tiny_backbone):
    with pytest.raises(ConfigValueError, match="method.depth=9"):
        MaPLe(tiny_backbone, NAMES, maple_context(), depth=9)
    rn50 = load_backbone("RN50", pretrained=None)
    with pytest.raises(UnsupportedBackboneError, match="MaPLe needs a ViT"):
        MaPLe(rn50, NAMES, maple_context(), depth=1)


def test_cocoop_with_a_silent_meta_net_is_coop(tiny_backbone):
    method = CoCoOp(tiny_backbone, NAMES, LearnedContext(length=4, init_words="a photo of a")).eval()
    for layer in method.meta_net:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    with torch.no_grad():
        expected = ZeroShot(tiny_backbone, NAMES).eval()(images())
        torch.testing.assert_close(method(images()), expected, atol=1e-5, rtol=1e-5)


def test_cocoop_text_features_depend_on_the_image(tiny_backbone):
    method = CoCoOp(tiny_backbone, NAMES, LearnedContext(length=4, init_words="a photo of a")).train()
    with torch.no_grad():  # 4 hidden units: make two surely alive (|W f| < 1 for a unit-norm f)
        method.meta_net[0].bias.copy_(torch.tensor([1.0, 1.0, -1.0, -1.0]))
    with torch.no_grad():
        shifts = method.meta_net(method.image_features(images(2)).float())
        first, second = (method.class_text_features(range(4), context_shift=s) for s in shifts)
    assert not torch.allclose(first, second)
    method(images(2), candidate_classes=[0, 1, 2, 3]).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.meta_net.parameters())
    assert method.meta_net[0].weight.grad[2:].abs().sum() == 0  # the two dead units learn nothing
    assert method.context.context.grad.abs().sum() > 0


def test_cocoop_scores_a_batch_as_each_image_alone_whatever_the_pass_size(tiny_backbone):
    """The batched text forward (B x C prompts at once, prompts_per_pass rows a pass) gives each image the
    logits the per-image loop gives it (the reference's loop over the batch)."""
    method = CoCoOp(tiny_backbone, NAMES, LearnedContext(length=4, init_words="a photo of a")).eval()
    with torch.no_grad():
        method.meta_net[0].bias.copy_(torch.tensor([1.0, 1.0, -1.0, -1.0]))
        features = method.image_features(images(5))
        shifts = method.meta_net(features.float())
        loop = torch.stack([method.clip.logit_scale * f @ method.class_text_features(range(4), context_shift=s).t()
                            for f, s in zip(features, shifts)])
        method.set_candidate_classes(range(4))
        for per_pass in (1, 4, 8, 10_000):   # 1 image a pass (the classes never split), 2, all five
            method.prompts_per_pass = per_pass
            torch.testing.assert_close(method.logits_from_image_features(features), loop, atol=1e-5, rtol=1e-5)
        alone = torch.cat([method.logits_from_image_features(features[i:i + 1]) for i in range(5)])
        torch.testing.assert_close(alone, loop, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigValueError, match="prompts_per_pass"):
        CoCoOp(tiny_backbone, NAMES, LearnedContext(length=4, init_words="a photo of a"), prompts_per_pass=0)


def test_linear_probe_from_text_starts_as_zeroshot_and_grows_per_experience(tiny_backbone):
    probe = LinearProbe(tiny_backbone, NAMES, init="text").eval()
    with torch.no_grad():
        torch.testing.assert_close(probe(images()), ZeroShot(tiny_backbone, NAMES).eval()(images()), atol=1e-5, rtol=1e-5)
    probe.train()
    probe.head.adaptation(SimpleNamespace(classes_in_this_experience=[2, 3]))
    assert [row.requires_grad for row in probe.head.rows] == [False, False, True, True]
    with pytest.raises(ConfigValueError, match="Classifier-R"):
        LinearProbe(tiny_backbone, NAMES, init="zeros")


def test_tenc_ft_trains_its_own_text_tower_copy(tiny_backbone):
    method = instantiate(compose_config(["method=tenc_ft", "model=tiny"]).method, backbone=tiny_backbone,
                         class_names=NAMES).train()
    trained = [n for n, p in method.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith("text_encoder.") for n in trained)
    assert not any("token_embedding" in n for n in trained)
    method(images(), candidate_classes=[0, 1]).logsumexp(1).sum().backward()
    assert all(p.grad is None for p in tiny_backbone.model.parameters())
    assert method.text_encoder.clip.transformer is not tiny_backbone.model.transformer
