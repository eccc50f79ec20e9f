"""Prompt pools: prompts chosen per image by matching a query against learned keys.

The continual-learning prompt methods (L2P, DualPrompt, CODA-Prompt) share one mechanism: the frozen
image tower's feature of an image is its *query*; learned keys are compared with it by cosine
similarity, and the best-matching prompts (or a mixture weighted by the similarities, CODA-Prompt's)
are inserted into the image tower for that image. On CLIP the query is the frozen tower's normalized
image feature (after ``ln_post`` and the projection), where the originals, on an ImageNet ViT, take the
pre-logits [CLS] feature (after the final norm): CLIP's projection has no counterpart there, and its
output is what CLIP's own classifier reads. Cosine similarity ignores the norm either way.

Selection is per image: an image's prompts depend on that image alone. (The L2P and DualPrompt
reference code can instead take the prompts most often chosen in the *batch* at test time, letting
test images inform each other; clprompt does not offer it.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clprompt.config_check import require_int
from clprompt.errors import ConfigValueError


def query_features(clip, images: torch.Tensor) -> torch.Tensor:
    """The queries: the frozen image tower's normalized features, without gradients. [B, 3, H, W] -> [B, d]."""
    with torch.no_grad():
        return clip.encode_image(images).float()


def cosine(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[B, d] x [M, d] -> [B, M] cosine similarities."""
    return F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).t()


def uniform_(tensor: torch.Tensor) -> torch.Tensor:
    """U(-1, 1), the L2P / DualPrompt reference's init of prompts and keys (``prompt_init=uniform``)."""
    return torch.nn.init.uniform_(tensor, -1.0, 1.0)


class PromptPool(torch.nn.Module):
    """L2P's pool: ``size`` prompts of ``length`` tokens, each with a key; each image takes the
    ``top_k`` prompts whose keys are most similar to its query, concatenated ([B, top_k * length, width]).

    The pool is shared by every task and keeps training (L2P freezes nothing). size, length and top_k are at
    least 1: an empty pool (size 0), top_k 0 or length 0 would insert nothing, leaving the frozen image tower
    (zero-shot CLIP under L2P's name), so they are refused.
    """

    def __init__(self, size: int = 10, length: int = 5, top_k: int = 5):
        super().__init__()
        zero_shot = "the run would be zero-shot CLIP"
        require_int("method.pool.size", size, 1, if_zero=f"an empty pool inserts nothing: {zero_shot}")
        require_int("method.pool.length", length, 1, if_zero=f"prompts of no tokens insert nothing: {zero_shot}")
        require_int("method.pool.top_k", top_k, 1,
                    if_zero=f"an image that takes no prompt from the pool is the frozen tower's: {zero_shot}")
        if top_k > size:
            raise ConfigValueError(f"method.pool.top_k={top_k} is larger than method.pool.size={size}: an image "
                                   "cannot take more prompts than the pool holds; lower top_k or grow the pool")
        self.size, self.length, self.top_k = size, length, top_k

    def bind(self, clip) -> None:
        clip.require_vit("a prompt pool")
        query_dim = int(clip.clip.visual.output_dim)
        self.keys = torch.nn.Parameter(uniform_(torch.empty(self.size, query_dim)))
        self.prompts = torch.nn.Parameter(uniform_(torch.empty(self.size, self.length, clip.image_width)))

    def select(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, the ``top_k`` best keys: (indices [B, top_k], their cosine similarities [B, top_k])."""
        similarity = cosine(query, self.keys)
        similarities, indices = similarity.topk(self.top_k, dim=1)
        return indices, similarities

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The chosen prompts of each image, concatenated: [B, top_k] -> [B, top_k * length, width]."""
        return self.prompts[indices].flatten(1, 2)
