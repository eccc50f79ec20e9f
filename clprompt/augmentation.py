"""Training-time image transforms, chosen by ``train.augmentation``.

- ``model``: the backbone's own open_clip train transform (random resized crop, scale 0.9-1, bicubic).
- ``coop``: CoOp's recipe (used by CoOp, CoCoOp, LAMM, MaPLe): random resized crop, scale 0.08-1,
  bicubic, horizontal flip, CLIP's mean / std.
- ``none``: the evaluation transform (no augmentation).
"""

from __future__ import annotations

from typing import Callable

from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torchvision import transforms

from clprompt.backbone import Backbone
from clprompt.errors import ConfigValueError

AUGMENTATIONS = ("model", "coop", "none")


def train_transform(kind: str, backbone: Backbone) -> Callable:
    if kind == "model":
        return backbone.train_transform
    if kind == "none":
        return backbone.eval_transform
    if kind == "coop":
        size = backbone.model.visual.image_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        preprocess = getattr(backbone.model.visual, "preprocess_cfg", None) or {}
        return transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.ToTensor(),
            transforms.Normalize(preprocess.get("mean", OPENAI_DATASET_MEAN), preprocess.get("std", OPENAI_DATASET_STD)),
        ])
    raise ConfigValueError(f"train.augmentation={kind!r}; choose one of {', '.join(AUGMENTATIONS)}")
