"""train.compile: the compiled text tower computes what the eager one does, and is used where it says."""

import numpy as np
import pytest
import torch

from clprompt.model.clip_adapter import CLIPAdapter
from clprompt.training.compiled_step import CompiledTextTower, resolve_compile
from clprompt.errors import ConfigValueError
from helpers import traced_run

pytestmark = pytest.mark.filterwarnings("ignore")


def test_mode_follows_the_device():
    assert resolve_compile("auto", torch.device("cuda"))[0]
    assert not resolve_compile("auto", torch.device("cpu"))[0]
    assert resolve_compile("on", torch.device("cpu"))[0]
    assert not resolve_compile("off", torch.device("cuda"))[0]
    with pytest.raises(ConfigValueError, match="train.compile='always'.*auto.*on or off"):
        resolve_compile("always", torch.device("cpu"))


def counting_compiles(monkeypatch):
    """Counts the compiled towers' calls (the compiled function still runs)."""
    calls = []
    original = CompiledTextTower._compiled_for

    def compiled_for(self, adapter):
        compiled = original(self, adapter)

        def counted(*args, **kwargs):
            calls.append(adapter)
            return compiled(*args, **kwargs)
        return counted
    monkeypatch.setattr(CompiledTextTower, "_compiled_for", compiled_for)
    return calls


@pytest.mark.parametrize("method", ["coop", "lamm", "maple"])
def test_compiled_and_eager_give_the_same_losses_and_matrix(tmp_path, monkeypatch, method):
    common = [f"method={method}", "train.augmentation=none", "train.epochs=2", "train.batch_size=4",
              "precision=fp32", "device=cpu", "train.compile_backend=aot_eager", "train.warmup_epochs=0"]
    if method == "maple":
        common.append("method.depth=2")
    eager_losses, eager = traced_run(tmp_path, monkeypatch, "eager", common + ["train.compile=off"])
    calls = counting_compiles(monkeypatch)
    compiled_losses, compiled = traced_run(tmp_path, monkeypatch, "compiled", common + ["train.compile=on"])
    assert len(compiled_losses) == len(eager_losses) > 0
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(compiled["accuracy_matrix"], float),
                               np.array(eager["accuracy_matrix"], float), atol=1e-5)
    assert len(calls) == len(compiled_losses)  # every training step, and nothing else, ran the compiled tower
    assert compiled["compile"] == {"mode": "on", "enabled": True, "reason": "on (train.compile=on)",
                                   "backend": "aot_eager", "torch_compile_mode": "default"}
    assert eager["compile"]["enabled"] is False


def test_training_ends_with_the_eager_tower_back(tiny_backbone):
    from clprompt.methods.prompt_tuning import PromptTuning
    from clprompt.parts.context import LearnedContext
    from clprompt.parts.labels import NameLabels

    method = PromptTuning(tiny_backbone, ["red", "blue"], LearnedContext(length=2), NameLabels())
    tower = CompiledTextTower(torch.device("cpu"), backend="aot_eager")
    tower.install(method)
    adapters = [m for m in method.modules() if isinstance(m, CLIPAdapter)]
    assert adapters and all(a.compiled_text_tower is not None for a in adapters)
    tower.remove()
    assert all(a.compiled_text_tower is None for a in adapters)


@pytest.mark.slow
def test_inductor_on_cpu_gives_the_eager_losses(tmp_path, monkeypatch):
    """inductor's generated code (the default backend), on CPU: about a minute of compiling on 2 cores."""
    common = ["method=coop", "train.augmentation=none", "train.epochs=2", "train.batch_size=4",
              "precision=fp32", "device=cpu", "train.warmup_epochs=0"]
    eager_losses, _ = traced_run(tmp_path, monkeypatch, "eager", common + ["train.compile=off"])
    compiled_losses, _ = traced_run(tmp_path, monkeypatch, "compiled", common + ["train.compile=on"])
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-5, atol=1e-5)
