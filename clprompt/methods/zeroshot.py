"""Zero-shot CLIP: hand-written templates, fixed class names, no training."""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from clprompt.config_check import require_int
from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError
from clprompt.methods.base import PromptMethod
from clprompt.parts.labels import check_cut_names

# CLIP's ImageNet prompt ensembles: all 80 templates, and the 7 the CLIP authors selected.
TEMPLATE_ENSEMBLES = {
    "openai_80": [template("{}") for template in OPENAI_IMAGENET_TEMPLATES],
    "openai_7": [template("{}") for template in SIMPLE_IMAGENET_TEMPLATES],
}


def resolve_templates(templates: Union[str, Sequence[str]]) -> list[str]:
    """A template with '{}', a list of them, or the name of an ensemble in TEMPLATE_ENSEMBLES."""
    if isinstance(templates, str):
        if templates in TEMPLATE_ENSEMBLES:
            return list(TEMPLATE_ENSEMBLES[templates])
        templates = [templates]
    templates = list(templates) if hasattr(templates, "__iter__") else [templates]
    if not templates:
        raise ConfigValueError("method.templates=[]: no template gives no class text feature; give a template with "
                               "'{}' for the class name, a list of them, or an ensemble: "
                               f"{', '.join(TEMPLATE_ENSEMBLES)}")
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad:
        raise ConfigValueError(
            f"method.templates: each template needs exactly one '{{}}' for the class name (bad: {bad}); "
            f"or name an ensemble: {', '.join(TEMPLATE_ENSEMBLES)}"
        )
    return templates


class ZeroShot(PromptMethod):
    """Class text feature = normalized mean of the normalized features of each template (CLIP's ensembling).

    The prompts are tokenized whole, so names the text context cuts are checked once here
    (``check_cut_names``: refused where the cut makes two classes one, else a warning and a record)."""

    def __init__(self, backbone: Backbone, class_names: Sequence[str],
                 templates: Union[str, Sequence[str]] = "a photo of a {}.", text_batch_size: int = 1024):
        super().__init__(backbone, class_names)
        self.templates = resolve_templates(templates)
        self.text_batch_size = require_int("method.text_batch_size", text_batch_size, 1,
                                           what="(prompts per text-tower forward)")
        self.cut_class_names = check_cut_names(self.tokenizer, self.class_names, self.templates, "method.templates")

    def class_text_features(self, class_ids: Sequence[int]) -> torch.Tensor:
        prompts = [t.format(self.class_names[c]) for c in class_ids for t in self.templates]
        tokens = self.tokenizer(prompts).to(self.device)
        features = torch.cat([self.clip.encode_text(chunk) for chunk in tokens.split(self.text_batch_size)])
        features = features.view(len(class_ids), len(self.templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)
