"""The pretraining corpus: endless captioned scenes in the clean style, held-out pairs excluded."""

from __future__ import annotations

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from scenarios.sandbox.render import render
from scenarios.sandbox.world import caption, sample_scenes


def captioned_batch(seed: int, index: int, batch_size: int, image_size: int = 32):
    """Batch ``index`` of the corpus of ``seed``: the same arguments always give the same batch.

    Returns images uint8 [B, S, S, 3], captions (B strings), named [B, A] (the attributes each caption
    names, -1 where it is silent) and attributes [B, A] of each scene.
    """
    rng = np.random.default_rng([seed, index])
    scenes = sample_scenes(rng, batch_size, image_size, exclude_held_out=True)
    images = render(scenes, rng)
    attributes = scenes.attributes()
    texts, named = zip(*(caption(row, rng) for row in attributes))
    return images, list(texts), np.stack(named), attributes


class CaptionedScenes(IterableDataset):
    """Batches 0..n_batches-1 of ``captioned_batch``, split over DataLoader workers round-robin,
    so a DataLoader (batch_size=None) yields them in order whatever the number of workers."""

    def __init__(self, seed: int, n_batches: int, batch_size: int, image_size: int = 32, tokenizer=None):
        self.seed, self.n_batches, self.batch_size, self.image_size = seed, n_batches, batch_size, image_size
        self.tokenizer = tokenizer

    def __iter__(self):
        worker = get_worker_info()
        start, step = (worker.id, worker.num_workers) if worker else (0, 1)
        for index in range(start, self.n_batches, step):
            images, texts, named, attributes = captioned_batch(self.seed, index, self.batch_size, self.image_size)
            tokens = self.tokenizer(texts) if self.tokenizer is not None else texts
            yield images, tokens, named, attributes
