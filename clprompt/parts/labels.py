"""Label parts: the tokens that stand for each class in a text prompt.

``NameLabels``: the class name's own word embeddings, frozen. ``LearnedLabels`` (LAMM, PTNL's CLS
tuning): learnable label embeddings initialised from the name's word embeddings. They grow with the
stream: an experience that brings new classes adds their embeddings (an Avalanche ``DynamicModule``
adaptation) and freezes those of earlier experiences, so old classes' text features stay put. A class
without learned embeddings yet (a future task) uses its name.

``check_cut_names``: where a class's prompt is tokenized whole (zero-shot's templates, TEnc-FT's, the linear
probe's text init, S-Prompts' zero-shot scoring), open_clip's tokenizer cuts a prompt longer than the text
context without a word; the check says so once, when the method is built, and refuses names the cut makes
one. (Prompts laid out token by token, ``PromptTuning``'s and AttriCLIP's, refuse a prompt that does not fit.)
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
from avalanche.models.dynamic_modules import DynamicModule

from clprompt.config_check import require_bool, require_choice
from clprompt.errors import ConfigValueError

log = logging.getLogger(__name__)

# A prompt is tokenized whole only when its estimate (template tokens + name tokens + SOT and EOT) comes this close to
# the context: tokenizing the parts apart misses only merges at the name's edges, a token or two.
CUT_MARGIN = 8
LISTED = 10   # cut names listed in a warning (results.json records them all)


def shown(name: str, width: int = 60) -> str:
    """A class name for a message: whole, or its start and its end (where cut names differ) when it is long."""
    return repr(name) if len(name) <= width else f"{name[:width // 2]!r} ... {name[-width // 3:]!r}"


def check_cut_names(tokenizer, class_names: Sequence[str], templates: Sequence[str], key: str) -> dict:
    """The class names that ``tokenizer`` cuts in ``templates`` ('{}' for the name), once per method build.

    Two distinct names whose prompts are the same after the cut (they differ only past the text context) would be
    one class scored twice: refused, naming both, the context and how many tokens a name may have. Names cut but
    still distinct: one warning listing them. Returns the record for results.json (``method_resolved``):
    {"context_length": n, "templates": [...], "names": [...]}, or {} when no prompt is cut. ``key``: the option
    that holds the templates, for the message."""
    limit = getattr(tokenizer, "context_length", None)
    encode = getattr(tokenizer, "encode", None)
    if not limit or encode is None or not class_names or not templates:
        return {}
    edges = [[len(encode(part)) if part.strip() else 0 for part in template.split("{}")] for template in templates]
    widest = max(before + after for before, after in edges)
    near = [c for c, name in enumerate(class_names) if len(encode(name)) + widest + 2 > limit - CUT_MARGIN]
    if not near:
        return {}
    prompts = [[template.format(class_names[c]) for template in templates] for c in near]
    whole = {c: tuple(tuple(encode(prompt)) for prompt in row) for c, row in zip(near, prompts)}
    rows = tokenizer([prompt for row in prompts for prompt in row]).tolist()
    kept = {c: tuple(tuple(rows[i * len(templates) + t]) for t in range(len(templates))) for i, c in enumerate(near)}
    cut = [c for c in near if any(len(tokens) + 2 > limit for tokens in whole[c])]
    if not cut:
        return {}
    room = min(limit - 2 - before - after for before, after in edges)
    groups: dict = {}
    for c in near:
        groups.setdefault(kept[c], []).append(c)
    for members in groups.values():
        distinct: dict = {}
        for c in members:   # names the tokenizer already reads as one (e.g. differing in case only) are not the cut's
            distinct.setdefault(whole[c], c)
        if len(distinct) > 1:
            first, second = (shown(class_names[c]) for c in list(distinct.values())[:2])
            raise ConfigValueError(
                f"class names {first} and {second} become one class: the text context of {limit} tokens cuts "
                f"their prompts ({key}={templates[0]!r}{' ...' if len(templates) > 1 else ''}) before they differ. "
                f"Give shorter class names (the dataset's class-name or split file), distinct within their first "
                f"{max(room, 0)} tokens, or a shorter template")
    names = [class_names[c] for c in cut]
    log.warning("%d class name(s) do not fit the text context of %d tokens in %s and are cut (the classes stay "
                "distinct; results.json lists them under method_resolved.cut_class_names): %s%s. Names of at most %d "
                "tokens are kept whole", len(names), limit, key, ", ".join(shown(n) for n in names[:LISTED]),
                f" and {len(names) - LISTED} more" if len(names) > LISTED else "", max(room, 0))
    return {"context_length": int(limit), "templates": list(templates), "names": names}


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
        require_choice("method.labels.learn", learn, {"all": "every token of a name",
                                                       "min_len": "the first n, n the shortest name's tokens"})
        self.learn, self.freeze_old = learn, require_bool("method.labels.freeze_old", freeze_old)
        self.embeddings = torch.nn.ParameterDict()   # str(class id) -> [learned tokens, width]

    def bind(self, clip, tokenizer, class_names: Sequence[str]) -> None:
        self.clip = [clip]  # a list keeps the frozen backbone out of this module's parameters
        self.name_tokens = [tokenizer.encode(name) for name in class_names]
        self.min_len = min(len(tokens) for tokens in self.name_tokens)
        if self.learn == "min_len" and self.min_len == 0:
            blank = next(name for name, tokens in zip(class_names, self.name_tokens) if not tokens)
            raise ConfigValueError(f"method.labels.learn=min_len learns the first n tokens of each name, n the "
                                   f"shortest name's, but the class name {blank!r} has no token: no label would be "
                                   "learned; give every class a name, or method.labels.learn=all")

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
