"""Context parts: the tokens around the class label in a text prompt.

A context part says where the label goes among its own tokens (``segments``) and which of those
tokens are learned vectors. ``TemplateContext`` is hand-written and frozen ("a photo of a {}.");
``LearnedContext`` is CoOp's: M learned vectors shared by all classes or one set per class (CSC),
with the label at the end, in the middle or at the front.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from clprompt.config_check import require_bool, require_choice, require_int, require_template, require_words
from clprompt.errors import ConfigValueError

# A segment is ("words", token ids) for frozen words, ("context", k) for learned vector k, ("label",).
Segment = tuple


class TemplateContext(torch.nn.Module):
    """Frozen words around the label: ``template`` holds '{}' where the label goes."""

    def __init__(self, template: str = "a photo of a {}."):
        super().__init__()
        self.template = require_template("method.context.template", template)
        self.length = 0

    def bind(self, clip, tokenizer, n_classes: int) -> None:
        self.tokenizer = tokenizer

    def segments(self) -> list[Segment]:
        before, after = self.template.split("{}")
        out = []
        if before.strip():
            out.append(("words", self.tokenizer.encode(before)))
        out.append(("label",))
        if after.strip():
            out.append(("words", self.tokenizer.encode(after)))
        return out

    def vectors(self, class_ids: Sequence[int]) -> Optional[torch.Tensor]:
        return None


class LearnedContext(torch.nn.Module):
    """CoOp's learned context: ``length`` vectors, N(0, 0.02) or the embeddings of ``init_words``.

    class_specific: one context per class (CSC) instead of one shared by all classes.
    position: where the label goes: 'end' ([ctx] label .), 'middle' (half, label, half), 'front'.
    words_after: frozen words between the context and the label ('end' only; MaPLe: "of a").
    A context of no vectors (length 0, or init_words that give no token) is refused: it would learn nothing.
    """

    def __init__(self, length: int = 16, init_words: Optional[str] = None, class_specific: bool = False,
                 position: str = "end", suffix: str = ".", words_after: str = ""):
        super().__init__()
        require_choice("method.context.position", position,
                       {"end": "[ctx] label .", "middle": "half, label, half", "front": "label [ctx] ."})
        require_words("method.context.init_words", init_words)
        if init_words is None:
            require_int("method.context.length", length, 1,
                        if_zero="a learned context of no vectors learns nothing: the prompt is the bare name")
        require_bool("method.context.class_specific", class_specific)
        for key, value in (("suffix", suffix), ("words_after", words_after)):
            if not isinstance(value, str):
                raise ConfigValueError(f"method.context.{key}={value!r}: give words (a string; '' for none)")
        self.requested_length, self.init_words = length, init_words
        self.class_specific, self.position, self.suffix = class_specific, position, suffix
        self.words_after = words_after

    def bind(self, clip, tokenizer, n_classes: int) -> None:
        """Create the vectors (needs the backbone's word embeddings and the class count)."""
        self.tokenizer = tokenizer
        width = clip.clip.token_embedding.weight.shape[1]
        if self.init_words:
            ids = torch.tensor(tokenizer.encode(self.init_words), dtype=torch.long)
            if not len(ids):
                raise ConfigValueError(f"method.context.init_words={self.init_words!r} gives no token: a context of no "
                                       "vectors learns nothing; give words, e.g. 'a photo of a', or null")
            with torch.no_grad():
                init = clip.embed_tokens(ids[None].to(clip.clip.token_embedding.weight.device))[0].float().cpu()
        else:
            init = torch.randn(self.requested_length, width) * 0.02
        self.length = init.shape[0]
        if self.class_specific:
            init = init[None].repeat(n_classes, 1, 1)
        self.context = torch.nn.Parameter(init)

    def segments(self) -> list[Segment]:
        slots = [("context", k) for k in range(self.length)]
        tail = [("words", self.tokenizer.encode(self.suffix))] if self.suffix.strip() else []
        if self.position == "end":
            middle = [("words", self.tokenizer.encode(self.words_after))] if self.words_after.strip() else []
            return slots + middle + [("label",)] + tail
        if self.position == "front":
            return [("label",)] + slots + tail
        half = self.length // 2
        return slots[:half] + [("label",)] + slots[half:] + tail

    def vectors(self, class_ids: Sequence[int]) -> torch.Tensor:
        """[C, length, width]: the context of each class."""
        if self.class_specific:
            return self.context[torch.as_tensor(list(class_ids), device=self.context.device)]
        return self.context[None].expand(len(class_ids), -1, -1)
