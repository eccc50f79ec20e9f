"""What every built-in image dataset shares: labels, an optional transform, RGB PIL images."""

from __future__ import annotations

import copy
from typing import Callable, Optional

from PIL import Image
from torch.utils.data import Dataset


class LabelledImages(Dataset):
    """Base of the image datasets: ``.targets`` (ints), ``.transform``, and ``image(index)`` to implement.

    Each item is ``(transform(PIL RGB image), label)``; without a transform, the PIL image itself.
    """

    targets: list[int]
    transform: Optional[Callable]

    def image(self, index: int) -> Image.Image:
        """Sample ``index`` as an RGB PIL image."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def with_transform(self, transform: Optional[Callable]):
        """The same images and labels with another transform (the data is shared, not copied)."""
        other = copy.copy(self)
        other.transform = transform
        return other
