"""Images decoded once and transformed in batches on the device (``data.batch_transforms``): bit-identical to
the per-image PIL path, for every view, and a run with them equals a run without them."""

import numpy as np
import pytest
import torch
from open_clip.transform import image_transform
from PIL import Image
from torchvision import transforms

from clprompt.data import image_batches
from clprompt.data.augmentation import SampleViews, base_transform
from clprompt.errors import ConfigValueError
from clprompt.data.image_batches import BatchTransform, UnsupportedTransform, build_image_batches, resample
from helpers import traced_run
from scenarios.array_dataset import ArrayImageDataset
from scenarios.protocols.relabeled import RelabeledSubset
from scenarios.sequences import SequenceDataset

pytestmark = pytest.mark.filterwarnings("ignore")
CPU = torch.device("cpu")


class FakeBackbone:
    """The transforms open_clip builds for a model of ``size`` px (as Backbone holds them)."""

    def __init__(self, size: int):
        self.train_transform = image_transform(size, is_train=True)
        self.eval_transform = image_transform(size, is_train=False)
        self.model = type("M", (), {"visual": type("V", (), {"image_size": size, "preprocess_cfg": {}})()})()


def per_image(dataset, count):
    return torch.stack([dataset[i][0] for i in range(count)])


@pytest.mark.parametrize("kind", ["model", "coop", "none"])
@pytest.mark.parametrize("model_size, image_shape", [
    (32, (32, 32, 3)),    # the sandbox on the mini-CLIP
    (224, (32, 32, 3)),   # CIFAR-100 on ViT-B/16: upscaled
    (224, (28, 28)),      # (Fashion-)MNIST: gray
    (32, (64, 48, 3)),    # larger, non-square images: shrunk (Pillow 13's vertical-first order)
])
def test_batched_views_equal_the_per_image_pil_views_bit_for_bit(kind, model_size, image_shape):
    count = 6 if model_size == 224 else 24
    pixels = np.random.default_rng(model_size + len(image_shape)).integers(0, 256, (count, *image_shape), np.uint8)
    transform = base_transform(kind, FakeBackbone(model_size))
    views = SampleViews(transform, kind, seed=5, n_views=4, random=kind != "none")
    dataset = ArrayImageDataset(pixels, [0] * count, views)
    batched = BatchTransform(views)
    decoded = dataset.decoded()
    for view in (0, 1, 3):
        views.set_epoch(view)
        expected = per_image(dataset, count)
        got = batched(torch.from_numpy(decoded.rgb()), decoded.view_index, view)
        assert got.dtype == expected.dtype and torch.equal(got, expected), f"view {view}"


@pytest.mark.parametrize("interpolation, pil", [(transforms.InterpolationMode.BICUBIC, Image.BICUBIC),
                                                (transforms.InterpolationMode.BILINEAR, Image.BILINEAR)])
def test_resampling_equals_pillow_crop_then_resize(interpolation, pil):
    """Random boxes and sizes, growing and shrinking along either axis (both of Pillow's pass orders)."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        height, width = rng.integers(4, 80, size=2)
        out_h, out_w = (int(v) for v in rng.integers(1, 90, size=2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        boxes = []
        for _ in range(3):
            h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
            boxes.append((int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w))
        batch = torch.from_numpy(image).permute(2, 0, 1)[None].double().repeat(3, 1, 1, 1)
        got = resample(batch, np.array(boxes), (out_h, out_w), interpolation).permute(0, 2, 3, 1).numpy()
        for b, (top, left, h, w) in enumerate(boxes):
            expected = np.asarray(Image.fromarray(image).crop((left, top, left + w, top + h)).resize((out_w, out_h), pil))
            assert np.array_equal(got[b].astype(np.uint8), expected.reshape(out_h, out_w, 3))


def test_relabelled_and_sequence_datasets_give_their_items_images(tiny_backbone):
    """The ids an experience carries (sample_id) pick the same images, in the same views, as its items."""
    rng = np.random.default_rng(3)
    views = SampleViews(base_transform("coop", tiny_backbone), "coop", seed=1, n_views=3)
    first = ArrayImageDataset(rng.integers(0, 256, (5, 32, 32, 3), np.uint8), [0, 1, 0, 1, 0], views)
    second = ArrayImageDataset(rng.integers(0, 256, (4, 32, 32), np.uint8), [0, 1, 1, 0], views)
    sequence = SequenceDataset([first, second], [0, 2])
    relabelled = RelabeledSubset(first, [4, 1, 3], [1, 1, 0])
    views.set_epoch(2)
    for dataset in (sequence, relabelled):
        batches = image_batches.ImageBatches({"train": dataset}, CPU)
        got = batches.images("train", torch.tensor(dataset.sample_ids()))
        assert torch.equal(got, per_image(dataset, len(dataset)))


def test_where_batches_cannot_be_made_auto_keeps_the_per_image_path_and_on_is_refused(tmp_path, tiny_backbone):
    from scenarios.image_folder_dataset import ImageFileDataset

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    files = ImageFileDataset([path], [0], tiny_backbone.eval_transform)
    with pytest.raises(ConfigValueError, match="train split .ImageFileDataset. is not an in-memory image array.*auto or off"):
        build_image_batches("on", {"train": files}, CPU)
    batches, record = build_image_batches("auto", {"train": files}, torch.device("cuda"))
    assert batches is None and not record["enabled"] and "not an in-memory image array" in record["reason"]

    # auto on CPU: batched at the sandbox's 32 px (faster than PIL there), per image at 224 px (slower)
    small = ArrayImageDataset(np.zeros((2, 32, 32, 3), np.uint8), [0, 1], FakeBackbone(32).eval_transform)
    assert build_image_batches("auto", {"test": small}, CPU)[1]["enabled"]
    large = ArrayImageDataset(np.zeros((2, 32, 32, 3), np.uint8), [0, 1], FakeBackbone(224).eval_transform)
    batches, record = build_image_batches("auto", {"test": large}, CPU)
    assert batches is None and "per-image PIL transforms on cpu at 224 px" in record["reason"]
    assert build_image_batches("on", {"test": large}, CPU)[1]["enabled"]

    pixels = np.zeros((2, 8, 8, 3), np.uint8)
    jitter = transforms.Compose([transforms.ColorJitter(0.5), transforms.ToTensor()])
    with pytest.raises(ConfigValueError, match="no batched equivalent: ColorJitter"):
        build_image_batches("on", {"train": ArrayImageDataset(pixels, [0, 1], jitter)}, CPU)
    loose = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    with pytest.raises(UnsupportedTransform, match="global generator"):
        BatchTransform(loose)   # random steps outside SampleViews: their draws cannot be repeated
    with pytest.raises(ConfigValueError, match="auto, on or off"):
        build_image_batches("sometimes", {}, CPU)


def test_a_pillow_that_resamples_otherwise_is_caught_before_any_work(monkeypatch):
    """The first images of each split are compared with the per-image path's when the batches are built:
    with the pass order of Pillow < 13 on this Pillow, shrunk views differ and are refused."""
    if image_batches.PILLOW_MAJOR < 13:
        pytest.skip("the installed Pillow resamples horizontally first: nothing to simulate")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 64, 20, 3), np.uint8)   # tall: shrinks vertically
    dataset = ArrayImageDataset(pixels, [0] * 8, FakeBackbone(16).eval_transform)
    assert build_image_batches("on", {"test": dataset}, CPU)[1]["enabled"]
    monkeypatch.setattr(image_batches, "PILLOW_MAJOR", 12)
    with pytest.raises(ConfigValueError, match="test images in view 0 differ from the per-image transform"):
        build_image_batches("on", {"test": dataset}, CPU)


@pytest.mark.parametrize("method", ["vpt_deep", "coop"])
def test_a_run_with_batched_transforms_equals_the_per_image_run(tmp_path, monkeypatch, method):
    """vpt_deep: the training and evaluation loaders yield ids made into images; coop: the feature cache
    encodes its views from the batches. Same per-step losses and matrix, exactly."""
    common = [f"method={method}", "train.augmentation=coop", "train.epochs=2", "train.warmup_epochs=0",
              "train.batch_size=4", "device=cpu", "cache.dir=null"]
    off_losses, off = traced_run(tmp_path, monkeypatch, "off", common + ["data.batch_transforms=off"])
    on_losses, on = traced_run(tmp_path, monkeypatch, "on", common + ["data.batch_transforms=on"])
    assert len(on_losses) == len(off_losses) > 0
    assert np.array_equal(on_losses, off_losses)
    assert on["accuracy_matrix"] == off["accuracy_matrix"]
    assert on["data_loading"]["batch_transforms"]["enabled"]
    assert not off["data_loading"]["batch_transforms"]["enabled"]
