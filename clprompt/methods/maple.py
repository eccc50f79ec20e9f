"""MaPLe (Khattak et al. 2023): deep text prompts coupled to deep visual prompts.

Depth J (``depth``): by default (null) the paper's 9 of ViT-B/16's 12 blocks (``paper_blocks``), scaled to
the smaller tower of the run's backbone by clprompt.parts.blocks' rule, max(1, round(9 n / 12)) with halves up:
the first 3/4 of it (2 of the mini-CLIP's 3 text blocks, 2 of the tiny CLIP's 2; 9 on ViT-B); a given depth is
the towers' own, as given (at most the smaller tower's blocks). ``resolved_options()`` says which was used.

Text: the shared context (2 tokens, from "a photo") feeds block 0; blocks 1..depth-1 each get their own
learned tokens, N(0, 0.02), replacing the previous block's prompt outputs. Vision: for each of those
blocks, visual prompts = Linear_i(text prompts of block i) (the coupling functions), replacing the
previous block's, as in VPT deep. Trains the text prompts and the coupling maps.

The reference replaces "a photo" of "a photo of a {c}." by the two tokens, so the real input is
``"[p1][p2] of a {c}."``; clprompt does the same (configs/method/maple.yaml: init_words "a photo",
words_after "of a"), and tests it.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.parts.context import LearnedContext
from clprompt.parts.blocks import resolve_depth
from clprompt.parts.labels import NameLabels

# the paper's J = 9 prompted blocks of ViT-B/16's 12 (in each tower)
PAPER_BLOCKS = MappingProxyType({"of": 12, "depth": 9})


class MaPLe(PromptTuning):
    learns_own_prompts = True   # the deep text prompts and the coupling maps

    def __init__(self, backbone: Backbone, class_names: Sequence[str], context: LearnedContext,
                 labels=None, depth: Optional[int] = None, alignment=None, paper_blocks=PAPER_BLOCKS):
        if not isinstance(context, LearnedContext):
            raise ConfigValueError(f"MaPLe couples learned context vectors to the image tower, but method.context is a "
                                   f"{type(context).__name__}: give method.context._target_=clprompt.parts.context."
                                   "LearnedContext (as method=maple)")
        if context.class_specific:
            raise ConfigValueError("MaPLe couples one shared context to the image tower: class_specific must be false")
        super().__init__(backbone, class_names, context, labels if labels is not None else NameLabels(),
                         alignment=alignment)
        self.clip.require_vit("MaPLe")
        text_layers = len(self.clip.clip.transformer.resblocks)
        depth, self.scaled_from = resolve_depth("MaPLe", depth, paper_blocks, min(text_layers, self.clip.image_layers),
                                                "smaller tower")
        text_width = self.clip.clip.token_embedding.weight.shape[1]
        self.depth = depth
        self.deep_text = torch.nn.Parameter(torch.randn(depth - 1, context.length, text_width) * 0.02)
        self.coupling = torch.nn.ModuleList(torch.nn.Linear(text_width, self.clip.image_width) for _ in range(depth))

    def resolved_options(self) -> dict:
        return {"depth": self.depth, "text_blocks": len(self.clip.clip.transformer.resblocks),
                "image_blocks": self.clip.image_layers, "scaled_from": self.scaled_from}

    def text_prompts(self) -> list[torch.Tensor]:
        """The text prompts of blocks 0..depth-1: [context.length, text width] each."""
        return [self.context.context] + list(self.deep_text)

    def class_text_features(self, class_ids: Sequence[int], learned_labels: bool = True,
                            context_shift: Optional[torch.Tensor] = None) -> torch.Tensor:
        class_ids = [int(c) for c in class_ids]
        embeddings = self.prompt_embeddings(class_ids, learned_labels)
        layout = self._class_set_layout(class_ids)
        features = self.clip.encode_token_embeddings(embeddings, layout["eot"], deep_prompts=[None] + list(self.deep_text),
                                                     prompt_positions=layout["context_index"][1], length=layout["length"])
        return F.normalize(features, dim=-1)

    @property
    def frozen_image_side(self) -> bool:
        return False

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        visual = [coupling(prompts) for coupling, prompts in zip(self.coupling, self.text_prompts())]
        features = self.clip.encode_image_with_prompts(images, visual)
        self.last_image_features = features
        return features
