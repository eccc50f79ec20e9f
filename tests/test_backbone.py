"""Backbone loading: the three weight sources, what is recorded, and the refusals."""

import open_clip
import pytest
import torch
from hydra.utils import instantiate

from clprompt.model.backbone import load_backbone, sha256_of_file
from clprompt.errors import ConfigValueError, WeightsUnavailableError
from helpers import compose_config


def tiny_model_config():
    return compose_config(["model=tiny"]).model


def test_random_init_is_recorded_and_frozen(tiny_backbone):
    assert tiny_backbone.identity["source"] == "random"
    assert tiny_backbone.identity["pretrained"] is None
    assert not any(p.requires_grad for p in tiny_backbone.model.parameters())
    assert not tiny_backbone.model.training


def test_checkpoint_file_loads_exactly_and_its_sha256_is_recorded(tmp_path, tiny_backbone):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    loaded = instantiate(tiny_model_config(), pretrained=str(path))
    assert loaded.identity["source"] == "file"
    assert loaded.identity["sha256"] == sha256_of_file(str(path))
    for (name, a), b in zip(tiny_backbone.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_load_draws_no_random_init_and_leaves_the_generator_as_it_was(tmp_path, tiny_backbone,
                                                                                      monkeypatch):
    """The weights a strict load overwrites are not drawn first, and the run's generator is where it was:
    what a run draws next does not depend on the architecture's init."""
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    fills = []
    original = torch.nn.init.normal_
    monkeypatch.setattr(torch.nn.init, "normal_", lambda tensor, *a, **k: fills.append(1) or original(tensor, *a, **k))
    torch.manual_seed(7)
    before = torch.get_rng_state()
    loaded = instantiate(tiny_model_config(), pretrained=str(path))
    assert fills == [] and torch.equal(torch.get_rng_state(), before)
    for (name, a), b in zip(tiny_backbone.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    instantiate(tiny_model_config(), pretrained=None)      # random weights: drawn, as before
    assert fills and not torch.equal(torch.get_rng_state(), before)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError):            # a failed load puts the fills back too
        load_backbone("tiny", pretrained=str(tmp_path / "garbage.pt"), config=tiny_model_config().config)
    fills.clear()
    torch.nn.init.normal_(torch.empty(3))
    assert fills == [1]


def test_missing_checkpoint_file_is_refused(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="no such checkpoint file"):
        load_backbone("tiny", pretrained=str(tmp_path / "missing.safetensors"), config=tiny_model_config().config)


def test_unknown_tag_lists_the_known_ones_and_the_file_option():
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone("ViT-B-32", pretrained="not-a-tag")
    assert "openai" in str(error.value) and "model.pretrained=/path/to/file" in str(error.value)


def test_download_failure_names_the_local_file_option(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': no network")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone("ViT-B-16", pretrained="openai")
    message = str(error.value)
    assert "model.pretrained=/path/to/open_clip_model.safetensors" in message
    assert "model.quick_gelu=true" in message  # OpenAI weights need QuickGELU
    assert "timm/vit_base_patch16_clip_224.openai" in message


def test_tag_quick_gelu_is_followed_and_contradictions_refused(monkeypatch):
    seen = {}

    def record(arch, pretrained, force_quick_gelu, cache_dir):
        seen["quick_gelu"] = force_quick_gelu
        raise RuntimeError("stop before downloading")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", record)
    with pytest.raises(WeightsUnavailableError):
        load_backbone("RN50", pretrained="openai")
    assert seen["quick_gelu"] is True
    with pytest.raises(ConfigValueError, match="quick_gelu"):
        load_backbone("RN50", pretrained="openai", quick_gelu=False)


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(ConfigValueError, match="ViT-B-16"):
        load_backbone("ViT-B-99", pretrained=None)


@pytest.mark.parametrize("name, arch", [("vit_b16", "ViT-B-16"), ("vit_b32", "ViT-B-32"), ("rn50", "RN50")])
def test_stock_model_configs_name_real_architectures_and_tags(name, arch):
    config = compose_config([f"model={name}"]).model
    assert config.arch == arch and config.arch in open_clip.list_models()
    assert config.pretrained in open_clip.list_pretrained_tags_by_model(arch)


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(tmp_path, tiny_backbone):
    state = tiny_backbone.model.state_dict()
    good = tmp_path / "good.pt"
    torch.save(state, good)
    files = {"garbage": tmp_path / "garbage.pt", "truncated": tmp_path / "truncated.pt",
             "truncated safetensors": tmp_path / "truncated.safetensors", "runs code": tmp_path / "code.pt",
             "another architecture": tmp_path / "wider.pt"}
    files["garbage"].write_bytes(b"not a checkpoint at all")
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "full.safetensors"))
    full = (tmp_path / "full.safetensors").read_bytes()
    files["truncated safetensors"].write_bytes(full[: len(full) // 2])
    torch.save({"state_dict": RunsACommand(tmp_path / "ran")}, files["runs code"])
    from omegaconf import OmegaConf
    config = OmegaConf.to_container(tiny_model_config().config)
    config["text_cfg"]["width"] = 128
    torch.save(open_clip.CLIP(**config).state_dict(), files["another architecture"])
    return files


@pytest.mark.parametrize("kind", ["garbage", "truncated", "truncated safetensors", "runs code", "another architecture"])
def test_a_bad_checkpoint_file_is_named_with_the_likely_cause(tmp_path, tiny_backbone, kind):
    path = bad_checkpoints(tmp_path, tiny_backbone)[kind]
    with pytest.raises(WeightsUnavailableError, match=rf"{path.name} could not be loaded as weights of .*restore the file"):
        load_backbone("tiny", pretrained=str(path), config=tiny_model_config().config)
    assert not (tmp_path / "ran").exists()   # weights_only: the pickle's command never ran
