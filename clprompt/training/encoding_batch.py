"""The batch the frozen image tower encodes at when it scores or caches images (``eval.batch_size``).

A fixed size (an integer) is used as given. ``auto`` (the default) chooses by device and measurement:

- on CUDA, 256 images: a GPU's tower gains from large batches and 256 images of 224 px fit any card
  clprompt supports;
- elsewhere (CPU), the run's own first encoding batches are the measurement: after one warm-up batch of
  16 images, the tower encodes two trial batches each of 16, 32 and 64 images, timing each, until a size
  is more than 3 % slower per image than the best so far. A size's time is the faster of its two batches
  (one batch slowed by other work on the machine does not decide), and the run keeps the smallest size
  within 3 % of the fastest: differences that small are within the noise of a shared machine, and a
  smaller batch takes less memory. The trials stop at 64: on a CPU the tower is slower per image at
  larger batches (ViT-B/32 at 224 px on one Xeon core: 74 ms at 32, 83 ms at 100, 87 ms at 128, open_clip's
  tower and OpenAI's alike; the activations leave the caches), a batch of 256 takes about 0.6 GB more
  memory, and trials of 128 or 256 taken while other work runs on the machine could look as fast as 32
  and choose them.

No work is added: the trial batches are images the run encodes anyway, only cut differently. The tower
computes each image on its own, so the batch size changes no feature (``tests/test_encoding_batch.py``
checks bit-equality on this path); results.json records the measured milliseconds per image and the
choice (``evaluation_batch``).
"""

from __future__ import annotations

import time
from typing import Iterator, Optional

import torch

from clprompt.errors import ConfigValueError

CUDA_BATCH = 256
WARMUP = 16
TRIALS = (16, 32, 64)
TRIAL_BATCHES = 2   # timed batches per trial size; the faster counts
SLOWER = 1.03   # a trial this much slower per image than the best ends the search; sizes within it tie


class EncodingBatch:
    """Batch sizes for encoding ``n`` images: ``batches(n)`` yields them lazily, and ``timed(size, call)``
    runs one encoding, timing it while the size is still being measured."""

    def __init__(self, setting, device: torch.device):
        if setting == "auto":
            self.chosen: Optional[int] = CUDA_BATCH if torch.device(device).type == "cuda" else None
            self.reason = ("auto: 256 on CUDA" if self.chosen else
                           "auto: measured on the run's first encoding batches")
        elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
            self.chosen, self.reason = setting, f"eval.batch_size={setting}"
        else:
            raise ConfigValueError(f"eval.batch_size={setting!r}: give auto or an integer >= 1")
        self.setting = setting
        self.seconds_per_image: dict[int, float] = {}
        self._warmed = False
        self._trials = list(TRIALS)
        self._timed: list[float] = []   # seconds per image of the current trial size's batches

    @property
    def measuring(self) -> bool:
        return self.chosen is None

    @property
    def size(self) -> int:
        """The size now: the chosen one, or the next to measure."""
        return self.chosen or (self._trials[0] if self._warmed else WARMUP)

    def batches(self, n: int) -> Iterator[int]:
        """Sizes summing to ``n``, decided one at a time (each after the previous batch was timed)."""
        left = n
        while left > 0:
            size = min(self.size, left)
            yield size
            left -= size

    def timed(self, size: int, encode):
        """``encode()`` (one batch of ``size`` images), timed while measuring. A batch cut short by the end
        of the data is not a trial of its size."""
        if not self.measuring:
            return encode()
        start = time.perf_counter()
        out = encode()
        self.observe(size, time.perf_counter() - start)
        return out

    def observe(self, size: int, seconds: float) -> None:
        if not self.measuring:
            return
        if not self._warmed:       # the first batch pays one-off costs (allocation, kernels chosen)
            self._warmed = size == WARMUP
            return
        if size != self._trials[0]:
            return
        self._timed.append(seconds / size)
        if len(self._timed) < TRIAL_BATCHES:
            return
        self.seconds_per_image[size] = min(self._timed)
        self._timed = []
        self._trials.pop(0)
        fastest = min(self.seconds_per_image.values())
        if not self._trials or self.seconds_per_image[size] > SLOWER * fastest:
            self.chosen = min(s for s, t in self.seconds_per_image.items() if t <= SLOWER * fastest)

    def record(self) -> dict:
        return {"setting": self.setting, "size": self.chosen, "reason": self.reason,
                "ms_per_image": {str(size): round(1000 * s, 3) for size, s in self.seconds_per_image.items()}}


class EncodingBatchSampler(torch.utils.data.Sampler):
    """Indices 0..n-1 in order, in the batches ``EncodingBatch.batches`` decides as the loop runs."""

    def __init__(self, n: int, encoding: EncodingBatch):
        self.n, self.encoding = n, encoding

    def __iter__(self):
        start = 0
        for size in self.encoding.batches(self.n):
            yield list(range(start, start + size))
            start += size

    def __len__(self) -> int:
        return -(-self.n // self.encoding.size)
