"""Classification losses on logits over all classes (-inf outside the candidate classes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clprompt.errors import ConfigValueError


class CrossEntropy(torch.nn.Module):
    name = "ce"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)


class GeneralizedCrossEntropy(torch.nn.Module):
    """GCE (Zhang & Sabuncu 2018), PTNL's robust loss: mean of (1 - p_y^q) / q.

    q -> 0 recovers cross-entropy, q = 1 is the mean absolute error. PTNL's paper uses q = 0.7.
    """
    name = "gce"

    def __init__(self, q: float = 0.7):
        super().__init__()
        if not 0 < q <= 1:
            raise ConfigValueError(f"loss.q={q}: GCE needs 0 < q <= 1 (q -> 0 is cross-entropy, 1 is MAE)")
        self.q = q

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p_target = F.softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        return ((1 - p_target.clamp_min(1e-12) ** self.q) / self.q).mean()
