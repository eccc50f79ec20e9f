"""The committed mini-CLIP: loads through the normal backbone path, is what its config says, and works."""

import shutil

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from clprompt.model.backbone import PROJECT_ROOT, load_backbone, sha256_of_file
from clprompt.errors import WeightsUnavailableError
from clprompt.methods.zeroshot import ZeroShot
from clprompt.miniclip_pretraining import label_aware_infonce, pretrain, to_model_input
from helpers import compose_config
from scenarios.sandbox.tasks import colour_shape_task, render_split


@pytest.fixture(scope="module")
def miniclip():
    return instantiate(compose_config(["model=miniclip"]).model)


def test_checkpoint_loads_through_the_backbone_path_with_the_configured_sha256(miniclip):
    config = compose_config(["model=miniclip"]).model
    path = PROJECT_ROOT / config.pretrained
    assert miniclip.identity["source"] == "file"
    assert miniclip.identity["sha256"] == config.sha256 == sha256_of_file(str(path))
    assert path.stat().st_size <= 16 * 2 ** 20


def test_a_changed_checkpoint_is_refused(tmp_path):
    config = compose_config(["model=miniclip"]).model
    copy = tmp_path / "miniclip.safetensors"
    shutil.copy(PROJECT_ROOT / config.pretrained, copy)
    with open(copy, "r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    with pytest.raises(WeightsUnavailableError, match="expects"):
        load_backbone(config.arch, pretrained=str(copy), config=config.config, sha256=config.sha256)


def test_zero_shot_is_far_above_chance_on_a_small_clean_test_set(miniclip):
    task = colour_shape_task()
    images, labels = render_split(task, per_class=2, seed=99)
    method = ZeroShot(miniclip, task.class_names).eval()
    with torch.inference_mode():
        predictions = method(to_model_input(images)).argmax(dim=1).numpy()
    accuracy = (predictions == labels).mean()
    assert accuracy >= 0.6, f"zero-shot {accuracy:.2f} over 100 classes (chance 0.01)"


def test_model_input_equals_the_open_clip_eval_transform(miniclip):
    images, _ = render_split(colour_shape_task(), per_class=1, seed=5)
    ours = to_model_input(images[:4])
    reference = torch.stack([miniclip.eval_transform(Image.fromarray(image)) for image in images[:4]])
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_label_aware_loss_is_clip_loss_when_only_the_diagonal_matches():
    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * image @ text.t()
    clip_loss = (torch.nn.functional.cross_entropy(logits, torch.arange(6)) +
                 torch.nn.functional.cross_entropy(logits.t(), torch.arange(6))) / 2
    torch.testing.assert_close(label_aware_infonce(image, text, scale, torch.eye(6, dtype=torch.bool)), clip_loss)


def test_label_aware_loss_spreads_the_target_over_all_matching_pairs():
    # two images and two captions, each caption describing both images ("a red star" twice)
    image = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    text = torch.nn.functional.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=-1)
    scale = torch.tensor(5.0)
    logits = scale * text @ image.t()  # [caption, image]
    both = torch.ones(2, 2, dtype=torch.bool)
    expected = (-(0.5 * torch.log_softmax(logits, 1)).sum(1).mean() - (0.5 * torch.log_softmax(logits.t(), 1)).sum(1).mean()) / 2
    torch.testing.assert_close(label_aware_infonce(image, text, scale, both), expected)


def test_pretraining_recipe_writes_a_checkpoint_that_loads(tmp_path):
    cfg = compose_config(["model=miniclip"])
    from omegaconf import OmegaConf

    recipe = OmegaConf.merge(OmegaConf.load(PROJECT_ROOT / "configs" / "pretrain.yaml"), {"model": cfg.model})
    recipe = OmegaConf.masked_copy(recipe, [k for k in recipe if k not in ("defaults", "hydra")])
    recipe.steps, recipe.batch_size, recipe.warmup_steps, recipe.num_workers = 3, 16, 1, 0
    summary = pretrain(recipe, tmp_path)
    assert summary["sha256"] == sha256_of_file(summary["checkpoint"])
    loaded = load_backbone("miniclip", pretrained=summary["checkpoint"], config=cfg.model.config)
    assert loaded.identity["sha256"] == summary["sha256"]
    assert np.isfinite(summary["final_loss"])
