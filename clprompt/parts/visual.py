"""Visual prompt parts: learned tokens in the image tower (VPT, Jia et al. 2022, on CLIP's ViT)."""

from __future__ import annotations

from typing import Optional

import torch

from clprompt.config_check import require_choice, require_int
from clprompt.errors import ConfigValueError


class VisualPrompts(torch.nn.Module):
    """``length`` learned tokens for each of the first ``depth`` blocks of the image tower.

    depth 1 is VPT shallow; depth null (all blocks) or any depth > 1 is VPT deep, where each block's
    prompt outputs are dropped and replaced by that block's own prompts. init: 'normal' (N(0, 0.02),
    as the MaPLe authors' deep vision prompting) or 'xavier' (Xavier uniform, the original VPT). length is at
    least 1: prompts of no tokens would leave the frozen image tower (zero-shot CLIP under VPT's name).
    """

    def __init__(self, length: int = 8, depth: Optional[int] = 1, init: str = "normal"):
        super().__init__()
        require_choice("method.visual.init", init, {"normal": "N(0, 0.02)", "xavier": "the original VPT's"})
        require_int("method.visual.length", length, 1,
                    if_zero="prompts of no tokens insert nothing: the run would be zero-shot CLIP")
        if depth is not None:
            require_int("method.visual.depth", depth, 1, if_zero="no block gets prompts: the run would be zero-shot "
                        "CLIP", what="(the prompted blocks; null: every block)")
        self.length, self.requested_depth, self.init = length, depth, init

    def bind(self, clip) -> None:
        clip.require_vit("VPT")
        layers = clip.image_layers
        if self.requested_depth is not None and self.requested_depth > layers:
            raise ConfigValueError(f"method.visual.depth={self.requested_depth}, but the image tower has {layers} "
                                   f"blocks: give a depth in 1..{layers}, or null (every block)")
        self.depth = layers if self.requested_depth is None else self.requested_depth
        prompts = torch.empty(self.depth, self.length, clip.image_width)
        if self.init == "normal":
            torch.nn.init.normal_(prompts, std=0.02)
        else:
            for layer in prompts:
                torch.nn.init.xavier_uniform_(layer)
        self.prompts = torch.nn.Parameter(prompts)

    def layer_prompts(self) -> list[torch.Tensor]:
        return list(self.prompts)
