"""AttriCLIP (Wang et al., CVPR 2023): per image, text prompts chosen from a bank of learned attributes.

The attribute word bank holds M pairs (key k_m [embed_dim], prompt P_m [L, text width]), shared by every
task and trained all the way (nothing grows or freezes per task: AttriCLIP is "non-incremental"). For an
image with the frozen tower's normalized feature z, the C keys most similar to z select their prompts,
which, concatenated in the order of decreasing similarity, are the context before every class name:

    ``[SOT] [P_i1] [P_i2] ... [P_iC] name . [EOT]``

laid out as the official code does (it tokenizes "x x ... x name." with L * C placeholder words after
SOT and overwrites their embeddings with the chosen prompts). Logits = logit_scale * cos(z, f_t(prompt of
class k for that image)). Only distinct selections need a text forward: the batch's images are grouped by
their (ordered) selection, and each group's prompts for the candidate classes go through the text tower
together, ``prompts_per_pass`` rows at a time. An image's logits depend on that image alone.

Loss (the official code's, classifier/vcop_4.py for CIFAR-100):
    CE + key_weight * L_K + orthogonality_weight * L_P,
    L_K = mean over the batch and the C chosen keys of (1 - cos(z_b, k_bc)): pulls the chosen keys toward the
          image feature (the keys get gradients from this term only);
    L_P = mean over the M (M - 1) ordered pairs i != j of |cos(g_i, g_j)|, g_m the text feature of prompt m
          alone: makes the prompts' text features orthogonal (diverse attributes).
What "prompt m alone" is (``orthogonality_text``): ``reference`` is the official code's, the tokenized
"x x ... x." (L * C placeholders) with the first L overwritten by P_m, so L * (C - 1) literal "x" words stay
between P_m and the full stop; ``alone`` is ``"[SOT] [P_m] . [EOT]"``.

Key matching (``similarity``): ``cosine`` (the paper's description) ranks the keys by cos(z, k_m); ``dot``
ranks by z . k_m with the keys unnormalized, as the official code does (its L_K normalizes them, its
selection does not).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from clprompt.config_check import require_choice, require_int, require_number
from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError, UnsupportedBackboneError
from clprompt.methods.base import PromptMethod

log = logging.getLogger(__name__)

SIMILARITIES = {"cosine": "the paper", "dot": "the official code: image feature . unnormalized key"}
ORTHOGONALITY_TEXTS = {"reference": "the official code's '[P_m] x ... x.'", "alone": "'[P_m].'"}


class AttriCLIP(PromptMethod):
    """CLIP with per-image text contexts chosen from an attribute bank.

    keys: [bank_size, embed_dim]; prompts: [bank_size, prompt_length, text width]; both N(0, init_std^2),
    the official init (std 0.02, > 0: keys of zero cannot be ranked). top_c: prompts per image, 1..bank_size
    (0 would leave every class's prompt "name.": zero-shot CLIP, refused).
    prompt_length: as given (refused if L x top_c does not fit the text context beside the longest class name);
    null: ``paper_prompt_length`` (the official 12) where it fits, else the longest that fits
    (``fitted_prompt_length``: 9 on the mini-CLIP's 32 tokens with names of up to 2 tokens, 12 on CLIP's 77).
    """

    def __init__(self, backbone: Backbone, class_names: Sequence[str], bank_size: int = 10,
                 prompt_length: Optional[int] = None, top_c: int = 3, key_weight: float = 0.7,
                 orthogonality_weight: float = 0.3, similarity: str = "cosine", orthogonality_text: str = "reference",
                 init_std: float = 0.02, prompts_per_pass: int = 8192, paper_prompt_length: int = 12):
        super().__init__(backbone, class_names)
        if prompt_length is None and (not isinstance(paper_prompt_length, int) or isinstance(paper_prompt_length, bool)
                                      or paper_prompt_length < 1):
            raise ConfigValueError(f"method.paper_prompt_length={paper_prompt_length!r}: give an integer >= 1")
        self._check_options(bank_size, paper_prompt_length if prompt_length is None else prompt_length, top_c,
                            key_weight, orthogonality_weight, similarity, orthogonality_text, init_std,
                            prompts_per_pass)
        if prompt_length is None:
            prompt_length = self.fitted_prompt_length(paper_prompt_length, top_c)
            self.fitted_from = paper_prompt_length
        else:
            self.fitted_from = None
        self.bank_size, self.prompt_length, self.top_c = bank_size, prompt_length, top_c
        self.key_weight, self.orthogonality_weight = float(key_weight), float(orthogonality_weight)
        self.similarity, self.orthogonality_text = similarity, orthogonality_text
        self.prompts_per_pass = prompts_per_pass
        embed_dim = int(backbone.model.visual.output_dim)
        text_width = int(self.clip.clip.token_embedding.weight.shape[1])
        self.keys = torch.nn.Parameter(torch.randn(bank_size, embed_dim) * init_std)
        self.prompts = torch.nn.Parameter(torch.randn(bank_size, prompt_length, text_width) * init_std)
        self._build_layouts()
        self.last_image_features: Optional[torch.Tensor] = None
        self.last_selection: Optional[torch.Tensor] = None   # [B, top_c] of the last forward
        self.last_terms: dict = {}
        self._selection_cache: dict = {}   # evaluation: (candidates, selection) -> [K, D] text features

    def fitted_prompt_length(self, paper: int, top_c: int) -> int:
        """The paper's prompt length, or the longest that fits where it does not: L x top_c context tokens beside
        the stream's longest class name, "[SOT] <L x top_c> name . [EOT]" within the text context. Logs one line
        when it is shorter than the paper's. Where not even one token fits, the paper's (refused by
        ``_build_layouts``, which says what to lower)."""
        limit, full_stop = self.clip.context_length, len(self.tokenizer.encode("."))
        longest = max(len(self.tokenizer.encode(name)) for name in self.class_names)
        room = (limit - 2 - longest - full_stop) // top_c
        if room >= paper or room < 1:
            return paper
        log.info("AttriCLIP: the paper's prompt_length %d x top_c %d does not fit the text context of %d tokens beside "
                 "the longest class name (%d token(s)): prompt_length %d", paper, top_c, limit, longest, room)
        return room

    def resolved_options(self) -> dict:
        return {"prompt_length": self.prompt_length, "context_length": self.clip.context_length,
                "fitted_from": self.fitted_from}

    @staticmethod
    def _check_options(bank_size, prompt_length, top_c, key_weight, orthogonality_weight, similarity,
                       orthogonality_text, init_std, prompts_per_pass) -> None:
        require_int("method.bank_size", bank_size, 1, if_zero="an empty bank has no attribute to choose")
        require_int("method.prompt_length", prompt_length, 1, if_zero="attribute prompts of no tokens add nothing")
        require_int("method.top_c", top_c, 1, what="(attributes per image)", if_zero="an image that takes no attribute "
                    "prompt gets the prompt 'name.' for every class: the run would be zero-shot CLIP")
        require_int("method.prompts_per_pass", prompts_per_pass, 1, what="(lower it when memory runs out)")
        if top_c > bank_size:
            raise ConfigValueError(f"method.top_c={top_c} is larger than method.bank_size={bank_size}: an image cannot "
                                   "take more attributes than the bank holds; lower top_c or grow the bank")
        require_number("method.key_weight", key_weight, what="(the official 0.7)")
        require_number("method.orthogonality_weight", orthogonality_weight, what="(the official 0.3)")
        require_number("method.init_std", init_std, 0, strict=True, what="(the official 0.02)",
                       if_zero="keys and prompts all 0 cannot be ranked (every image would take the same attributes)")
        require_choice("method.similarity", similarity, SIMILARITIES)
        require_choice("method.orthogonality_text", orthogonality_text, ORTHOGONALITY_TEXTS)

    # ----------------------------------------------------------------------------------------- layouts

    def _build_layouts(self) -> None:
        """Token ids and EOT positions of every class's prompt "[SOT] <L * C placeholders> name . [EOT]", and
        of the prompt-alone text of the orthogonality term. The placeholders are the official "x" words;
        their embeddings are overwritten by the chosen prompts (positions 1 .. L * C)."""
        tokenizer, limit = self.tokenizer, self.clip.context_length
        sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
        context_length = self.prompt_length * self.top_c
        placeholders = self._x_words(context_length)
        full_stop = tokenizer.encode(".")
        names = [tokenizer.encode(name) for name in self.class_names]
        longest = max(len(n) for n in names)
        if 1 + context_length + longest + len(full_stop) + 1 > limit:
            room = (limit - 2 - longest - len(full_stop)) // self.top_c
            raise ConfigValueError(
                f"method.prompt_length={self.prompt_length} x method.top_c={self.top_c} context tokens do not fit the "
                f"text tower's context length {limit} beside the longest class name ({longest} tokens): lower "
                f"method.prompt_length to {max(room, 0)} or less, or lower method.top_c"
            )
        rows, eots = [], []
        for name in names:
            tokens = [sot] + placeholders + name + full_stop + [eot]
            eots.append(len(tokens) - 1)
            rows.append(tokens + [0] * (limit - len(tokens)))
        self.register_buffer("prompt_tokens", torch.tensor(rows), persistent=False)
        self.register_buffer("eot_index", torch.tensor(eots), persistent=False)
        self.eot_list = eots
        fillers = self._x_words(self.prompt_length * (self.top_c - 1)) if self.orthogonality_text == "reference" else []
        alone = [sot] + self._x_words(self.prompt_length) + fillers + full_stop + [eot]
        self.register_buffer("alone_tokens", torch.tensor(alone), persistent=False)

    def _x_words(self, n: int) -> list[int]:
        """The token ids of n words "x" (the official code's placeholders: "x x ... x", one token each)."""
        x = self.tokenizer.encode("x")
        if len(x) != 1:
            raise UnsupportedBackboneError(f"this tokenizer splits the placeholder word 'x' into {len(x)} tokens; "
                                           "AttriCLIP expects CLIP's BPE tokenizer")
        return x * n

    def _class_set_layout(self, class_ids: tuple) -> dict:
        """Per class set (made once): the prompts' frozen word embeddings [K, T, width], EOT positions [K] and the
        length to cut them at. Plain tensors made outside inference mode, as training reads them."""
        device = self.prompt_tokens.device
        key = (class_ids, str(device))
        layouts = self.__dict__.setdefault("_layouts", {})
        if key not in layouts:
            with torch.inference_mode(False), torch.no_grad():
                ids = torch.as_tensor(class_ids, device=device)
                layouts[key] = {"embeddings": self.clip.embed_tokens(self.prompt_tokens[ids]).float(),
                                "eot": self.eot_index[ids], "length": max(self.eot_list[c] for c in class_ids) + 1}
        return layouts[key]

    def _alone_embeddings(self) -> torch.Tensor:
        """[T, width]: the word embeddings of the prompt-alone text (made once per device)."""
        device = self.alone_tokens.device
        cache = self.__dict__.setdefault("_alone", {})
        if str(device) not in cache:
            with torch.inference_mode(False), torch.no_grad():
                cache[str(device)] = self.clip.embed_tokens(self.alone_tokens[None])[0].float()
        return cache[str(device)]

    # --------------------------------------------------------------------------------------- selection

    def select(self, image: torch.Tensor) -> torch.Tensor:
        """Per image, the indices of the ``top_c`` best-matching keys, best first: [B, D] -> [B, top_c]. Ranked
        in fp32 (outside autocast), so the choice does not hinge on bf16 rounding of near ties."""
        with torch.no_grad(), torch.autocast(image.device.type, enabled=False):
            keys = self.keys.float()
            if self.similarity == "cosine":
                keys = F.normalize(keys, dim=-1)
            return (image.float() @ keys.t()).topk(self.top_c, dim=1).indices

    def selection_text_features(self, class_ids: Sequence[int], selections: torch.Tensor) -> torch.Tensor:
        """[G, K, D] normalized: the K classes' text features with each selection's prompts (selections
        [G, top_c]) as the context, G x K prompts through the text tower, ``prompts_per_pass`` at a time."""
        class_ids = tuple(int(c) for c in class_ids)
        layout = self._class_set_layout(class_ids)
        words, n_classes = layout["embeddings"], len(class_ids)
        start, end = 1, 1 + self.prompt_length * self.top_c
        contexts = self.prompts[selections].flatten(1, 2)                    # [G, L * C, width]
        features = []
        for chunk in contexts.split(max(1, self.prompts_per_pass // n_classes)):
            context = chunk[:, None].expand(-1, n_classes, -1, -1).to(words.dtype)
            around = words[None].expand(len(chunk), -1, -1, -1)
            embeddings = torch.cat([around[:, :, :start], context, around[:, :, end:]], dim=2)
            encoded = self.clip.encode_token_embeddings(embeddings.flatten(0, 1), layout["eot"].repeat(len(chunk)),
                                                        length=layout["length"])
            features.append(F.normalize(encoded, dim=-1).view(len(chunk), n_classes, -1))
        return torch.cat(features)

    def _grouped_text_features(self, groups: torch.Tensor) -> torch.Tensor:
        """[G, K, D] for the candidate classes; in evaluation each (class set, selection) is computed once
        per evaluation phase (kept until ``clear_text_cache``)."""
        candidates = tuple(self.candidate_classes)
        if self.training or torch.is_grad_enabled():
            return self.selection_text_features(candidates, groups)
        rows = [tuple(g) for g in groups.tolist()]
        missing = [row for row in rows if (candidates, row) not in self._selection_cache]
        if missing:
            fresh = torch.tensor(missing, dtype=torch.long, device=groups.device).view(len(missing), self.top_c)
            for row, features in zip(missing, self.selection_text_features(candidates, fresh)):
                self._selection_cache[(candidates, row)] = features
        return torch.stack([self._selection_cache[(candidates, row)] for row in rows])

    def logits_from_image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Logits [B, n_classes] from normalized image features [B, d]: each image scored against the class
        prompts of its own selection (images grouped by selection, one text forward per group)."""
        self.last_image_features = image
        selections = self.select(image)                                      # [B, C]
        self.last_selection = selections
        groups, which = torch.unique(selections, dim=0, return_inverse=True)
        text = self._grouped_text_features(groups)[which]                   # [B, K, D]
        scores = self.clip.logit_scale * (text.to(image.dtype) @ image[:, :, None])[..., 0]
        return self.scatter_candidates(scores)

    def class_text_features(self, class_ids: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError("AttriCLIP's class text features depend on each image's chosen attributes: "
                                  "use selection_text_features(class_ids, selections)")

    def clear_text_cache(self) -> None:
        super().clear_text_cache()
        self._selection_cache.clear()

    # ------------------------------------------------------------------------------------------ losses

    def prompt_text_features(self) -> torch.Tensor:
        """[M, D] normalized: the text feature g_m of each prompt alone (the orthogonality term's input)."""
        words = self._alone_embeddings()
        start, end = 1, 1 + self.prompt_length
        around = words[None].expand(self.bank_size, -1, -1)
        embeddings = torch.cat([around[:, :start], self.prompts.to(words.dtype), around[:, end:]], dim=1)
        eot = torch.full((self.bank_size,), words.shape[0] - 1, dtype=torch.long, device=words.device)
        return F.normalize(self.clip.encode_token_embeddings(embeddings, eot, length=words.shape[0]), dim=-1)

    def key_matching_loss(self) -> torch.Tensor:
        """L_K = mean over the last batch's images and chosen keys of 1 - cos(z_b, k_bc)."""
        chosen = F.normalize(self.keys[self.last_selection].float(), dim=-1)          # [B, C, D]
        return 1 - (self.last_image_features.float()[:, None] * chosen).sum(-1).mean()

    def orthogonality_loss(self) -> torch.Tensor:
        """L_P = mean over the ordered pairs i != j of |cos(g_i, g_j)| (0 for a bank of one)."""
        if self.bank_size < 2:
            return self.prompts.new_zeros(())
        features = self.prompt_text_features().float()
        similarity = features @ features.t()
        off_diagonal = ~torch.eye(self.bank_size, dtype=torch.bool, device=similarity.device)
        return similarity[off_diagonal].abs().mean()

    def regularization(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """key_weight * L_K + orthogonality_weight * L_P of the last forward (a term of weight 0 is neither
        computed nor logged)."""
        total = logits.new_zeros((), dtype=torch.float32)
        self.last_terms = {}
        for name, weight, term in (("attriclip_keys", self.key_weight, self.key_matching_loss),
                                   ("attriclip_orthogonality", self.orthogonality_weight, self.orthogonality_loss)):
            if weight:
                value = term()
                self.last_terms[name] = value.detach()
                total = total + weight * value
        return total

    def loss_terms(self) -> dict:
        return dict(self.last_terms)
