"""PTNL's TEnc-FT: the hand template and class names, with the text encoder itself fine-tuned.

The shared backbone stays frozen: the method trains its own copy of the text tower (transformer,
positional embedding, final norm and projection; the word embeddings stay frozen). Its adapted state
is that whole copy, which is the storage cost this baseline is there to show.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F

from clprompt.config_check import require_template
from clprompt.model.backbone import Backbone
from clprompt.model.clip_adapter import CLIPAdapter
from clprompt.methods.base import PromptMethod
from clprompt.parts.labels import check_cut_names


class TextEncoderFinetune(PromptMethod):
    def __init__(self, backbone: Backbone, class_names: Sequence[str], template: str = "a photo of a {}."):
        super().__init__(backbone, class_names)
        require_template("method.template", template)
        self.cut_class_names = check_cut_names(self.tokenizer, self.class_names, [template], "method.template")
        text_copy = copy.deepcopy(backbone.model)
        text_copy.visual = torch.nn.Identity()  # the image side stays with the shared backbone
        text_copy.requires_grad_(False)
        for module in (text_copy.transformer, text_copy.ln_final):
            module.requires_grad_(True)
        text_copy.positional_embedding.requires_grad_(True)
        if isinstance(text_copy.text_projection, torch.nn.Parameter):
            text_copy.text_projection.requires_grad_(True)
        elif text_copy.text_projection is not None:
            text_copy.text_projection.requires_grad_(True)
        self.text_encoder = CLIPAdapter(text_copy)
        self.register_buffer("prompt_tokens", self.tokenizer([template.format(n) for n in self.class_names]),
                             persistent=False)

    def class_text_features(self, class_ids: Sequence[int]) -> torch.Tensor:
        tokens = self.prompt_tokens[torch.as_tensor(list(class_ids), device=self.prompt_tokens.device)]
        with torch.no_grad():
            embeddings = self.text_encoder.embed_tokens(tokens)
        features = self.text_encoder.encode_token_embeddings(embeddings, self.text_encoder.eot_positions(tokens))
        return F.normalize(features, dim=-1)
