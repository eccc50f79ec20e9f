"""VPT on CLIP's ViT: zero prompts change nothing (and VPT refuses them), prompts train alone, ResNets are
refused."""

import pytest
import torch
import torch.nn.functional as F

from clprompt.model.backbone import load_backbone
from clprompt.model.clip_adapter import CLIPAdapter
from clprompt.errors import ConfigValueError, UnsupportedBackboneError
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.parts.context import TemplateContext
from clprompt.parts.labels import NameLabels
from clprompt.parts.visual import VisualPrompts

NAMES = ["red", "green", "blue"]


def images(n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("depth", [1, 2])
def test_zero_prompt_tokens_equal_open_clips_encode_image(tiny_backbone, depth):
    adapter = CLIPAdapter(tiny_backbone.model)
    with torch.no_grad():
        expected = F.normalize(tiny_backbone.model.encode_image(images()), dim=-1)
        empty = [torch.zeros(0, adapter.image_width)] * depth
        torch.testing.assert_close(adapter.encode_image_with_prompts(images(), empty), expected, atol=1e-6, rtol=1e-5)


def test_vpt_without_prompt_tokens_is_refused_as_zero_shot():
    with pytest.raises(ConfigValueError, match=r"method.visual.length=0: prompts of no tokens insert nothing: the run "
                                               r"would be zero-shot CLIP; give an integer >= 1"):
        VisualPrompts(0, 1)


@pytest.mark.parametrize("depth", [1, None])
def test_prompts_change_the_features_and_only_they_get_gradients(tiny_backbone, depth):
    method = PromptTuning(tiny_backbone, NAMES, TemplateContext(), NameLabels(), visual=VisualPrompts(4, depth)).train()
    assert [n for n, p in method.named_parameters() if p.requires_grad] == ["visual.prompts"]
    logits = method(images(), candidate_classes=[0, 1, 2])
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    grad = method.visual.prompts.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for n, p in method.named_parameters() if n != "visual.prompts")
    if depth is None:  # deep: every block's prompts are used
        assert (grad.abs().sum(dim=(1, 2)) > 0).all()


def test_deep_prompts_replace_the_previous_blocks_prompt_outputs(tiny_backbone):
    adapter = CLIPAdapter(tiny_backbone.model)
    prompts = [torch.zeros(2, adapter.image_width), torch.randn(2, adapter.image_width)]
    with torch.no_grad():
        shallow = adapter.encode_image_with_prompts(images(), prompts[:1])
        deep = adapter.encode_image_with_prompts(images(), prompts)
    assert not torch.allclose(shallow, deep)


def test_resnet_image_towers_are_refused():
    rn50 = load_backbone("RN50", pretrained=None)
    with pytest.raises(UnsupportedBackboneError, match="needs a ViT image tower.*ResNet"):
        PromptTuning(rn50, NAMES, TemplateContext(), NameLabels(), visual=VisualPrompts())
