"""Linear probe on frozen image features (PTNL's Classifier-R / Classifier-C).

One weight row per class; logits = logit_scale * image_features @ rows^T. init 'random' (Classifier-R)
draws rows at random; init 'text' (Classifier-C) starts each row at its class's zero-shot text feature,
so the untrained probe is zero-shot CLIP. Every class has a row from the start (a task not trained yet
is scored by its initial rows); an experience makes its own classes' rows trainable and freezes the rest.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from avalanche.models.dynamic_modules import DynamicModule

from clprompt.config_check import require_choice, require_template
from clprompt.model.backbone import Backbone
from clprompt.methods.base import PromptMethod
from clprompt.methods.zeroshot import ZeroShot


class ClassRows(DynamicModule):
    """Per-class weight rows; ``adaptation`` trains the rows of the experience's classes only."""

    def __init__(self, initial: torch.Tensor):
        super().__init__()
        self.rows = torch.nn.ParameterList([torch.nn.Parameter(row.clone(), requires_grad=False) for row in initial])

    def adaptation(self, experience) -> None:
        if not self.training:
            return
        current = {int(c) for c in experience.classes_in_this_experience}
        for c, row in enumerate(self.rows):
            row.requires_grad_(c in current)

    def weights(self, class_ids: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.rows[int(c)] for c in class_ids])


class LinearProbe(PromptMethod):
    def __init__(self, backbone: Backbone, class_names: Sequence[str], init: str = "random",
                 template: str = "a photo of a {}."):
        super().__init__(backbone, class_names)
        require_choice("method.init", init, {"random": "Classifier-R", "text": "Classifier-C"})
        if init == "text":
            require_template("method.template", template)
            zero_shot = ZeroShot(backbone, class_names, templates=template)   # checks the names the context cuts
            self.cut_class_names = zero_shot.cut_class_names
            with torch.no_grad():
                initial = zero_shot.class_text_features(range(self.n_classes))
        else:
            initial = F.normalize(torch.randn(self.n_classes, backbone.model.visual.output_dim), dim=-1)
        self.head = ClassRows(initial.float())

    def class_text_features(self, class_ids: Sequence[int]) -> torch.Tensor:
        """The probe's rows play the part of class text features (not normalized once trained)."""
        return self.head.weights(class_ids)
