"""The base of the continual-learning prompt methods whose image prompts are chosen per image by matching
the frozen tower's feature (the query) against learned keys: L2P, DualPrompt, CODA-Prompt.

The image side is prompted (so no feature cache), the classifier is CLIP's text side by default: the
class names in a frozen template, "a photo of a {}.", whose features are computed once per class set.
``classifier=linear`` puts the originals' linear head on the prompted image feature instead (one row per
class, trained; logits outside the candidate classes are -inf, which is the originals' ``train_mask``
when the loss ranks the experience's classes). A subclass gives ``prompt_inputs(query)`` (the prompts
for the image tower and its surrogate loss terms) and, if it identifies tasks, sets ``chosen_tasks``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from avalanche.models.dynamic_modules import DynamicModule

from clprompt.config_check import require_choice
from clprompt.model.backbone import Backbone
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.parts.context import TemplateContext
from clprompt.parts.labels import NameLabels
from clprompt.parts.prompt_pool import query_features

CLASSIFIERS = {"text": "CLIP's class-name text features", "linear": "the original's linear head on the image feature"}


class TaskClasses(DynamicModule):
    """The classes of each experience trained so far, in order (grown in ``adaptation``, so a resumed run
    rebuilds it); ``current`` is the experience being trained."""

    def __init__(self):
        super().__init__()
        self.classes: list[list[int]] = []

    def adaptation(self, experience) -> None:
        if not self.training:
            return
        index = int(experience.current_experience)
        if index == len(self.classes):
            self.classes.append(sorted(int(c) for c in experience.classes_in_this_experience))
        self.current = index

    @property
    def trained(self) -> int:
        return len(self.classes)

    def tasks_with(self, class_ids: Sequence[int]) -> list[int]:
        """The trained tasks owning at least one of ``class_ids``."""
        wanted = {int(c) for c in class_ids}
        return [t for t, classes in enumerate(self.classes) if wanted.intersection(classes)]


class KeyedPromptMethod(PromptTuning):
    """A frozen-text CLIP classifier over an image tower prompted per image from a query.

    Subclasses implement ``prompt_inputs(query) -> (layer_prompts, prefixes, terms)``: the arguments of
    ``CLIPAdapter.encode_image_with_prompts`` and the weighted surrogate loss terms of this forward
    (name -> scalar tensor, summed into the loss while training).
    """

    learns_own_prompts = True   # the image-side prompts; the text side may stay a fixed template

    def __init__(self, backbone: Backbone, class_names: Sequence[str], context=None, labels=None,
                 classifier: str = "text"):
        require_choice("method.classifier", classifier, CLASSIFIERS)
        super().__init__(backbone, class_names, context if context is not None else TemplateContext(),
                         labels if labels is not None else NameLabels())
        self.clip.require_vit(type(self).__name__)
        self.classifier = classifier
        self.tasks = TaskClasses()
        if classifier == "linear":   # timm's ViT head init: truncated normal (std 0.02), bias 0
            self.head = torch.nn.Linear(int(backbone.model.visual.output_dim), self.n_classes)
            torch.nn.init.trunc_normal_(self.head.weight, std=0.02)
            torch.nn.init.zeros_(self.head.bias)
        self._terms: dict = {}

    def prompt_inputs(self, query: torch.Tensor):
        raise NotImplementedError

    @property
    def frozen_image_side(self) -> bool:
        return False

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        query = query_features(self.clip, images)
        layer_prompts, prefixes, self._terms = self.prompt_inputs(query)
        features = self.clip.encode_image_with_prompts(images, layer_prompts, prefixes)
        self.last_image_features = features
        return features

    def logits_from_image_features(self, image: torch.Tensor) -> torch.Tensor:
        if self.classifier == "text":
            return super().logits_from_image_features(image)
        self.last_image_features = image
        return self.scatter_candidates(self.head(image.float())[:, self.candidate_index(image.device)])

    def regularization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not self._terms:
            return logits.new_zeros(())
        return sum(self._terms.values())

    def loss_terms(self) -> dict:
        return {name: value.detach() for name, value in self._terms.items()}
