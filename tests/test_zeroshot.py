"""Zero-shot CLIP through clprompt's text path equals open_clip's own encode_image/encode_text."""

import pytest
import torch
import torch.nn.functional as F

from clprompt.model.clip_adapter import CLIPAdapter
from clprompt.errors import ConfigValueError
from clprompt.methods.zeroshot import TEMPLATE_ENSEMBLES, ZeroShot

NAMES = ["red", "green", "golden retriever", "aquarium fish", "t-shirt"]


def images(n=6):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_zeroshot_logits_equal_open_clips_path(tiny_backbone):
    clip = tiny_backbone.model
    method = ZeroShot(tiny_backbone, NAMES).eval()
    x = images()
    with torch.no_grad():
        ours = method(x)
        text = clip.encode_text(tiny_backbone.tokenizer([f"a photo of a {n}." for n in NAMES]), normalize=True)
        reference = clip.logit_scale.exp() * clip.encode_image(x, normalize=True) @ text.t()
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_truncated_text_forward_equals_the_full_77_tokens(tiny_backbone):
    adapter = CLIPAdapter(tiny_backbone.model)
    tokens = tiny_backbone.tokenizer(["a", "a photo of a very long name of a thing, in a picture."])
    assert int(adapter.eot_positions(tokens).max()) < 20  # so the cut is real
    with torch.no_grad():
        full = F.normalize(tiny_backbone.model.encode_text(tokens), dim=-1)
        torch.testing.assert_close(adapter.encode_text(tokens), full, atol=1e-6, rtol=1e-5)


def test_candidate_classes_restrict_the_prediction(tiny_backbone):
    method = ZeroShot(tiny_backbone, NAMES).eval()
    with torch.no_grad():
        full = method(images())
        subset = method(images(), candidate_classes=[1, 3])
    assert subset.shape == (6, len(NAMES))
    assert torch.isinf(subset[:, [0, 2, 4]]).all()
    torch.testing.assert_close(subset[:, [1, 3]], full[:, [1, 3]])
    assert set(subset.argmax(dim=1).tolist()) <= {1, 3}


def test_text_features_are_cached_in_eval_and_dropped_on_request(tiny_backbone):
    method = ZeroShot(tiny_backbone, NAMES).eval()
    calls = []
    original = method.class_text_features
    method.class_text_features = lambda ids: calls.append(ids) or original(ids)
    with torch.inference_mode():
        method(images())
        method(images())
    assert len(calls) == 1
    method.clear_text_cache()
    with torch.inference_mode():
        method(images())
    assert len(calls) == 2


def test_template_ensemble_averages_normalized_features(tiny_backbone):
    templates = ["a photo of a {}.", "itap of a {}."]
    method = ZeroShot(tiny_backbone, NAMES, templates=templates)
    with torch.no_grad():
        features = method.class_text_features([0, 2])
        each = [ZeroShot(tiny_backbone, NAMES, templates=t).class_text_features([0, 2]) for t in templates]
    torch.testing.assert_close(features, F.normalize(each[0] + each[1], dim=-1))
    assert len(ZeroShot(tiny_backbone, NAMES, templates="openai_80").templates) == 80
    assert len(TEMPLATE_ENSEMBLES["openai_7"]) == 7


@pytest.mark.parametrize("bad", ["a photo", ["{} and {}"], []])
def test_bad_templates_are_refused(tiny_backbone, bad):
    with pytest.raises(ConfigValueError, match="method.templates"):
        ZeroShot(tiny_backbone, NAMES, templates=bad)


def test_zeroshot_has_nothing_to_train(tiny_backbone):
    assert ZeroShot(tiny_backbone, NAMES).trainable_parameters() == []
