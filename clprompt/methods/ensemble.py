"""An ensemble of independently trained copies of one method (UPL's prompt ensemble).

Members are trained one at a time (``activate(i)``, then the usual training calls: the optimizer sees
the active member's parameters only); evaluation scores with the mean of all members' logits, so the
ensemble is one classifier in the accuracy matrix. -inf logits (non-candidate classes) stay -inf.
"""

from __future__ import annotations

from typing import Sequence

import torch

from clprompt.methods.base import PromptMethod


class Ensemble(PromptMethod):
    """Mean of the logits of ``members`` (all built over the same backbone and class names)."""

    def __init__(self, members: Sequence[PromptMethod]):
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        torch.nn.Module.__init__(self)
        self.members = torch.nn.ModuleList(members)
        self.class_names = members[0].class_names
        self.candidate_classes = list(range(len(self.class_names)))
        self._text_cache = {}
        self.active = 0

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def clip(self):
        return self.members[0].clip

    def activate(self, index: int) -> None:
        """Train member ``index`` next."""
        if not 0 <= index < len(self.members):
            raise IndexError(f"member {index} of {len(self.members)}")
        self.active = index

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.members[self.active].trainable_parameters()

    def regularization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.members[self.active].regularization(logits, targets)

    def loss_terms(self) -> dict:
        return self.members[self.active].loss_terms()

    def adapted_state_dict(self) -> dict:
        return {f"members.{i}.{name}": tensor for i, member in enumerate(self.members)
                for name, tensor in member.adapted_state_dict().items()}

    def plugins(self) -> list:
        return [plugin for member in self.members for plugin in member.plugins()]

    def resolved_options(self) -> dict:
        return self.members[0].resolved_options()   # every member is built from one config on one backbone

    def set_candidate_classes(self, class_ids: Sequence[int]) -> None:
        super().set_candidate_classes(class_ids)
        for member in self.members:
            member.set_candidate_classes(class_ids)

    def clear_text_cache(self) -> None:
        for member in self.members:
            member.clear_text_cache()

    @property
    def frozen_image_side(self) -> bool:
        return all(member.frozen_image_side for member in self.members)

    def frozen_image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.members[0].frozen_image_features(images)

    def logits_from_image_features(self, image: torch.Tensor) -> torch.Tensor:
        """As ``forward``, from the frozen image features the members share."""
        if self.training:
            return self.members[self.active].logits_from_image_features(image)
        return torch.stack([member.logits_from_image_features(image) for member in self.members]).mean(dim=0)

    def forward(self, images: torch.Tensor, candidate_classes=None) -> torch.Tensor:
        """Training: the active member's logits. Evaluation: the mean of every member's logits."""
        if candidate_classes is not None:
            self.set_candidate_classes(candidate_classes)
        if self.training:
            return self.members[self.active](images)
        return torch.stack([member(images) for member in self.members]).mean(dim=0)
