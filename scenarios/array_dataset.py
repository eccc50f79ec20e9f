"""An in-memory image classification dataset over a uint8 array, the form every built-in dataset takes."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from PIL import Image
from scenarios.labelled_images import DecodedImages, LabelledImages


class ArrayImageDataset(LabelledImages):
    """Images held as one uint8 array, labels as a list of ints.

    images: [N, H, W] (grayscale) or [N, H, W, 3] (RGB), dtype uint8.
    Each item is ``(transform(PIL RGB image), label)``; without a transform, the PIL image itself.
    Grayscale images are converted to RGB, since CLIP's image towers take three channels.
    """

    def __init__(self, images: np.ndarray, targets, transform: Optional[Callable] = None):
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"images must be uint8 [N,H,W] or [N,H,W,3], got {images.dtype} {images.shape}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")

    def decoded(self) -> DecodedImages:
        return DecodedImages(self.images, np.arange(len(self.images)))

    def _content_digest(self, digest) -> None:
        digest.update(repr((self.images.shape, str(self.images.dtype))).encode())
        digest.update(np.ascontiguousarray(self.images).data)
