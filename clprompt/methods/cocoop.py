"""CoCoOp (Zhou et al. 2022): CoOp's context plus an image-conditioned bias from a small meta-net.

meta-net: Linear(d_img -> d_img / 16) -> ReLU -> Linear(-> d_txt), applied to each image's feature; its
output is added to every context vector, so each image gets its own class text features (memory and
time grow with batch x classes: the reference trains with batch 1).
"""

from __future__ import annotations

from typing import Sequence

import torch

from clprompt.backbone import Backbone
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.parts.context import LearnedContext
from clprompt.parts.labels import NameLabels


class CoCoOp(PromptTuning):
    def __init__(self, backbone: Backbone, class_names: Sequence[str], context: LearnedContext,
                 labels=None, reduction: int = 16):
        super().__init__(backbone, class_names, context, labels if labels is not None else NameLabels())
        image_dim = backbone.model.visual.output_dim
        text_width = self.clip.clip.token_embedding.weight.shape[1]
        self.meta_net = torch.nn.Sequential(
            torch.nn.Linear(image_dim, max(1, image_dim // reduction)), torch.nn.ReLU(inplace=True),
            torch.nn.Linear(max(1, image_dim // reduction), text_width),
        )

    def logits_from_image_features(self, image: torch.Tensor) -> torch.Tensor:
        self.last_image_features = image
        shifts = self.meta_net(image.float())
        scores = torch.stack([self.clip.logit_scale * image[b] @ self.class_text_features(
            self.candidate_classes, context_shift=shifts[b]).t().to(image.dtype) for b in range(len(image))])
        return self.scatter_candidates(scores)
