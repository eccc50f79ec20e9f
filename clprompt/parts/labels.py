"""Label parts: the tokens that stand for each class in a text prompt.

``NameLabels``: the class name's own word embeddings, frozen. ``LearnedLabels`` (LAMM, PTNL's CLS
tuning): learnable label embeddings initialised from the name's word embeddings. They grow with the
stream: an experience that brings new classes adds their embeddings (an Avalanche ``DynamicModule``
adaptation) and freezes those of earlier experiences, so old classes' text features stay put. A class
without learned embeddings yet (a future task) uses its name.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from avalanche.models.dynamic_modules import DynamicModule

from clprompt.errors import ConfigValueError


class NameLabels(torch.nn.Module):
    """Each class's name tokens, frozen."""

    def bind(self, clip, tokenizer, class_names: Sequence[str]) -> None:
        """Nothing to create: the names' word embeddings are already in the prompt layout."""

    def vectors(self, class_ids: Sequence[int]) -> Optional[list[Optional[torch.Tensor]]]:
        return None


class LearnedLabels(DynamicModule):
    """Learnable label embeddings per class, added experience by experience.

    learn: 'all' makes every token of a name learnable (clprompt's default); 'min_len' only the first
    n tokens, n being the shortest name's token count (LAMM's reference code), the rest stay frozen.
    freeze_old: freeze the embeddings of earlier experiences when a new one arrives (continual LAMM).
    """

    def __init__(self, learn: str = "all", freeze_old: bool = True):
        super().__init__()
        if learn not in ("all", "min_len"):
            raise ConfigValueError(f"labels.learn={learn!r}; choose all or min_len")
        self.learn, self.freeze_old = learn, freeze_old
        self.embeddings = torch.nn.ParameterDict()   # str(class id) -> [learned tokens, width]

    def bind(self, clip, tokenizer, class_names: Sequence[str]) -> None:
        self.clip = [clip]  # a list keeps the frozen backbone out of this module's parameters
        self.name_tokens = [tokenizer.encode(name) for name in class_names]
        self.min_len = min(len(tokens) for tokens in self.name_tokens)

    def learned_length(self, class_id: int) -> int:
        n = len(self.name_tokens[class_id])
        return n if self.learn == "all" else min(n, self.min_len)

    def add_classes(self, class_ids: Sequence[int]) -> list[int]:
        """Create embeddings for classes that have none, from their names; returns the ids added."""
        clip = self.clip[0]
        weight = clip.clip.token_embedding.weight
        added = []
        for c in sorted(int(c) for c in class_ids):
            if str(c) in self.embeddings:
                continue
            ids = torch.tensor(self.name_tokens[c][: self.learned_length(c)], device=weight.device)
            with torch.no_grad():
                init = clip.embed_tokens(ids[None])[0].float().clone()
            self.embeddings[str(c)] = torch.nn.Parameter(init)
            added.append(c)
        return added

    def adaptation(self, experience) -> None:
        """Before training an experience: freeze what exists (if freeze_old), add the new classes."""
        if not self.training:
            return
        new = [c for c in experience.classes_in_this_experience if str(int(c)) not in self.embeddings]
        if not new:
            return
        if self.freeze_old:
            for parameter in self.embeddings.values():
                parameter.requires_grad_(False)
        self.add_classes(new)

    def vectors(self, class_ids: Sequence[int]) -> list[Optional[torch.Tensor]]:
        """Per class: [learned tokens, width], or None for a class with no learned labels yet."""
        return [self.embeddings[str(int(c))] if str(int(c)) in self.embeddings else None for c in class_ids]

    def initial_vectors(self, class_id: int) -> torch.Tensor:
        """The embeddings a class's labels started from (its name's word embeddings)."""
        clip = self.clip[0]
        weight = clip.clip.token_embedding.weight
        ids = torch.tensor(self.name_tokens[class_id][: self.learned_length(class_id)], device=weight.device)
        return clip.embed_tokens(ids[None])[0].float()
