"""DualPrompt (Wang et al., ECCV 2022) on CLIP's image tower: a general prompt and expert prompts, as
prefixes of the attention.

G-prompt: shared by all tasks, in the first blocks (``g_layers``), ``g_length`` (5) prefix keys and as
many prefix values per block; it keeps training through the stream. E-prompts: one per task, with a key,
in the following blocks (``e_layers``), ``e_length`` (5) prefix keys and values per block. The blocks: by
default (``g_layers`` and ``e_layers`` null) the reference's 0-1 and 2-4 of ViT-B's 12 (``paper_blocks``),
scaled to the run's image tower together (clprompt.parts.blocks: [0] and [1] on 4 blocks or 2, unchanged on
12); a given list is the tower's own blocks, as given. ``resolved_options()`` says which were used. Prefix
tuning (``CLIPAdapter.prefix_block``): the prompts are concatenated to the attention's keys and values after
the in-projection, as the reference code does.

Training uses the true task's E-prompt for every image (the reference's ``use_prompt_mask``) and pulls its
key toward the query: pull_weight * mean over the batch of (1 - cos(q, k_t)) (the reference subtracts
pull_weight * sum cos / B, the same gradient; pull_weight 1.0 as its ``pull_constraint_coeff``). At test
time each image takes the E-prompt whose key is most similar to its query, among the trained tasks that
own a candidate class; that choice is recorded (``chosen_tasks``: the task-identification accuracy in
results.json) when it is a choice, i.e. the candidate classes span more than one trained task (class-
incremental scoring; in task-incremental scoring the task is given). A task's E-prompt and key are frozen
once the next task starts (``freeze_old``).

Departures from the reference code (dualprompt-pytorch): the query is CLIP's image feature (see
clprompt.parts.prompt_pool); the test-time search covers the trained tasks' keys only (the reference
searches the whole pool, untrained keys included); no batch-wise majority vote; prefixes enter after the
class and patch tokens' in-projection exactly as there, but CLIP's attention has a packed in-projection.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Sequence

import torch
from avalanche.models.dynamic_modules import DynamicModule

from clprompt.config_check import require_bool, require_int, require_number
from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError
from clprompt.methods.keyed_prompts import KeyedPromptMethod
from clprompt.parts.blocks import resolve_block_lists
from clprompt.parts.prompt_pool import cosine, uniform_

# the reference's cifar100_dualprompt on ViT-B's 12 blocks: g_prompt_layer_idx [0, 1], e_prompt_layer_idx [2, 3, 4]
PAPER_BLOCKS = MappingProxyType({"of": 12, "g_layers": (0, 1), "e_layers": (2, 3, 4)})


class ExpertPrompts(DynamicModule):
    """One key [d] and one prefix [layers, 2, length, width] (keys, values) per task, added when the task's
    experience starts; earlier tasks' frozen when ``freeze_old``."""

    def __init__(self, query_dim: int, layers: int, length: int, width: int, freeze_old: bool = True):
        super().__init__()
        self.shape = (layers, 2, length, width)
        self.query_dim, self.freeze_old = query_dim, freeze_old
        self.keys = torch.nn.ParameterList()
        self.prefixes = torch.nn.ParameterList()
        # follows .to(): each task's prompts land on the module's device, the first task's too
        self.register_buffer("anchor", torch.empty(0), persistent=False)

    def adaptation(self, experience) -> None:
        if not self.training or int(experience.current_experience) < len(self.keys):
            return
        if self.freeze_old:
            for parameter in list(self.keys) + list(self.prefixes):
                parameter.requires_grad_(False)
        device = self.anchor.device  # drawn on the CPU, so a task starts from the same values on every device
        self.keys.append(torch.nn.Parameter(uniform_(torch.empty(self.query_dim)).to(device)))
        self.prefixes.append(torch.nn.Parameter(uniform_(torch.empty(self.shape)).to(device)))


class DualPrompt(KeyedPromptMethod):
    def __init__(self, backbone: Backbone, class_names: Sequence[str], g_length: int = 5, g_layers=None,
                 e_length: int = 5, e_layers=None, pull_weight: float = 1.0, freeze_old: bool = True,
                 classifier: str = "text", context=None, labels=None, paper_blocks=PAPER_BLOCKS):
        for prompt, name, value in (("G", "g_length", g_length), ("E", "e_length", e_length)):
            require_int(f"method.{name}", value, 1, what="(prefix tokens per block)",
                        if_zero=f"{prompt}-prompts of no tokens insert nothing (to leave the {prompt}-prompt out, give "
                                f"method.{name[0]}_layers=[])")
        pull_weight = require_number("method.pull_weight", pull_weight, what="(the reference: 1.0)")
        require_bool("method.freeze_old", freeze_old)
        super().__init__(backbone, class_names, context, labels, classifier)
        depth, width = self.clip.image_layers, self.clip.image_width
        used, self.scaled_from = resolve_block_lists("DualPrompt", {"g_layers": g_layers, "e_layers": e_layers},
                                                     paper_blocks, depth)
        self.g_layers, self.e_layers = used["g_layers"], used["e_layers"]
        if not self.g_layers and not self.e_layers:
            scaled = " (a null list: method.paper_blocks' scaled)" if g_layers is None or e_layers is None else ""
            raise ConfigValueError(f"method.g_layers=[] and method.e_layers=[]{scaled}: no block gets a G- or an "
                                   "E-prompt, so nothing is inserted and the run would be zero-shot CLIP; give block "
                                   f"indices in 0..{depth - 1} to at least one of them (one list may be empty: "
                                   "DualPrompt without its G- or E-prompt), e.g. method.g_layers=[0] "
                                   f"method.e_layers=[{min(1, depth - 1)}]")
        self.pull_weight = pull_weight
        self.g_prompt = torch.nn.Parameter(uniform_(torch.empty(len(self.g_layers), 2, g_length, width)))
        self.experts = ExpertPrompts(int(backbone.model.visual.output_dim), len(self.e_layers), e_length, width,
                                     freeze_old)

    def choose_experts(self, query: torch.Tensor) -> torch.Tensor:
        """Each image's task (E-prompt index) [B]: the true task while training; else the best key among the
        trained tasks owning a candidate class (all trained tasks if none does). Sets ``chosen_tasks``."""
        batch = query.shape[0]
        self.chosen_tasks = None
        if self.training:
            return torch.full((batch,), self.tasks.current, dtype=torch.long, device=query.device)
        owning = self.tasks.tasks_with(self.candidate_classes)
        eligible = owning or list(range(len(self.experts.keys)))
        keys = torch.stack([self.experts.keys[t] for t in eligible])
        best = cosine(query, keys).argmax(dim=1)
        chosen = torch.as_tensor(eligible, device=query.device)[best]
        if len(owning) > 1:
            self.chosen_tasks = chosen
        return chosen

    def prompt_inputs(self, query: torch.Tensor):
        batch = query.shape[0]
        prefixes = [None] * self.clip.image_layers
        for row, layer in enumerate(self.g_layers):
            general = self.g_prompt[row].expand(batch, -1, -1, -1)
            prefixes[layer] = (general[:, 0], general[:, 1])
        terms = {}
        if len(self.experts.keys):
            chosen = self.choose_experts(query)
            expert = torch.stack(list(self.experts.prefixes))[chosen]       # [B, layers, 2, length, width]
            for row, layer in enumerate(self.e_layers):
                keys, values = expert[:, row, 0], expert[:, row, 1]
                if prefixes[layer] is not None:   # a block in both lists: the G- and E-prefixes together
                    keys, values = torch.cat([prefixes[layer][0], keys], 1), torch.cat([prefixes[layer][1], values], 1)
                prefixes[layer] = (keys, values)
            if self.training:
                key = self.experts.keys[self.tasks.current]
                terms["dualprompt_pull"] = self.pull_weight * (1 - cosine(query, key[None])[:, 0]).mean()
        return [], prefixes, terms

    def resolved_options(self) -> dict:
        return {"g_layers": list(self.g_layers), "e_layers": list(self.e_layers),
                "image_blocks": self.clip.image_layers, "scaled_from": self.scaled_from}
