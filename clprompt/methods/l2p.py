"""L2P, Learning to Prompt (Wang et al., CVPR 2022), on CLIP's image tower.

A pool of M prompts (default 10) of L tokens (5), each with a learned key; per image, the N keys (5) most
similar to the query (the frozen tower's feature) choose N prompts, concatenated (N * L tokens) and
inserted at the image tower's input (as VPT shallow: after the class and patch tokens, no positional
embedding, through ln_pre). The surrogate loss pulls the chosen keys toward the query:
lambda * mean over the batch of sum over the chosen keys of (1 - cos(q, k)) (the paper's Eq. 5 with
gamma = 1 - cos; the reference code subtracts lambda * sum cos / B, the same gradient), lambda 0.1 as the
reference code's ``pull_constraint_coeff``. The pool and keys are shared by all tasks and keep
training; the classifier is CLIP's text side (or, ``classifier=linear``, the original's linear head).
"""

from __future__ import annotations

from typing import Sequence

import torch

from clprompt.config_check import require_number
from clprompt.model.backbone import Backbone
from clprompt.methods.keyed_prompts import KeyedPromptMethod
from clprompt.parts.prompt_pool import PromptPool


class L2P(KeyedPromptMethod):
    def __init__(self, backbone: Backbone, class_names: Sequence[str], pool: PromptPool = None,
                 pull_weight: float = 0.1, classifier: str = "text", context=None, labels=None):
        pull_weight = require_number("method.pull_weight", pull_weight, what="(the reference: 0.1)")
        super().__init__(backbone, class_names, context, labels, classifier)
        self.pool = pool if pool is not None else PromptPool()
        self.pool.bind(self.clip)
        self.pull_weight = pull_weight

    def prompt_inputs(self, query: torch.Tensor):
        indices, similarities = self.pool.select(query)
        self.last_selection = indices
        terms = {}
        if self.training:
            terms["l2p_pull"] = self.pull_weight * (1 - similarities).sum(dim=1).mean()
        return [self.pool.gather(indices)], None, terms
