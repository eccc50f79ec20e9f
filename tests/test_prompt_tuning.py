"""Text prompt tuning (CoOp, LAMM, CLS tuning, full prompt tuning, CoOp+LAMM) and the GCE loss."""

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from avalanche.models.dynamic_modules import DynamicModule

from clprompt.errors import ConfigValueError
from clprompt.model.losses import CrossEntropy, GeneralizedCrossEntropy
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.methods.zeroshot import ZeroShot
from clprompt.parts.context import LearnedContext, TemplateContext
from clprompt.parts.labels import LearnedLabels, NameLabels
from clprompt.run import run
from helpers import compose_config

NAMES = ["red", "green", "golden retriever", "aquarium fish", "t-shirt", "blue"]


def images(n=6, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def method_from_config(name, backbone, class_names=NAMES):
    return instantiate(compose_config([f"method={name}", "model=tiny"]).method, backbone=backbone,
                       class_names=class_names)


def test_coop_initialised_from_words_equals_zeroshot(tiny_backbone):
    coop = PromptTuning(tiny_backbone, NAMES, LearnedContext(init_words="a photo of a"), NameLabels()).eval()
    zeroshot = ZeroShot(tiny_backbone, NAMES, templates="a photo of a {}.").eval()
    assert coop.context.length == 4
    with torch.no_grad():
        torch.testing.assert_close(coop(images()), zeroshot(images()), atol=1e-5, rtol=1e-5)


def test_prompt_tokens_are_the_tokenizers_own(tiny_backbone):
    method = PromptTuning(tiny_backbone, NAMES, TemplateContext("a photo of a {}."), LearnedLabels())
    expected = tiny_backbone.tokenizer([f"a photo of a {n}." for n in NAMES])
    assert torch.equal(method.prompt_tokens, expected)


def test_lamm_before_training_equals_zeroshot(tiny_backbone):
    lamm = method_from_config("lamm", tiny_backbone).eval()
    lamm.labels.add_classes(range(len(NAMES)))
    zeroshot = ZeroShot(tiny_backbone, NAMES).eval()
    with torch.no_grad():  # equal up to fp32 rounding (zero-shot renormalises its template mean; logits
        # are scaled by exp(logit_scale), so 1e-6 was within a rounding of failing, order-dependently)
        torch.testing.assert_close(lamm(images()), zeroshot(images()), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_context_positions_and_class_specific_contexts(tiny_backbone, position):
    context = LearnedContext(length=4, class_specific=True, position=position)
    method = PromptTuning(tiny_backbone, NAMES, context, NameLabels())
    assert context.context.shape[:2] == (len(NAMES), 4)
    tokens = method.prompt_tokens[2]  # "golden retriever": 2 name tokens
    name = tiny_backbone.tokenizer.encode("golden retriever")
    start = {"end": 5, "middle": 3, "front": 1}[position]
    assert tokens[start:start + 2].tolist() == name
    features = method.class_text_features([0, 2])
    features.sum().backward()
    assert context.context.grad[[0, 2]].abs().sum() > 0 and context.context.grad[[1, 3, 4, 5]].abs().sum() == 0


def test_a_prompt_longer_than_the_text_tower_is_refused(tiny_backbone):
    with pytest.raises(ConfigValueError, match="context length"):
        PromptTuning(tiny_backbone, NAMES, LearnedContext(length=80), NameLabels())


@pytest.mark.parametrize("name, trainable", [
    ("coop", {"context.context"}),
    ("lamm", {"labels.embeddings.0", "labels.embeddings.1"}),
    ("cls_tuning", {"labels.embeddings.0", "labels.embeddings.1"}),
    ("full_prompt_tuning", {"context.context", "labels.embeddings.0", "labels.embeddings.1"}),
    ("coop_lamm", {"context.context", "labels.embeddings.0", "labels.embeddings.1"}),
])
def test_only_the_methods_parameters_train(tiny_backbone, name, trainable):
    method = method_from_config(name, tiny_backbone).train()
    method.adaptation = None
    for module in method.modules():
        if isinstance(module, LearnedLabels):
            module.adaptation(SimpleNamespace(classes_in_this_experience=[0, 1]))
    assert {n for n, p in method.named_parameters() if p.requires_grad} == trainable


def test_new_experience_freezes_the_labels_of_the_old_one(tiny_backbone):
    labels = method_from_config("lamm", tiny_backbone).train().labels
    labels.adaptation(SimpleNamespace(classes_in_this_experience=[0, 1]))
    labels.adaptation(SimpleNamespace(classes_in_this_experience=[2, 3]))
    assert {c: p.requires_grad for c, p in labels.embeddings.items()} == {"0": False, "1": False, "2": True, "3": True}
    labels.eval()
    labels.adaptation(SimpleNamespace(classes_in_this_experience=[4, 5]))  # evaluation never grows
    assert set(labels.embeddings) == {"0", "1", "2", "3"}


def test_gce_value_and_gradient_match_the_closed_form():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], requires_grad=True)
    targets = torch.tensor([0, 2])
    q = 0.7
    loss = GeneralizedCrossEntropy(q)(logits, targets)
    p = torch.softmax(logits.detach(), 1)[[0, 1], targets]
    assert loss.item() == pytest.approx(((1 - p ** q) / q).mean().item(), rel=1e-6)
    loss.backward()
    # d/dz (1 - p^q)/q = -p^(q-1) * dp/dz, dp_y/dz_k = p_y (1[k=y] - p_k); averaged over the batch
    probs = torch.softmax(logits.detach(), 1)
    onehot = torch.nn.functional.one_hot(targets, 3).float()
    expected = -(p ** q)[:, None] * (onehot - probs) / 2
    torch.testing.assert_close(logits.grad, expected, atol=1e-6, rtol=1e-5)


def test_gce_approaches_cross_entropy_as_q_goes_to_zero():
    logits, targets = torch.randn(8, 5, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 5
    ce = CrossEntropy()(logits, targets).item()
    assert GeneralizedCrossEntropy(1e-4)(logits, targets).item() == pytest.approx(ce, rel=1e-3)
    with pytest.raises(ConfigValueError, match="loss.q"):
        GeneralizedCrossEntropy(0)


def state_digest(model):
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


ALL_TRAINED = ["coop", "cocoop", "vpt_shallow", "vpt_deep", "maple", "lamm", "coop_lamm", "maple_lamm",
               "cls_tuning", "full_prompt_tuning", "linear_probe", "tenc_ft"]


@pytest.mark.parametrize("name", ALL_TRAINED)
def test_methods_train_in_a_stream_and_the_backbone_stays_bit_identical(tmp_path, name, monkeypatch):
    depth = ["method.depth=2"] if name.startswith("maple") else []  # the tiny towers have 2 blocks
    cfg = compose_config([f"method={name}", "scenario=tiny_colors", "model=tiny", "progress=false",
                          "train.epochs=2", "train.warmup_epochs=0", "train.optimizer.lr=0.05",
                          "train.batch_size=8", *depth])
    losses = []
    from clprompt.training.strategy import PromptStrategy

    original = PromptStrategy.criterion

    def record(self):
        loss = original(self)
        if self.is_training:
            losses.append(loss.item())
        return loss

    monkeypatch.setattr(PromptStrategy, "criterion", record)
    backbone = instantiate(cfg.model)
    before = state_digest(backbone.model)
    monkeypatch.setattr("clprompt.stages.build", _build_with(backbone))
    results = run(cfg, tmp_path)
    assert state_digest(backbone.model) == before
    assert results["status"] == "complete" and np.array(results["accuracy_matrix"]).shape == (3, 3)
    assert losses and all(np.isfinite(losses))


def _build_with(backbone):
    from clprompt import stages

    original = stages.instantiate

    def build(cfg, kind, **kwargs):
        return backbone if kind == "model" else original(cfg[kind], **kwargs)

    return build


def test_lamm_keeps_old_classes_text_features_fixed_across_experiences(tmp_path):
    cfg = compose_config(["method=lamm", "scenario=tiny_colors", "model=tiny", "progress=false",
                          "train.epochs=2", "train.warmup_epochs=0", "train.optimizer.lr=0.5"])
    from clprompt.training import strategy as strategy_module

    snapshots = []
    original = strategy_module.PromptStrategy._after_training_exp

    def snapshot(self, **kwargs):
        with torch.no_grad():
            snapshots.append(self.model.class_text_features([0, 1]).clone())
        return original(self, **kwargs)

    strategy_module.PromptStrategy._after_training_exp = snapshot
    try:
        run(cfg, tmp_path)
    finally:
        strategy_module.PromptStrategy._after_training_exp = original
    assert len(snapshots) == 3
    assert torch.equal(snapshots[0], snapshots[1]) and torch.equal(snapshots[1], snapshots[2])


@pytest.fixture(scope="module")
def palette_toy():
    """20 hue-shifted classes of the sandbox (purple and orange shapes: the shift confuses them with
    their neighbours), 2 images each, and the mini-CLIP."""
    from clprompt.miniclip_pretraining import to_model_input
    from scenarios.sandbox.tasks import TASKS, render_split

    backbone = instantiate(compose_config(["model=miniclip"]).model)
    task = TASKS["shapes_palette"]()
    images_, labels = render_split(task, per_class=2, seed=4)
    keep = (labels >= 40) & (labels < 60)
    return backbone, task.class_names[40:60], to_model_input(images_[keep]), torch.as_tensor(labels[keep] - 40)


@pytest.mark.parametrize("name", ALL_TRAINED)
def test_loss_falls_on_a_learnable_task(name, palette_toy):
    """The mini-CLIP on hue-shifted sandbox images: each method's parameters learn to read them."""
    backbone, names, x, y = palette_toy
    torch.manual_seed(0)
    depth = ["method.depth=3"] if name.startswith("maple") else []
    method = instantiate(compose_config([f"method={name}", "model=miniclip", *depth]).method, backbone=backbone,
                         class_names=names).train()
    for module in method.modules():
        if isinstance(module, DynamicModule):
            module.adaptation(SimpleNamespace(classes_in_this_experience=list(range(len(names)))))
    method.set_candidate_classes(range(len(names)))
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(20):
        logits = method(x)
        loss = CrossEntropy()(logits, y) + method.regularization(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_nan_loss_stops_the_run_and_keeps_finished_experiences(tmp_path, monkeypatch):
    cfg = compose_config(["method=coop", "scenario=tiny_colors", "model=tiny", "progress=false",
                          "train.epochs=1", "train.warmup_epochs=0"])
    calls = {"n": 0}
    clean = CrossEntropy.forward

    def poisoned(self, logits, targets):
        calls["n"] += 1
        return clean(self, logits, targets) * (float("nan") if calls["n"] > 1 else 1.0)

    monkeypatch.setattr(CrossEntropy, "forward", poisoned)
    from clprompt.errors import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        run(cfg, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"].startswith("failed: NonFiniteLossError")


def test_min_len_learns_only_the_shortest_names_token_count(tiny_backbone):
    labels = LearnedLabels(learn="min_len")
    method = PromptTuning(tiny_backbone, NAMES, TemplateContext(), labels)
    labels.add_classes([0, 2])
    assert labels.embeddings["0"].shape[0] == 1       # "red"
    assert labels.embeddings["2"].shape[0] == 1       # "golden retriever": only "golden" learns
    assert len(method.name_tokens[2]) == 2


def test_train_augmentations(tiny_backbone):
    from PIL import Image

    from clprompt.data.augmentation import base_transform, train_transform

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    coop = train_transform("coop", tiny_backbone, n_views=2)
    first, other_sample = coop(image, 0), coop(image, 1)
    coop.set_epoch(1)
    second = coop(image, 0)
    assert first.shape == (3, 32, 32)  # random crops and flips: per sample and per view
    assert not torch.equal(first, second) and not torch.equal(first, other_sample)
    assert torch.equal(train_transform("none", tiny_backbone)(image, 0), tiny_backbone.eval_transform(image))
    assert base_transform("model", tiny_backbone) is tiny_backbone.train_transform
    assert train_transform("model", tiny_backbone).transform is tiny_backbone.train_transform
    with pytest.raises(ConfigValueError, match="train.augmentation"):
        train_transform("mixup", tiny_backbone)


def test_parameters_made_non_finite_by_the_last_step_stop_the_run_before_scoring(tmp_path):
    # tiny_colors: 8 training images, one step per epoch; its loss is finite, its update overflows
    cfg = compose_config(["method=coop", "scenario=tiny_colors", "model=tiny", "progress=false", "train.epochs=1",
                          "train.warmup_epochs=0", "train.optimizer.lr=3e38", "train.optimizer.momentum=0"])
    from clprompt.errors import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="training parameters left the finite range in experience 1"):
        run(cfg, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["completed_experiences"] == 0 and results["accuracy_matrix"][0] == [None, None, None]
