"""Small datasets decoded once, their transforms applied on the device in batches, bit-identical to PIL.

The built-in small datasets (CIFAR-100, Fashion-MNIST, MNIST, the sandbox) hold their images as one
uint8 array. The per-image path turns every image into a PIL image, resizes it with PIL (CIFAR's 32 px
to ViT-B/16's 224: the loader's bottleneck, some 460 images/s per core) and converts it to a tensor, at
every epoch. ``ImageBatches`` puts the array on the device once per run and computes a batch of views
there from the sample ids: the same views, bit for bit.

Exactness. A view is the torchvision ``Compose`` the run built (open_clip's train or eval transform,
CoOp's recipe), read step by step:

- random parameters (``RandomResizedCrop``'s box, ``RandomHorizontalFlip``'s coin) are drawn by
  torchvision's own code from the generator seeded by (augmentation seed, sample, view), as
  ``clprompt.data.augmentation.SampleViews`` does per image;
- resampling (``RandomResizedCrop``, ``Resize``) is Pillow's: separable convolution, the horizontal pass
  first, each pass's coefficients computed as Pillow's ``precompute_coeffs`` computes them (support
  scaled when shrinking, weights normalised) and rounded to its 22-bit fixed point, each pass's result
  rounded and clipped to uint8 as Pillow's ``clip8`` does; the vertical pass first where Pillow 13
  chooses so (the height shrinking by more than twice the pixels the width does). The sums are integers
  below 2**53, so float64 matrix products give them exactly on any device;
- ``ToTensor`` and ``Normalize`` are the same float32 operations on the batch.

``tests/test_image_batches.py`` checks equality with the PIL path (``torch.equal``) for open_clip's and
CoOp's transforms, upscaling (CIFAR-sized to 224) and shrinking, gray and RGB images. A transform with a
step not listed in ``BatchTransform`` keeps the per-image path (``data.batch_transforms=auto``) or is
refused (``on``), naming the step.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np
import PIL
import torch
from avalanche.benchmarks.utils.classification_dataset import (
    _as_taskaware_supervised_classification_dataset as as_supervised_dataset,
)
from open_clip.transform import MaybeConvertMode
from torchvision import transforms
from torchvision.transforms.functional import _compute_resized_output_size

from clprompt.data.augmentation import SampleViews, view_seed
from clprompt.errors import ConfigValueError
from clprompt.data.feature_cache import FeatureTable
from scenarios.stream import sample_ids

MODES = ("auto", "on", "off")
PILLOW_MAJOR = int(PIL.__version__.split(".")[0])
PRECISION_BITS = 22     # Pillow's fixed point for 8-bit images: 32 - 8 - 2


def _bicubic(x: float) -> float:   # Pillow's bicubic_filter, a = -0.5
    a = -0.5
    x = -x if x < 0.0 else x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _bilinear(x: float) -> float:  # Pillow's bilinear_filter
    x = -x if x < 0.0 else x
    return 1.0 - x if x < 1.0 else 0.0


# InterpolationMode -> (Pillow's filter, its support)
FILTERS = {transforms.InterpolationMode.BICUBIC: (_bicubic, 2.0),
           transforms.InterpolationMode.BILINEAR: (_bilinear, 1.0)}


@lru_cache(maxsize=4096)
def pillow_coefficients(in_size: int, out_size: int, interpolation: transforms.InterpolationMode) -> np.ndarray:
    """[out_size, in_size] float64: Pillow's fixed-point resampling weights along one axis (integers).

    Follows Pillow's ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` operation for operation (C doubles
    are Python floats; the sums run in the same order), for the box (0, in_size) of a cropped image.
    """
    function, filter_support = FILTERS[interpolation]
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = filter_support * filterscale
    block = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [function((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = 0.0
        for weight in weights:
            total += weight
        if total != 0.0:
            weights = [weight / total for weight in weights]
        for x, weight in enumerate(weights):
            fixed = weight * (1 << PRECISION_BITS)
            block[xx, xmin + x] = int(fixed - 0.5) if weight < 0 else int(fixed + 0.5)
    return block


def _clip8(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8, in place: (sum + half) >> 22, clipped to 0..255 (exact on float64 integers: the scale
    is a power of two)."""
    return sums.add_(1 << (PRECISION_BITS - 1)).mul_(1.0 / (1 << PRECISION_BITS)).floor_().clamp_(0, 255)


def vertical_pass_first(in_h: np.ndarray, in_w: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Per image, whether Pillow runs the vertical pass first: from Pillow 13, when the height shrinks by more
    than twice as many pixels as the width (``ImagingResampleInner``); always horizontal first before."""
    if PILLOW_MAJOR < 13:
        return np.zeros(len(in_h), dtype=bool)
    return ((in_h - out_h) > 0) & ((in_h - out_h) > (in_w - out_w) * 2)


def resample(pixels: torch.Tensor, boxes: np.ndarray, out_size: tuple[int, int],
             interpolation: transforms.InterpolationMode) -> torch.Tensor:
    """PIL's ``image.crop(box).resize(out_size)`` for a batch: pixels float64 [B, C, H, W] holding uint8
    values, boxes int [B, 4] (top, left, height, width) inside the images, out_size (height, width).
    Returns float64 [B, C, out_h, out_w] holding uint8 values."""
    batch, channels, height, width = pixels.shape
    out_h, out_w = out_size
    boxes = np.asarray(boxes, dtype=np.int64).reshape(batch, 4)
    horizontal = np.zeros((batch, width, out_w))
    vertical = np.zeros((batch, out_h, height))
    for b, (top, left, box_h, box_w) in enumerate(boxes):
        horizontal[b, left:left + box_w] = pillow_coefficients(int(box_w), out_w, interpolation).T
        vertical[b, :, top:top + box_h] = pillow_coefficients(int(box_h), out_h, interpolation)
    horizontal = torch.from_numpy(horizontal).to(pixels.device, non_blocking=True)[:, None]
    vertical = torch.from_numpy(vertical).to(pixels.device, non_blocking=True)[:, None]
    first = vertical_pass_first(boxes[:, 2], boxes[:, 3], out_h, out_w)
    if not first.any():
        return _clip8(vertical @ _clip8(pixels @ horizontal))
    if first.all():
        return _clip8(_clip8(vertical @ pixels) @ horizontal)
    out = pixels.new_empty((batch, channels, out_h, out_w))
    for mask, vertical_first in ((~first, False), (first, True)):
        rows = torch.from_numpy(np.flatnonzero(mask)).to(pixels.device, non_blocking=True)
        images, h_pass, v_pass = pixels[rows], horizontal[rows], vertical[rows]
        out[rows] = (_clip8(_clip8(v_pass @ images) @ h_pass) if vertical_first
                     else _clip8(v_pass @ _clip8(images @ h_pass)))
    return out


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = list(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


class UnsupportedTransform(ValueError):
    """A transform step with no batched equivalent (the per-image path stays)."""


class BatchTransform:
    """A torchvision ``Compose`` (or ``SampleViews`` of one) applied to a batch of uint8 images.

    Steps understood: ``RandomResizedCrop``, ``Resize``, ``CenterCrop`` (not larger than the image),
    ``RandomHorizontalFlip`` (bicubic or bilinear resampling), RGB conversion (``MaybeConvertMode``),
    ``ToTensor`` and ``Normalize``, in that kind of order (geometry on uint8, then the float steps).
    Random steps need ``SampleViews`` (their draws are then a function of the sample and the view).
    """

    GEOMETRY = (transforms.RandomResizedCrop, transforms.Resize, transforms.CenterCrop,
                transforms.RandomHorizontalFlip)

    def __init__(self, transform):
        self.views = transform if isinstance(transform, SampleViews) else None
        compose = transform.transform if self.views is not None else transform
        steps = list(compose.transforms) if isinstance(compose, transforms.Compose) else [compose]
        self.geometry, self.to_tensor, self.normalize = [], False, None
        for step in steps:
            if isinstance(step, self.GEOMETRY) and not self.to_tensor:
                interpolation = getattr(step, "interpolation", None)
                if interpolation is not None and interpolation not in FILTERS:
                    raise UnsupportedTransform(f"{step!r}: {interpolation.value} resampling")
                if isinstance(step, transforms.Resize) and step.max_size is not None:
                    raise UnsupportedTransform(f"{step!r}: max_size")
                self.geometry.append(step)
            elif isinstance(step, MaybeConvertMode) and step.mode == "RGB":
                continue   # the batch is RGB already
            elif isinstance(step, transforms.ToTensor) and not self.to_tensor:
                self.to_tensor = True
            elif isinstance(step, transforms.Normalize) and self.to_tensor and self.normalize is None:
                self.normalize = step
            else:
                raise UnsupportedTransform(repr(step))
        if not self.to_tensor:
            raise UnsupportedTransform(f"{compose!r} does not end in a tensor (no ToTensor)")
        random = any(isinstance(s, (transforms.RandomResizedCrop, transforms.RandomHorizontalFlip))
                     for s in self.geometry)
        if random and (self.views is None or not self.views.random):
            raise UnsupportedTransform(f"{compose!r} draws from the global generator (random steps outside SampleViews)")
        self.random = random

    def _draws(self, view_indices: np.ndarray, view: int, height: int, width: int) -> list[list]:
        """Per sample, the random steps' parameters, drawn as SampleViews draws them per image."""
        draws = [[] for _ in view_indices]
        if not self.random:
            return draws
        with torch.random.fork_rng(devices=[]):
            for b, index in enumerate(view_indices):
                torch.default_generator.manual_seed(view_seed(self.views.seed, int(index), view))
                h, w = height, width
                for step in self.geometry:
                    if isinstance(step, transforms.RandomResizedCrop):
                        draws[b].append(step.get_params(torch.empty((0, h, w)), step.scale, step.ratio))
                        h, w = step.size
                    elif isinstance(step, transforms.RandomHorizontalFlip):
                        draws[b].append(bool(torch.rand(1) < step.p))
                    elif isinstance(step, transforms.Resize):
                        h, w = _compute_resized_output_size((h, w), _size_list(step.size), None)
                    elif isinstance(step, transforms.CenterCrop):
                        h, w = step.size
        return draws

    def __call__(self, pixels: torch.Tensor, view_indices: np.ndarray, view: int = 0) -> torch.Tensor:
        """pixels uint8 [B, H, W, 3] on the device, view_indices int [B] (the index each image's view is
        seeded with), view: the view number -> float32 [B, 3, S, S], as the per-image transform gives."""
        batch, height, width = pixels.shape[:3]
        draws = self._draws(view_indices, view, height, width)
        images = pixels.permute(0, 3, 1, 2).to(torch.float64)   # a copy: the steps below may work in place
        drawn = 0
        for step in self.geometry:
            height, width = images.shape[-2:]
            if isinstance(step, transforms.RandomResizedCrop):
                boxes = np.array([d[drawn] for d in draws], dtype=np.int64)
                drawn += 1
                images = resample(images, boxes, _pair(step.size), step.interpolation)
            elif isinstance(step, transforms.Resize):
                out = _compute_resized_output_size((height, width), _size_list(step.size), None)
                if list(out) != [height, width]:   # torchvision returns the image itself at its own size
                    boxes = np.tile(np.array([0, 0, height, width]), (batch, 1))
                    images = resample(images, boxes, tuple(out), step.interpolation)
            elif isinstance(step, transforms.CenterCrop):
                crop_h, crop_w = _pair(step.size)
                if crop_h > height or crop_w > width:
                    raise UnsupportedTransform(f"{step!r} on {height}x{width} images (it would pad)")
                top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
                images = images[..., top:top + crop_h, left:left + crop_w]
            elif isinstance(step, transforms.RandomHorizontalFlip):
                flips = torch.from_numpy(np.flatnonzero([d[drawn] for d in draws])).to(images.device, non_blocking=True)
                drawn += 1
                images[flips] = images[flips].flip(-1)
        # integers 0..255 in float64 -> float32 exactly, then ToTensor's division
        images = images.to(torch.get_default_dtype()).div(255)
        if self.normalize is not None:
            images = self.normalize(images)
        return images.contiguous()


def _size_list(size) -> list[int]:
    return [size] if isinstance(size, int) else list(size)


class ImageBatches:
    """The strategy's door: (split, sample ids) in, the split's transformed images on the device out.

    splits: split name -> dataset offering ``decoded()`` (``scenarios.labelled_images.DecodedImages``) and
    ``transform``. Each split's pixels go to the device once.
    """

    def __init__(self, splits: dict, device: torch.device):
        self.device = device
        self.pixels, self.view_indices, self.transforms = {}, {}, {}
        for name, dataset in splits.items():
            decoded = dataset.decoded()
            pixels = torch.from_numpy(np.ascontiguousarray(decoded.rgb()))
            self.pixels[name] = pixels.to(device)
            self.view_indices[name] = np.asarray(decoded.view_index, dtype=np.int64)
            self.transforms[name] = BatchTransform(dataset.transform)

    def images(self, split: str, ids: torch.Tensor, view: Optional[int] = None) -> torch.Tensor:
        """float32 [B, 3, S, S] on the device: samples ``ids`` (CPU int64 [B]) of ``split`` in ``view``
        (None: the view its SampleViews serves now)."""
        transform = self.transforms[split]
        if view is None:
            view = transform.views.view if transform.views is not None else 0
        ids = torch.as_tensor(ids, dtype=torch.int64).cpu()
        pixels = self.pixels[split][ids.to(self.device, non_blocking=True)]
        return transform(pixels, self.view_indices[split][ids.numpy()], view)

    def differs_from_per_image(self, splits: dict, count: int = 8) -> Optional[str]:
        """None when each split's first ``count`` samples (in epochs 0 and 1) equal the per-image transform's, else
        what differs (a guard against a Pillow whose resampling changed; tests/test_image_batches.py checks
        many more)."""
        for name, dataset in splits.items():
            views = self.transforms[name].views
            positions = range(min(count, len(dataset)))
            ids = torch.tensor(sample_ids(dataset)[:len(positions)], dtype=torch.int64)
            for epoch in ((0, 1) if views is not None and views.random else (0,)):
                if views is not None:
                    views.set_epoch(epoch)
                expected = torch.stack([dataset[p][0] for p in positions])
                got = self.images(name, ids).cpu()    # the view the per-image transform serves now
                if not torch.equal(expected, got):
                    view = views.view if views is not None else 0
                    return (f"its {name} images in view {view} differ from the per-image transform's (Pillow "
                            f"{PIL.__version__}; largest difference {float((expected - got).abs().max()):.3g})")
            if views is not None:
                views.set_epoch(0)
        return None

    def output_side(self, split: str) -> int:
        """The longer side of the split's transformed images (from its first sample)."""
        return max(self.images(split, torch.zeros(1, dtype=torch.int64)).shape[-2:])

    def dataset(self, experience):
        """The experience's (sample id, label) items as an Avalanche dataset, in its order."""
        data = experience.dataset
        ids = torch.as_tensor(np.asarray(data.sample_id, dtype=np.int64))
        return as_supervised_dataset(FeatureTable(ids, data.targets))   # a table of per-sample rows: the ids


CPU_MAX_SIDE = 64   # auto on CPU: batched up to this output size (measured faster there; slower at 224 px)


def build_image_batches(mode: str, splits: dict, device: torch.device) -> tuple[Optional[ImageBatches], dict]:
    """``data.batch_transforms=mode`` for a stream's splits: (ImageBatches or None, its record for results.json).

    auto: on when every split holds decoded images, every transform has a batched equivalent and the first
    images come out equal to the per-image path's; on CUDA always, on CPU for outputs of at most 64 px
    (``bench/transform_speed.py``, docs/performance.md: on the CPU at 32 px the batches run 1.4-2.2 times as
    fast as PIL, at 224 px 0.44-0.68 times, their float64 passes over the large output costing more than PIL's
    integer ones).
    on: the same checks on any device and size, refused with the reason; off: the per-image path.
    """
    if mode not in MODES:
        raise ConfigValueError(f"data.batch_transforms={mode!r}; choose auto, on or off")
    record = {"mode": mode, "enabled": False}
    if mode == "off":
        return None, {**record, "reason": "off: per-image PIL transforms in the loader"}
    reason, batches = None, None
    for name, dataset in splits.items():
        if getattr(dataset, "decoded", lambda: None)() is None:
            reason = f"the {name} split ({type(dataset).__name__}) is not an in-memory image array"
            break
        try:
            BatchTransform(dataset.transform)
        except UnsupportedTransform as error:
            reason = f"the {name} split's transform has no batched equivalent: {error}"
            break
    if reason is None:
        batches = ImageBatches(splits, device)
        reason = batches.differs_from_per_image(splits)
    if reason is not None:
        if mode == "on":
            raise ConfigValueError(f"data.batch_transforms=on, but {reason}: use data.batch_transforms=auto or off")
        return None, {**record, "reason": f"per-image: {reason}"}
    side = max(batches.output_side(name) for name in splits)
    if mode == "auto" and device.type != "cuda" and side > CPU_MAX_SIDE:
        return None, {**record, "reason": f"auto: per-image PIL transforms on {device.type} at {side} px (batched on "
                                          f"CUDA, and on CPU up to {CPU_MAX_SIDE} px)"}
    return batches, {**record, "enabled": True,
                     "reason": f"{mode}: images decoded once on {device.type}, transformed in batches ({side} px)"}
