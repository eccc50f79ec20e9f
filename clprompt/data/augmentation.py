"""Training-time image transforms, chosen by ``train.augmentation``, and their views.

- ``model``: the backbone's own open_clip train transform (random resized crop, scale 0.9-1, bicubic).
- ``coop``: CoOp's recipe (used by CoOp, CoCoOp, LAMM, MaPLe): random resized crop, scale 0.08-1,
  bicubic, horizontal flip, CLIP's mean / std.
- ``none``: the evaluation transform (no augmentation).

A random transform is wrapped in ``SampleViews``: the view of sample i in epoch e is drawn from a
generator seeded by (augmentation seed, i, e mod V) alone, so it is the same whatever the data order,
the worker count or the process, and the same with and without the feature cache (which stores views
by that key). V (``train.augmentation_views``) defaults to the epoch count: a new view every epoch,
the papers' recipe. V smaller than the epochs reuses views (Tip-Adapter / CLAP's approximation).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import MaybeConvertMode
from torchvision import transforms

from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError

AUGMENTATIONS = ("model", "coop", "none")


def base_transform(kind: str, backbone: Backbone) -> Callable:
    """The torchvision transform of ``train.augmentation=kind`` (random for model and coop)."""
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
            MaybeConvertMode("RGB"),
            transforms.ToTensor(),
            transforms.Normalize(preprocess.get("mean", OPENAI_DATASET_MEAN), preprocess.get("std", OPENAI_DATASET_STD)),
        ])
    raise ConfigValueError(f"train.augmentation={kind!r}; choose one of {', '.join(AUGMENTATIONS)}")


def view_seed(seed: int, sample: int, view: int) -> int:
    """The generator seed of one view of one sample: a hash of the three (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(sample), int(view)]).generate_state(1, np.uint64)[0] >> 1)


class SampleViews:
    """A transform whose randomness is a pure function of (seed, sample index, view).

    Called as ``views(image, index)`` by the datasets (``per_sample``). ``set_epoch(e)`` selects view
    ``e mod n_views``; the current view lives in a shared-memory tensor, so data-loader workers
    (persistent ones included) see it change. torchvision's random transforms draw from torch's global
    generator: it is reseeded per image inside ``torch.random.fork_rng``, which leaves the run's own
    generator untouched.
    """

    per_sample = True

    def __init__(self, transform: Callable, kind: str, seed: int, n_views: int, random: bool = True):
        if n_views < 1:
            raise ConfigValueError(f"train.augmentation_views={n_views}: give 1 or more views (null: one per epoch)")
        self.transform, self.kind, self.seed, self.n_views, self.random = transform, kind, int(seed), int(n_views), random
        self._view = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def view(self) -> int:
        """The view now served: 0 for a deterministic transform."""
        return int(self._view) if self.random else 0

    def set_epoch(self, epoch: int) -> None:
        self._view.fill_(epoch % self.n_views)

    def __call__(self, image, index: int):
        if not self.random:
            return self.transform(image)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues a seed for every lazy accelerator
            # backend, formatting a stack trace each time (some 1 ms an image); the draws are the same
            torch.default_generator.manual_seed(view_seed(self.seed, index, self.view))
            return self.transform(image)

    def identity(self) -> dict:
        """What defines the views besides the sample and the view number (the feature cache's key)."""
        return {"kind": self.kind, "transform": repr(self.transform), "random": self.random,
                "seed": self.seed if self.random else None}

    def __repr__(self) -> str:
        return f"SampleViews({self.kind}, seed={self.seed}, views={self.n_views}, random={self.random})"


def train_transform(kind: str, backbone: Backbone, seed: int = 0, n_views: Optional[int] = 1) -> SampleViews:
    """``train.augmentation=kind`` as views: random for model and coop, one fixed view for none."""
    return SampleViews(base_transform(kind, backbone), kind, seed, n_views or 1, random=kind != "none")
