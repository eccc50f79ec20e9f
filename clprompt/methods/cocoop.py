"""CoCoOp (Zhou et al. 2022): CoOp's context plus an image-conditioned bias from a small meta-net.

meta-net: Linear(d_img -> d_img / 16) -> ReLU -> Linear(-> d_txt), applied to each image's feature; its
output is added to every context vector, so each image gets its own class text features (memory and
time grow with batch x classes: the reference trains with batch 1).

The batch's B x C prompts go through the text tower together, ``prompts_per_pass`` rows at a time (the
reference loops over the images): the same prompts, so the same logits up to the order of float sums,
and an evaluation batch of 256 images costs a few text forwards instead of 256.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from clprompt.config_check import require_int
from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.parts.context import LearnedContext
from clprompt.parts.labels import NameLabels


class CoCoOp(PromptTuning):
    learns_own_prompts = True   # the meta-net

    def __init__(self, backbone: Backbone, class_names: Sequence[str], context: LearnedContext,
                 labels=None, reduction: int = 16, prompts_per_pass: int = 8192):
        if not isinstance(context, LearnedContext):
            raise ConfigValueError(f"CoCoOp adds its image-conditioned bias to learned context vectors, but "
                                   f"method.context is a {type(context).__name__}: give method.context._target_="
                                   "clprompt.parts.context.LearnedContext (as method=cocoop)")
        require_int("method.reduction", reduction, 1, what="(meta-net hidden width = image feature width / reduction)")
        require_int("method.prompts_per_pass", prompts_per_pass, 1,
                    what="(the text tower's rows per forward; lower it when memory runs out)")
        super().__init__(backbone, class_names, context, labels if labels is not None else NameLabels())
        self.prompts_per_pass = prompts_per_pass
        image_dim = backbone.model.visual.output_dim
        text_width = self.clip.clip.token_embedding.weight.shape[1]
        self.meta_net = torch.nn.Sequential(
            torch.nn.Linear(image_dim, max(1, image_dim // reduction)), torch.nn.ReLU(inplace=True),
            torch.nn.Linear(max(1, image_dim // reduction), text_width),
        )

    def text_features_per_image(self, class_ids: Sequence[int], shifts: torch.Tensor) -> torch.Tensor:
        """[B, C, D] normalized: each class's text features with image b's shift added to every context
        vector (shifts [B, width]), B x C prompts through the text tower, ``prompts_per_pass`` at a time."""
        class_ids = [int(c) for c in class_ids]
        unshifted = self.prompt_embeddings(class_ids)                    # [C, L, width]: context, labels in place
        layout = self._class_set_layout(class_ids)
        at_context = torch.zeros(unshifted.shape[:2] + (1,), device=unshifted.device, dtype=unshifted.dtype)
        at_context[layout["context_index"]] = 1.0                           # x + 0 * shift leaves x as it is
        features = []
        for chunk in shifts.split(max(1, self.prompts_per_pass // len(class_ids))):
            embeddings = unshifted[None] + at_context[None] * chunk[:, None, None, :].to(unshifted.dtype)
            eot = layout["eot"].repeat(len(chunk))
            encoded = self.clip.encode_token_embeddings(embeddings.flatten(0, 1), eot, length=layout["length"])
            features.append(F.normalize(encoded, dim=-1).view(len(chunk), len(class_ids), -1))
        return torch.cat(features)

    def logits_from_image_features(self, image: torch.Tensor) -> torch.Tensor:
        self.last_image_features = image
        shifts = self.meta_net(image.float())
        text = self.text_features_per_image(self.candidate_classes, shifts)        # [B, C, D]
        scores = self.clip.logit_scale * (text.to(image.dtype) @ image[:, :, None])[..., 0]
        return self.scatter_candidates(scores)
