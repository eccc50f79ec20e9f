"""CODA-Prompt (Smith et al., CVPR 2023) on CLIP's image tower: a prompt assembled per image from
components weighted by attention, as prefixes of the attention.

Per prompted block l (``layers``; by default, null, the reference's ``e_layers`` 0-4 of ViT-B's 12 blocks in
``paper_blocks``, scaled to the run's image tower by clprompt.parts.blocks' rule: the first 5/12 of it, [0, 1]
on 4 blocks, [0] on 2; a given list is the tower's own blocks, as given): components P [M, L, width],
keys K [M, d] and attention vectors A [M, d]. For an image with query q (the frozen tower's feature):
alpha_m = cos(q * A_m, K_m) (elementwise product, then cosine), prompt = sum_m alpha_m P_m [L, width];
its first L/2 tokens are the block's prefix keys, the last L/2 its prefix values (L 8: 4 and 4).
Each task adds ``components_per_task`` components (10: the reference's pool of 100 over 10 tasks),
initialised orthonormal to the earlier ones (Gram-Schmidt on random normal vectors, P flattened over
its L x width entries; K and A likewise); the earlier tasks' components are frozen (the reference
detaches them), and a task trains with the components up to its own. Optional orthogonality penalty:
ortho_weight * sum over blocks of [ortho(K) + ortho(A) + ortho(P flattened)], ortho(T) = mean((T T^T - I)^2)
(the reference's ``ortho_mu``: 0.0 in its current scripts, "with updated code, now can be 0"; 0.1 in the
paper's first runs).

Departures from the reference code (GT-RIPL/CODA-Prompt): the query is CLIP's image feature (see
clprompt.parts.prompt_pool: the reference normalises q * A, so the query's scale does not matter there
either); components are added per experience without knowing the number of tasks in advance (the
reference sizes the pool as 100 and slices it per task); the classifier is CLIP's text side.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Sequence

import torch
import torch.nn.functional as F
from avalanche.models.dynamic_modules import DynamicModule

from clprompt.config_check import require_int, require_number
from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError
from clprompt.methods.keyed_prompts import KeyedPromptMethod
from clprompt.parts.blocks import resolve_block_lists

# the reference's e_layers on ViT-B's 12 blocks
PAPER_BLOCKS = MappingProxyType({"of": 12, "layers": (0, 1, 2, 3, 4)})


def orthonormal_extension(previous: torch.Tensor, count: int, generator=None) -> torch.Tensor:
    """``count`` unit vectors orthogonal to the rows of ``previous`` [n, D] and to each other (Gram-Schmidt
    on random normal vectors, as the reference's ``gram_schmidt``): [count, D]."""
    dim = previous.shape[1]
    if previous.shape[0] + count > dim:
        raise ConfigValueError(f"CODA-Prompt: {previous.shape[0] + count} components cannot be orthogonal in {dim} "
                               "dimensions: lower method.components_per_task (or use fewer tasks)")
    basis = [row for row in previous.double()]
    new = []
    while len(new) < count:
        vector = torch.randn(dim, generator=generator, dtype=torch.float64)
        for row in basis:
            vector = vector - (vector @ row) / (row @ row) * row
        if vector.norm() < 1e-6:   # drawn (nearly) inside the span: draw again, as the reference's redo
            continue
        vector = vector / vector.norm()
        basis.append(vector)
        new.append(vector)
    return torch.stack(new).to(previous.dtype) if new else previous.new_zeros((0, dim))


class PromptComponents(DynamicModule):
    """Per task: components [layers, n, L, width], keys [layers, n, d] and attention vectors [layers, n, d]."""

    def __init__(self, layers: int, per_task: int, length: int, width: int, query_dim: int):
        super().__init__()
        self.layers, self.per_task, self.length, self.width, self.query_dim = layers, per_task, length, width, query_dim
        self.components = torch.nn.ParameterList()
        self.keys = torch.nn.ParameterList()
        self.attention = torch.nn.ParameterList()
        # follows .to(): each task's components land on the module's device, the first task's too
        self.register_buffer("anchor", torch.empty(0), persistent=False)

    def adaptation(self, experience) -> None:
        if not self.training or int(experience.current_experience) < len(self.components):
            return
        for parameter in list(self.components) + list(self.keys) + list(self.attention):
            parameter.requires_grad_(False)
        made = {}
        for name, shape in (("components", (self.length * self.width,)), ("keys", (self.query_dim,)),
                            ("attention", (self.query_dim,))):
            existing = getattr(self, name)
            per_layer = []
            for layer in range(self.layers):
                previous = (torch.cat([p[layer].reshape(p.shape[1], -1) for p in existing]).detach().cpu()
                            if len(existing) else torch.zeros((0,) + shape))
                per_layer.append(orthonormal_extension(previous.float(), self.per_task))
            made[name] = torch.stack(per_layer)
        device = self.anchor.device
        self.components.append(torch.nn.Parameter(
            made["components"].view(self.layers, self.per_task, self.length, self.width).to(device)))
        self.keys.append(torch.nn.Parameter(made["keys"].to(device)))
        self.attention.append(torch.nn.Parameter(made["attention"].to(device)))

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All tasks' (components, keys, attention), [layers, M, ...] (earlier tasks' frozen)."""
        return (torch.cat(list(self.components), 1), torch.cat(list(self.keys), 1),
                torch.cat(list(self.attention), 1))


def ortho_penalty(rows: torch.Tensor) -> torch.Tensor:
    """mean((T T^T - I)^2) of rows T [M, D]."""
    gram = rows @ rows.t()
    return ((gram - torch.eye(len(rows), device=rows.device, dtype=rows.dtype)) ** 2).mean()


class CODAPrompt(KeyedPromptMethod):
    def __init__(self, backbone: Backbone, class_names: Sequence[str], components_per_task: int = 10,
                 length: int = 8, layers=None, ortho_weight: float = 0.0, classifier: str = "text",
                 context=None, labels=None, paper_blocks=PAPER_BLOCKS):
        zero_shot = "the run would be zero-shot CLIP"
        require_int("method.components_per_task", components_per_task, 1,
                    if_zero=f"no components make every prompt empty: {zero_shot}")
        require_int("method.length", length, 2, what="and even (half prefix keys, half prefix values)",
                    if_zero=f"prompts of no tokens insert nothing: {zero_shot}")
        if length % 2:
            raise ConfigValueError(f"method.length={length}: an even integer >= 2 (half prefix keys, half prefix "
                                   f"values), e.g. method.length={length + 1}")
        ortho_weight = require_number("method.ortho_weight", ortho_weight, what="(the reference: 0.0)")
        super().__init__(backbone, class_names, context, labels, classifier)
        used, self.scaled_from = resolve_block_lists("CODA-Prompt", {"layers": layers}, paper_blocks,
                                                     self.clip.image_layers)
        self.layers = used["layers"]
        if not self.layers:
            given = "method.layers=[]" if layers is not None else "method.paper_blocks.layers=[]"
            raise ConfigValueError(f"{given}: no block gets a prompt: {zero_shot}; give block indices in "
                                   f"0..{self.clip.image_layers - 1}, e.g. method.layers=[0], or method.layers=null "
                                   "(the paper's blocks, scaled)")
        query_dim = int(backbone.model.visual.output_dim)
        room = min(query_dim, length * self.clip.image_width)
        if components_per_task > room:
            raise ConfigValueError(f"method.components_per_task={components_per_task}: a task's components, keys and "
                                   f"attention vectors start orthonormal, and {components_per_task} cannot be in "
                                   f"{room} dimensions (this backbone's query width {query_dim}); give at most {room} "
                                   "(and fewer over many tasks: each task adds its own)")
        self.length, self.ortho_weight = length, ortho_weight
        self.pool = PromptComponents(len(self.layers), components_per_task, length, self.clip.image_width, query_dim)

    def prompt_weights(self, query: torch.Tensor, keys: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """alpha [B, M] = cos(q * A_m, K_m) for one block's keys / attention vectors [M, d]."""
        attended = F.normalize(query[:, None, :] * attention[None], dim=-1)     # [B, M, d]
        return (attended * F.normalize(keys, dim=-1)[None]).sum(-1)

    def prompt_inputs(self, query: torch.Tensor):
        prefixes = [None] * self.clip.image_layers
        terms = {}
        if not len(self.pool.components):
            return [], prefixes, terms
        components, keys, attention = self.pool.stacked()
        half = self.length // 2
        ortho = query.new_zeros(())
        for row, layer in enumerate(self.layers):
            alpha = self.prompt_weights(query, keys[row], attention[row])
            prompt = torch.einsum("bm,mlw->blw", alpha, components[row])
            prefixes[layer] = (prompt[:, :half], prompt[:, half:])
            if self.training and self.ortho_weight:
                ortho = ortho + ortho_penalty(keys[row]) + ortho_penalty(attention[row]) + \
                    ortho_penalty(components[row].flatten(1))
        if self.training and self.ortho_weight:
            terms["coda_ortho"] = self.ortho_weight * ortho
        return [], prefixes, terms

    def resolved_options(self) -> dict:
        return {"layers": list(self.layers), "image_blocks": self.clip.image_layers, "scaled_from": self.scaled_from}
