"""Text prompt tuning: a context part and a label part composed into each class's prompt.

Every class gets a token layout ``[SOT] <context segments with the label in its place> [EOT]``; the
frozen word embeddings of that layout are computed per call and the learned vectors (context, labels)
are written into their positions, then the text tower runs from the embeddings. CoOp, LAMM, CLS
tuning, full prompt tuning and CoOp+LAMM are configs of this one class (configs/method/).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError
from clprompt.methods.base import PromptMethod
from clprompt.parts.context import LearnedContext
from clprompt.parts.labels import LearnedLabels


class PromptTuning(PromptMethod):
    """A PromptMethod whose class text features come from a context part and a label part.

    visual: visual prompts (a ``VisualPrompts``) or None for the frozen image tower.
    alignment: LAMM's hierarchical loss terms (a ``LabelAlignmentLoss``) or None; it aligns learned labels, so it
    needs ``LearnedLabels``. A composition with nothing to learn (a fixed template, the names' own labels, no
    visual prompts) is refused: it would be zero-shot CLIP under the method's name.
    """

    # a subclass with prompts of its own (CoCoOp's meta-net, MaPLe's, the keyed pools, S-Prompts') sets this
    learns_own_prompts = False

    def __init__(self, backbone: Backbone, class_names: Sequence[str], context, labels, visual=None,
                 alignment=None):
        super().__init__(backbone, class_names)
        check_learned_parts(context, labels, visual, alignment, self.learns_own_prompts)
        self.context, self.labels, self.visual, self.alignment = context, labels, visual, alignment
        if visual is not None:
            visual.bind(self.clip)
        self.name_tokens = [self.tokenizer.encode(name) for name in self.class_names]
        context.bind(self.clip, self.tokenizer, self.n_classes)
        labels.bind(self.clip, self.tokenizer, self.class_names)
        self._build_layouts()
        self.last_image_features: Optional[torch.Tensor] = None
        self._frozen_text_cache: dict = {}

    def _build_layouts(self) -> None:
        """Token ids, context / label positions and EOT position of every class's prompt."""
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        limit = self.clip.context_length
        rows, context_positions, label_positions, eots = [], [], [], []
        for c, name in enumerate(self.name_tokens):
            tokens, ctx, label = [sot], [], []
            for segment in self.context.segments():
                if segment[0] == "words":
                    tokens += list(segment[1])
                elif segment[0] == "context":
                    ctx.append(len(tokens))
                    tokens.append(sot)  # a placeholder id; the learned vector overwrites its embedding
                else:
                    label = list(range(len(tokens), len(tokens) + len(name)))
                    tokens += name
            tokens.append(eot)
            if len(tokens) > limit:
                raise ConfigValueError(
                    f"the prompt of class {self.class_names[c]!r} has {len(tokens)} tokens, more than the text "
                    f"tower's context length {limit}: shorten the context (method.context.length) or the name"
                )
            eots.append(len(tokens) - 1)
            rows.append(tokens + [0] * (limit - len(tokens)))
            context_positions.append(ctx)
            label_positions.append(label)
        self.register_buffer("prompt_tokens", torch.tensor(rows), persistent=False)
        self.register_buffer("eot_index", torch.tensor(eots), persistent=False)
        self.eot_list = eots
        self.register_buffer("context_index", torch.tensor(context_positions, dtype=torch.long).reshape(
            self.n_classes, len(context_positions[0])), persistent=False)
        self.label_index = label_positions

    def prompt_embeddings(self, class_ids: Sequence[int], learned_labels: bool = True,
                          context_shift: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[C, L, width]: word embeddings of the classes' prompts with the learned vectors in place.

        context_shift: [width] added to every context vector (CoCoOp's image-conditioned bias).
        """
        class_ids = [int(c) for c in class_ids]
        layout = self._class_set_layout(class_ids)
        embeddings = layout["embeddings"]
        context = self.context.vectors(class_ids)
        if context is not None and context_shift is not None:
            context = context + context_shift
        if context is not None:
            embeddings = embeddings.index_put(layout["context_index"], context.to(embeddings.dtype))
        labels = self.labels.vectors(class_ids) if learned_labels else None
        if labels is not None and any(v is not None for v in labels):
            lengths = tuple(None if v is None else int(v.shape[0]) for v in labels)
            index = self._label_scatter_index(class_ids, lengths, embeddings.device)
            embeddings = embeddings.index_put(index, torch.cat([v for v in labels if v is not None]).to(embeddings.dtype))
        return embeddings

    def _class_set_layout(self, class_ids: list[int]) -> dict:
        """Per class set (made once): the prompts' frozen word embeddings [C, L, width], the context's
        (row, position) index, the EOT positions and the length to cut the prompts at (known here, so a
        step needs no host sync). Plain tensors made outside inference mode, as training reads them."""
        device = self.prompt_tokens.device
        key = (tuple(class_ids), str(device))
        layouts = self.__dict__.setdefault("_layouts", {})
        if key not in layouts:
            with torch.inference_mode(False), torch.no_grad():
                ids = torch.as_tensor(class_ids, device=device)
                positions = self.context_index[ids]
                rows = torch.arange(len(ids), device=device)[:, None].expand_as(positions)
                layouts[key] = {"embeddings": self.clip.embed_tokens(self.prompt_tokens[ids]).float(),
                                "context_index": (rows, positions), "eot": self.eot_index[ids],
                                "length": max(self.eot_list[c] for c in class_ids) + 1}
        return layouts[key]

    def _label_scatter_index(self, class_ids: list[int], lengths: tuple, device) -> tuple:
        """(rows, positions) of the learned label vectors, in the order they are concatenated (made once
        per class set and set of learned lengths)."""
        key = (tuple(class_ids), lengths, str(device))
        indices = self.__dict__.setdefault("_label_indices", {})
        if key not in indices:
            rows, cols = [], []
            for row, (c, n) in enumerate(zip(class_ids, lengths)):
                if n is not None:
                    positions = self.label_index[c][:n]
                    rows += [row] * len(positions)
                    cols += positions
            with torch.inference_mode(False):
                indices[key] = (torch.tensor(rows, device=device), torch.tensor(cols, device=device))
        return indices[key]

    def class_text_features(self, class_ids: Sequence[int], learned_labels: bool = True,
                            context_shift: Optional[torch.Tensor] = None) -> torch.Tensor:
        class_ids = [int(c) for c in class_ids]
        embeddings = self.prompt_embeddings(class_ids, learned_labels, context_shift)
        layout = self._class_set_layout(class_ids)
        return F.normalize(self.clip.encode_token_embeddings(embeddings, layout["eot"], length=layout["length"]), dim=-1)

    def text_is_trained(self) -> bool:
        return any(p.requires_grad for part in (self.context, self.labels) for p in part.parameters())

    def candidate_text_features(self) -> torch.Tensor:
        if self.text_is_trained() or not self.training:
            return super().candidate_text_features()
        # Training only visual parts: the frozen text side is computed once per class set (kept apart
        # from the evaluation cache, whose tensors come from inference mode).
        key = tuple(self.candidate_classes)
        if key not in self._frozen_text_cache:
            with torch.no_grad():
                self._frozen_text_cache[key] = self.class_text_features(key)
        return self._frozen_text_cache[key]

    @property
    def frozen_image_side(self) -> bool:
        return self.visual is None

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        if self.visual is None:
            features = super().image_features(images)
        else:
            features = self.clip.encode_image_with_prompts(images, self.visual.layer_prompts())
        self.last_image_features = features
        return features

    def regularization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """LAMM's alignment terms when configured, else 0."""
        if self.alignment is None:
            return super().regularization(logits, targets)
        return self.alignment(self, logits, targets)

    def loss_terms(self) -> dict:
        return dict(getattr(self.alignment, "last_terms", {})) if self.alignment is not None else {}


def check_learned_parts(context, labels, visual, alignment, learns_own_prompts: bool) -> None:
    """The parts learn something, and LAMM's alignment has learned labels to align (with the names' own labels
    it would fail at the first step)."""
    if alignment is not None and not isinstance(labels, LearnedLabels):
        raise ConfigValueError(f"method.alignment (LAMM's loss) aligns learned labels, but method.labels is "
                               f"{type(labels).__name__}: give method.labels._target_=clprompt.parts.labels."
                               "LearnedLabels, or drop the alignment with ~method.alignment")
    if learns_own_prompts or visual is not None or isinstance(context, LearnedContext) \
            or isinstance(labels, LearnedLabels):
        return
    raise ConfigValueError(f"method: a fixed context ({type(context).__name__}), the names' own labels "
                           f"({type(labels).__name__}) and no visual prompts learn nothing: the run would be zero-shot "
                           "CLIP under this method's name; give a learned part (method.context._target_=clprompt.parts."
                           "context.LearnedContext, method.labels._target_=clprompt.parts.labels.LearnedLabels or "
                           "method.visual), or use method=zeroshot")
