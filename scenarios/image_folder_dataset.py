"""An image classification dataset over image files on disk, read lazily (CoOp's datasets, ImageNet).

A run reads a training image once per epoch, and a test image at every evaluation: decoding the file again
each time gives the same pixels. So the decoded images are kept in memory, up to ``KEEP_DECODED_BYTES``
per dataset (``data.keep_decoded_mb``, default 512 MiB; 0 keeps none): a few-shot training set (16 shots
of 50 classes at 500x375 px: about 430 MiB) is decoded once per run; a dataset larger than the budget keeps
the first images read and decodes the rest each time. Every read hands out a copy, so a transform that
draws on its image cannot change what the next epoch reads. Data-loader workers keep their own copies.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import os
import threading

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
        self.kept = DecodedKeep()   # shared with the copies with_transform makes (same files)

    def image(self, index: int) -> Image.Image:
        kept = self.kept.get(index)
        if kept is not None:
            return kept.copy()
        image = self.read(index)
        self.kept.put(index, image)
        return image.copy() if self.kept.holds(index) else image

    def read(self, index: int) -> Image.Image:
        """Sample ``index`` decoded from its file, as RGB."""
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


KEEP_DECODED_BYTES = 512 * 2 ** 20   # per dataset; data.keep_decoded_mb sets it (clprompt.stages)


def keep_decoded(megabytes: int) -> None:
    """Keep up to ``megabytes`` MiB of decoded images per file-backed dataset (0: none)."""
    global KEEP_DECODED_BYTES
    KEEP_DECODED_BYTES = int(megabytes) * 2 ** 20


class DecodedKeep:
    """Decoded images by sample index, up to ``KEEP_DECODED_BYTES`` (read when an image is offered)."""

    def __init__(self):
        self.images: dict[int, Image.Image] = {}
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, index: int) -> Optional[Image.Image]:
        return self.images.get(index)

    def holds(self, index: int) -> bool:
        return index in self.images

    def put(self, index: int, image: Image.Image) -> None:
        size = image.width * image.height * len(image.getbands())
        with self.lock:
            if index not in self.images and self.bytes + size <= KEEP_DECODED_BYTES:
                self.images[index] = image
                self.bytes += size

    def __getstate__(self):   # a pickled or deep-copied dataset (a spawned worker) starts with none kept
        return {"kept": 0}

    def __setstate__(self, state):
        self.__init__()
