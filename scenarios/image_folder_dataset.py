"""An image classification dataset over image files on disk, read lazily (CoOp's datasets, ImageNet)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import os

from PIL import Image

from scenarios.errors import DatasetFileError
from scenarios.labelled_images import LabelledImages


class ImageFileDataset(LabelledImages):
    """Images as a list of file paths, labels as a list of ints.

    Each item is ``(transform(PIL RGB image), label)``; without a transform, the PIL image itself.
    Every image is converted to RGB (grayscale and palette files exist in Caltech101 and SUN397), since
    CLIP's image towers take three channels. Files are opened only when an item is read.
    """

    def __init__(self, paths: Sequence[str], targets: Sequence[int], transform: Optional[Callable] = None):
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} image paths but {len(targets)} labels")
        self.paths = [str(p) for p in paths]
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def image(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as handle:
                return handle.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:   # PIL: UnidentifiedImageError, truncated files
            raise DatasetFileError(
                f"{path} cannot be read as an image ({type(error).__name__}: {error}): the file is damaged or "
                "not an image. Replace it with the dataset's original, or remove it and its line from the split file"
            ) from None

    def _content_digest(self, digest) -> None:
        """Paths and file sizes (reading every file of a large dataset would take longer than a run)."""
        for path in self.paths:
            size = os.stat(path).st_size if os.path.exists(path) else -1
            digest.update(f"{path}\0{size}\0".encode())
