"""What every built-in image dataset shares: labels, an optional transform, RGB PIL images.

Two things let the model side treat any of them alike without knowing which it is:

- ``decoded()`` hands over the images as one uint8 array when the dataset holds them so (the small
  datasets), for transforms computed in batches on the device (clprompt.data.image_batches);
- a *per-sample* transform (one with ``per_sample = True``) is called as ``transform(image, index)``,
  so that random augmentation can be a pure function of the sample (clprompt.data.augmentation);
- ``fingerprint()`` names the images' content (not the labels), so that features computed from one
  dataset are never read for another (clprompt.data.feature_cache); ``sample_ids()`` gives each item's index
  in the dataset whose images it shows.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


def apply_transform(transform: Optional[Callable], image, index: int):
    """``transform(image)``, or ``transform(image, index)`` for a per-sample transform."""
    if transform is None:
        return image
    if getattr(transform, "per_sample", False):
        return transform(image, index)
    return transform(image)


@dataclass
class DecodedImages:
    """A dataset's images as one uint8 array indexed by sample id (``sample_ids``), and per sample the index
    its per-sample transform is called with (the index its random view is seeded by).

    pixels: [N, H, W] (grayscale) or [N, H, W, 3] (RGB); view_index: int [N].
    """

    pixels: np.ndarray
    view_index: np.ndarray

    def rgb(self) -> np.ndarray:
        """[N, H, W, 3]: grayscale repeated over three channels, as PIL's convert("RGB") does."""
        return self.pixels if self.pixels.ndim == 4 else np.repeat(self.pixels[..., None], 3, axis=-1)


class LabelledImages(Dataset):
    """Base of the image datasets: ``.targets`` (ints), ``.transform``, and ``image(index)`` to implement.

    Each item is ``(transform(PIL RGB image), label)``; without a transform, the PIL image itself.
    Subclasses also implement ``_content_digest`` (a hash of what defines the images).
    """

    targets: list[int]
    transform: Optional[Callable]

    def image(self, index: int) -> Image.Image:
        """Sample ``index`` as an RGB PIL image."""
        raise NotImplementedError

    def decoded(self) -> Optional[DecodedImages]:
        """The images as one array (None: they are read one by one, e.g. from files)."""
        return None

    def _content_digest(self, digest) -> None:
        """Feed what defines the images (pixels, or file paths and sizes) to a hashlib digest."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return apply_transform(self.transform, self.image(index), index), self.targets[index]

    def with_transform(self, transform: Optional[Callable]):
        """The same images and labels with another transform (the data is shared, not copied)."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def fingerprint(self) -> str:
        """sha256 of the images' content (computed once; labels and transform are not part of it)."""
        if getattr(self, "_fingerprint", None) is None:
            digest = hashlib.sha256(type(self).__name__.encode())
            self._content_digest(digest)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def sample_ids(self) -> list[int]:
        """Each item's index in this dataset (itself)."""
        return list(range(len(self)))
