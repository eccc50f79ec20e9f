"""The base of every prompt method: a CLIP classifier over the classes a stream has named so far.

A method turns class ids into text features (``class_text_features``) and images into image features
(``image_features``); ``forward`` scores images against the current *candidate classes* only. The
evaluation protocol chooses the candidates (classes seen so far, or one task's classes); logits of the
other classes are -inf, so outputs always index global class ids and Avalanche's labels need no
remapping.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from clprompt.model.backbone import Backbone
from clprompt.model.clip_adapter import CLIPAdapter


class PromptMethod(torch.nn.Module):
    """CLIP classification over a candidate subset of a stream's classes.

    Subclasses implement ``class_text_features``; trained methods add parameters and Avalanche plugins.
    Text features of a class set are cached while the module is in eval mode (computed once per
    evaluation); ``clear_text_cache`` drops them, which the evaluation protocol does before each
    evaluation phase.
    """

    def __init__(self, backbone: Backbone, class_names: Sequence[str]):
        super().__init__()
        self.clip = CLIPAdapter(backbone.model)
        self.tokenizer = backbone.tokenizer
        self.class_names = list(class_names)
        self.candidate_classes: list[int] = list(range(len(self.class_names)))
        self._text_cache: dict[tuple[int, ...], torch.Tensor] = {}
        # the class names the tokenizer cuts in this method's whole-prompt templates (clprompt.parts.labels.
        # check_cut_names): recorded in results.json through resolved_options
        self.cut_class_names: dict = {}

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def class_text_features(self, class_ids: Sequence[int]) -> torch.Tensor:
        """Normalized text features of the given classes: [len(class_ids), embed_dim]."""
        raise NotImplementedError

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized image features: [B, 3, H, W] -> [B, embed_dim]. The frozen tower by default."""
        return self.clip.encode_image(images)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def regularization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss terms beyond the classification loss, from the last forward (none by default)."""
        return logits.new_zeros(())

    def loss_terms(self) -> dict:
        """The unweighted terms of the last ``regularization`` (name -> detached scalar), for the training
        log; none by default."""
        return {}

    def adapted_state_dict(self) -> dict:
        """What defines the adapted model beyond the frozen backbone (prompts, labels, heads)."""
        return {name: tensor for name, tensor in self.state_dict().items() if not name.startswith("clip.")}

    def plugins(self) -> list:
        """Avalanche plugins this method brings to the strategy (none by default)."""
        return []

    def resolved_options(self) -> dict:
        """The options whose values the backbone decided, as used (option -> value): the prompted blocks scaled
        from the paper's (DualPrompt, CODA-Prompt, MaPLe: clprompt.parts.blocks), the prompt length fitted to the
        text context (AttriCLIP), with the tower sizes and the values they came from; the class names the text
        context cuts (``cut_class_names``). Empty when no option depends on the backbone. For results.json and the
        run's log."""
        return {"cut_class_names": self.cut_class_names} if self.cut_class_names else {}

    def set_candidate_classes(self, class_ids: Sequence[int]) -> None:
        ids = sorted(int(c) for c in class_ids)
        if not ids or ids[0] < 0 or ids[-1] >= self.n_classes:
            raise ValueError(f"candidate classes must be a non-empty subset of 0..{self.n_classes - 1}")
        self.candidate_classes = ids

    def clear_text_cache(self) -> None:
        self._text_cache.clear()

    def candidate_text_features(self) -> torch.Tensor:
        key = tuple(self.candidate_classes)
        if self.training or torch.is_grad_enabled():
            self._text_cache.clear()
            return self.class_text_features(key)
        if key not in self._text_cache:
            self._text_cache[key] = self.class_text_features(key)
        return self._text_cache[key]

    @property
    def frozen_image_side(self) -> bool:
        """True when ``image_features`` is the frozen tower's output (what the feature cache may store)."""
        return True

    def frozen_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen tower's normalized features (what the feature cache stores): [B, 3, H, W] -> [B, d]."""
        return self.clip.encode_image(images)

    def forward(self, images: torch.Tensor, candidate_classes: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Logits over all classes, [B, n_classes]; -inf outside the candidate classes."""
        if candidate_classes is not None:
            self.set_candidate_classes(candidate_classes)
        return self.logits_from_image_features(self.image_features(images))

    def logits_from_image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Logits [B, n_classes] from normalized image features [B, d] (the images' or the cache's)."""
        self.last_image_features = image
        text = self.candidate_text_features()
        self.last_text_features = text
        return self.scatter_candidates(self.clip.logit_scale * image @ text.to(image.dtype).t())

    def candidate_index(self, device: torch.device) -> torch.Tensor:
        """The candidate classes as a long tensor on ``device`` (made once per class set and device)."""
        key = (tuple(self.candidate_classes), str(device))
        cache = self.__dict__.setdefault("_candidate_index", {})
        if key not in cache:
            with torch.inference_mode(False):  # made in an evaluation, used by training too
                cache[key] = torch.tensor(self.candidate_classes, device=device)
        return cache[key]

    def candidate_rows(self, targets: torch.Tensor) -> torch.Tensor:
        """Each target's row among the candidate classes (a lookup on the device, no host sync)."""
        key = (tuple(self.candidate_classes), str(targets.device), "rows")
        cache = self.__dict__.setdefault("_candidate_index", {})
        if key not in cache:
            with torch.inference_mode(False):
                lookup = torch.full((self.n_classes,), -1, dtype=torch.long, device=targets.device)
                lookup[torch.tensor(self.candidate_classes, device=targets.device)] = torch.arange(
                    len(self.candidate_classes), device=targets.device)
                cache[key] = lookup
        return cache[key][targets]

    def scatter_candidates(self, scores: torch.Tensor) -> torch.Tensor:
        """[B, len(candidates)] scores -> [B, n_classes] logits, -inf outside the candidates."""
        logits = scores.new_full((scores.shape[0], self.n_classes), float("-inf"))
        logits[:, self.candidate_index(logits.device)] = scores
        return logits
