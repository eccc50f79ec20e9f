"""PTNL's analysis: how strongly do noisy samples pull the trainable parameters, next to clean ones?

After every training epoch, ``n_per_side`` noisy and as many clean training samples (a fresh draw each
epoch, seeded) go through the method in training mode; the ratio ||grad L(noisy)|| / ||grad L(clean)||
over the trainable parameters is logged (PTNL: 64 + 64 per epoch). The loss is the run's (CE or GCE),
without the method's regularization; the gradients are cleared afterwards, so training is unaffected.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import Dataset


def gradient_norm(loss: torch.Tensor, parameters: Sequence[torch.nn.Parameter]) -> float:
    """L2 norm of d loss / d parameters, over all parameters together."""
    grads = torch.autograd.grad(loss, list(parameters), allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


class GradientNormRatioPlugin(SupervisedPlugin):
    """Logs the noisy-to-clean gradient-norm ratio per epoch; ``history`` keeps (epoch, ratio, noisy, clean)."""

    def __init__(self, dataset: Dataset, noisy: np.ndarray, n_per_side: int = 64, seed: int = 0,
                 log_scalar: Optional[Callable[[str, float, int], None]] = None):
        super().__init__()
        noisy = np.asarray(noisy, dtype=bool)
        if len(noisy) != len(dataset):
            raise ValueError(f"{len(noisy)} noise flags for {len(dataset)} samples")
        if not noisy.any() or noisy.all():
            raise ValueError("the gradient-norm ratio needs both noisy and clean samples")
        self.dataset, self.noisy = dataset, noisy
        self.n_per_side, self.seed = n_per_side, seed
        self.log_scalar = log_scalar
        self.history: list[dict] = []

    def _batch(self, pool: np.ndarray, rng: np.random.Generator, device):
        chosen = rng.choice(pool, size=min(self.n_per_side, len(pool)), replace=False)
        images, labels = zip(*(self.dataset[int(i)] for i in chosen))
        return torch.stack(images).to(device), torch.as_tensor(labels, device=device)

    def after_training_epoch(self, strategy, **kwargs):
        epoch = len(self.history)
        rng = np.random.default_rng([self.seed, epoch])
        parameters = strategy.model.trainable_parameters()
        norms = {}
        for side, pool in (("noisy", np.flatnonzero(self.noisy)), ("clean", np.flatnonzero(~self.noisy))):
            images, labels = self._batch(pool, rng, strategy.device)
            with torch.enable_grad():
                norms[side] = gradient_norm(strategy._criterion(strategy.model(images), labels), parameters)
        ratio = norms["noisy"] / norms["clean"] if norms["clean"] > 0 else float("nan")
        self.history.append({"epoch": epoch + 1, "ratio": ratio, **norms})
        if self.log_scalar is not None:
            self.log_scalar("ptnl/grad_norm_ratio_noisy_to_clean", ratio, epoch + 1)
            self.log_scalar("ptnl/grad_norm_noisy", norms["noisy"], epoch + 1)
            self.log_scalar("ptnl/grad_norm_clean", norms["clean"], epoch + 1)
