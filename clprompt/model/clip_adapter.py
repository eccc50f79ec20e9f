"""The one place that reaches into open_clip's CLIP modules.

Prompt methods build token embeddings themselves (learned context, learned labels) and need the text
tower from there on; later, visual prompts will need the image tower's blocks. Everything that names
an open_clip attribute lives here, so an open_clip upgrade touches this file only.

The text tower runs over a class set's prompts in chunks of at most ``text_chunk`` prompts (``train.text_chunk``,
set by ``configure_text_chunks``): a 1000-class set trains in bounded memory and a 21,000-class set runs at
all. Under grad with more than one chunk, each chunk's tower is checkpointed (its activations recomputed in
the backward), so one chunk's activations live at a time; one chunk, or no grad, is the plain forward.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import VisionTransformer
from torch.utils.checkpoint import checkpoint

from clprompt.errors import ConfigValueError, UnsupportedBackboneError

# train.text_chunk=auto: a chunk's activations are estimated as
#   TEXT_ACTIVATION_FACTOR x length x width x element size (x layers under grad: every block's are kept for the backward)
# per prompt. Measured on ViT-B/32's text tower (open_clip 3.3, torch 2.14, CPU, fp32): under grad the tensors saved
# for the backward (counted with saved-tensor hooks) are 16.1 x length x width x 4 bytes per block at lengths 8-77,
# the peak RSS of a forward + backward 17.6-20.5; without grad the peak is 12.2 per prompt over the whole tower
# (one block's transients at a time). The element size is the tower's weights' (fp32 under bf16 autocast: the
# estimate is then twice the activations, on the safe side).
TEXT_ACTIVATION_FACTOR = 20
TEXT_CHUNK_BUDGET_SHARE = 0.25         # a chunk's activations: this share of the memory available when the chunks are
                                       # configured (the device's free memory on CUDA, the machine's elsewhere)
TEXT_CHUNK_BUDGET_CPU = 1 << 30        # where the machine's available memory cannot be read
TEXT_CHUNK_SETTINGS = "auto (chunks from a memory budget), an integer >= 1 (prompts per chunk), or 0 / off (never chunk)"


def resolve_text_chunk(setting) -> Union[int, str]:
    """``train.text_chunk`` -> "auto", a chunk size >= 1, or 0 (never chunk)."""
    if setting == "auto":
        return "auto"
    if setting == "off" or setting is False:
        return 0
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 0:
        return setting
    raise ConfigValueError(f"train.text_chunk={setting!r}; choose {TEXT_CHUNK_SETTINGS}")


def text_chunk_budget(device) -> tuple[int, str]:
    """(bytes a chunk's activations may take, why) on ``device`` for ``train.text_chunk=auto``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * TEXT_CHUNK_BUDGET_SHARE), \
            f"{TEXT_CHUNK_BUDGET_SHARE:g} of the {free / 2 ** 30:.1f} GiB free on {device} when measured"
    try:
        import psutil

        available = psutil.virtual_memory().available
    except (ImportError, OSError):
        return TEXT_CHUNK_BUDGET_CPU, f"{TEXT_CHUNK_BUDGET_CPU / 2 ** 30:g} GiB ({device.type}; available memory unknown)"
    return int(available * TEXT_CHUNK_BUDGET_SHARE), \
        f"{TEXT_CHUNK_BUDGET_SHARE:g} of the {available / 2 ** 30:.1f} GiB available ({device.type}) when measured"


def configure_text_chunks(module: torch.nn.Module, setting, device) -> dict:
    """``train.text_chunk``: sets the chunking of every text tower in ``module`` (a method; for training and
    evaluation alike) and returns what results.json records."""
    chunk = resolve_text_chunk(setting)
    adapters = [m for m in module.modules() if isinstance(m, CLIPAdapter)]
    record = {"setting": setting, "prompts_per_chunk": chunk if chunk != "auto" else "auto"}
    if chunk == 0:
        record["reason"] = "off: every class set's prompts in one pass"
    budget, why = text_chunk_budget(device) if chunk == "auto" else (None, None)
    for adapter in adapters:
        adapter.text_chunk, adapter.text_chunk_budget = chunk, budget
    if chunk == "auto":
        record["budget_bytes"], record["reason"] = budget, f"auto: a chunk's activations within {why}"
        if adapters:
            full = adapters[0].context_length   # the longest prompts: the smallest chunks
            record[f"train_chunk_at_length_{full}"] = adapters[0].auto_chunk(full, grad=True)
            record[f"eval_chunk_at_length_{full}"] = adapters[0].auto_chunk(full, grad=False)
    elif chunk >= 1:
        record["reason"] = f"at most {chunk} prompts per pass (train.text_chunk={chunk})"
    return record


class CLIPAdapter(torch.nn.Module):
    """A frozen open_clip ``CLIP`` seen through the operations prompt methods need."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        if not isinstance(clip, CLIP):
            raise UnsupportedBackboneError(
                f"clprompt prompts open_clip's CLIP with its built-in text tower; got {type(clip).__name__} "
                "(CustomTextCLIP / CoCa / Hugging Face text towers are not supported)"
            )
        if clip.text_pool_type not in ("argmax", "eos"):
            raise UnsupportedBackboneError(f"text_pool_type={clip.text_pool_type!r}: prompts need EOT pooling")
        self.clip = clip

    # train.text_chunk (configure_text_chunks): "auto", a number of prompts per chunk, or 0 (never chunk); the
    # budget for auto in bytes (None: text_chunk_budget of the device of the first pass, then kept)
    text_chunk: Union[int, str] = "auto"
    text_chunk_budget = None

    def activation_bytes_per_prompt(self, length: int, grad: bool) -> int:
        """The estimated activation bytes of one prompt cut to ``length`` through the text tower
        (every block's kept under grad, one block's at a time without)."""
        transformer = self.clip.transformer
        element = torch.finfo(transformer.get_cast_dtype()).bits // 8
        layers = len(transformer.resblocks) if grad else 1
        return TEXT_ACTIVATION_FACTOR * length * int(transformer.width) * element * layers

    def auto_chunk(self, length: int, grad: bool, device=None) -> int:
        """train.text_chunk=auto: the most prompts of ``length`` tokens whose activations fit the budget (>= 1)."""
        if self.text_chunk_budget is None:
            self.text_chunk_budget = text_chunk_budget(device if device is not None else self.clip.logit_scale.device)[0]
        return max(1, self.text_chunk_budget // self.activation_bytes_per_prompt(length, grad))

    def prompts_per_chunk(self, n: int, length: int, grad: bool, device=None) -> int:
        """How many of ``n`` prompts one pass of the tower takes (``n``: one chunk, today's single pass)."""
        chunk = self.text_chunk
        if chunk == "auto":
            chunk = self.auto_chunk(length, grad, device)
        return n if chunk == 0 else max(1, min(n, int(chunk)))

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp of CLIP's learned temperature (scalar tensor)."""
        return self.clip.logit_scale.exp()

    @property
    def context_length(self) -> int:
        return int(self.clip.positional_embedding.shape[0])

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the end-of-text token of each prompt. tokens: [N, L] -> [N]."""
        if self.clip.text_pool_type == "argmax":
            return tokens.argmax(dim=-1)
        return (tokens == self.clip.text_eos_id).int().argmax(dim=-1)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Word embeddings of token ids. tokens: [N, L] -> [N, L, width]."""
        return self.clip.token_embedding(tokens)

    def encode_token_embeddings(self, embeddings: torch.Tensor, eot_positions: torch.Tensor,
                                deep_prompts=None, prompt_positions: torch.Tensor = None,
                                length: int = None) -> torch.Tensor:
        """Text features from word embeddings, not normalized. embeddings: [N, L, width] -> [N, embed_dim].

        The tower is causal and pools at EOT, so positions after the last EOT of the batch never reach an
        output: the sequence is cut there (``length``, the last EOT + 1; callers that know it per class
        set pass it, else it is read from ``eot_positions``, a host sync), which gives the same features
        as the full 77 tokens.
        deep_prompts[i] ([P, width], i >= 1) replaces the hidden states at ``prompt_positions`` ([N, P])
        before block i (MaPLe's deep text prompts); None entries leave them as they are.

        The N prompts go through the tower in chunks of at most ``prompts_per_chunk`` rows (train.text_chunk;
        the rows of ``eot_positions`` and ``prompt_positions`` with them, ``length`` and the deep prompts the
        same for every chunk), and the chunks' features are concatenated: each prompt's features depend on
        that prompt alone, so the result is the one-pass result. Under grad (``needs_grad``) with more than one
        chunk, each chunk runs under a non-reentrant activation checkpoint: its activations are dropped after its forward
        and recomputed in the backward, one chunk at a time.
        """
        if length is None:
            length = int(eot_positions.max()) + 1
        if deep_prompts is not None and not self.clip.transformer.batch_first:
            raise UnsupportedBackboneError("deep text prompts expect open_clip's batch-first transformer")
        tower = (self.compiled_text_tower if torch.is_grad_enabled() else None) or self.eager_text_tower
        grad = torch.is_grad_enabled() and self.needs_grad(embeddings, deep_prompts)
        n = embeddings.shape[0]
        chunk = self.prompts_per_chunk(n, length, grad, embeddings.device)
        if chunk >= n:
            return tower(embeddings, eot_positions, length, deep_prompts, prompt_positions)
        positions = prompt_positions.split(chunk) if prompt_positions is not None else [None] * -(-n // chunk)
        features = []
        for rows, eots, rows_positions in zip(embeddings.split(chunk), eot_positions.split(chunk), positions):
            if grad:
                features.append(checkpoint(tower, rows, eots, length, deep_prompts, rows_positions, use_reentrant=False))
            else:
                features.append(tower(rows, eots, length, deep_prompts, rows_positions))
        return torch.cat(features)

    def needs_grad(self, embeddings: torch.Tensor, deep_prompts=None) -> bool:
        """Whether the text tower's output will need a backward: learned embeddings or deep prompts, or a trained
        text tower (text-encoder fine-tuning). Else (the names' features of LAMM's loss) no checkpoint is made."""
        return (embeddings.requires_grad or any(p is not None and p.requires_grad for p in deep_prompts or ())
                or any(p.requires_grad for p in self.clip.parameters()))

    # train.compile (clprompt.training.compiled_step) puts the compiled eager_text_tower here while a method trains
    compiled_text_tower = None

    def eager_text_tower(self, embeddings: torch.Tensor, eot_positions: torch.Tensor, length: int,
                         deep_prompts=None, prompt_positions: torch.Tensor = None) -> torch.Tensor:
        """The text tower from word embeddings cut to ``length``: tensors in, tensors out (what
        ``train.compile`` captures)."""
        clip = self.clip
        cast_dtype = clip.transformer.get_cast_dtype()
        x = embeddings[:, :length].to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
        mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        if deep_prompts is None:
            x = clip.transformer(x, attn_mask=mask)
        else:
            rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(prompt_positions)
            for index, block in enumerate(clip.transformer.resblocks):
                prompts = deep_prompts[index] if 0 < index < len(deep_prompts) else None
                if prompts is not None:
                    values = prompts.to(x.dtype)[None].expand(x.shape[0], -1, -1)
                    x = x.index_put((rows, prompt_positions), values)
                x = block(x, attn_mask=mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_positions]
        if clip.text_projection is not None:
            x = clip.text_projection(x) if isinstance(clip.text_projection, torch.nn.Linear) else x @ clip.text_projection
        return x

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalized text features of tokenized prompts. tokens: [N, L] -> [N, embed_dim]."""
        features = self.encode_token_embeddings(self.embed_tokens(tokens), self.eot_positions(tokens))
        return F.normalize(features, dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized image features. images: [B, 3, H, W] -> [B, embed_dim]."""
        return F.normalize(self.clip.encode_image(images), dim=-1)

    def require_vit(self, what: str) -> None:
        if not isinstance(self.clip.visual, VisionTransformer):
            raise UnsupportedBackboneError(
                f"{what} needs a ViT image tower, but this backbone's is a {type(self.clip.visual).__name__} "
                "(a ResNet): choose a ViT model, e.g. model=vit_b16, model=vit_b32 or model=miniclip"
            )

    @property
    def image_width(self) -> int:
        return int(self.clip.visual.transformer.width)

    @property
    def image_layers(self) -> int:
        return len(self.clip.visual.transformer.resblocks)

    def encode_image_with_prompts(self, images: torch.Tensor, layer_prompts, prefixes=None) -> torch.Tensor:
        """Normalized image features with visual prompt tokens. images: [B, 3, H, W] -> [B, embed_dim].

        layer_prompts[i]: [P, width] tokens (the same for every image) or [B, P, width] (each image its own:
        prompts selected per image from a pool) appended to the input of block i, replacing the prompt
        outputs of the block before (VPT deep); None keeps the previous prompts' outputs (VPT shallow gives
        only block 0). Block 0's prompts are concatenated to the class and patch tokens (after the positional
        embedding, which prompts do not get) *before* ln_pre, as in VPT and MaPLe's reference code;
        ln_pre is per-token, so normalising them on their own and then concatenating is exact. Deeper
        prompts enter the block as they are. Prompt outputs are dropped before pooling.

        prefixes[i]: None or (keys, values), each [B, Lp, width] (prefix tuning, DualPrompt's and
        CODA-Prompt's insertion): block i's attention attends over Lp extra keys / values, concatenated
        to the tokens' own after the in-projection (as the official code concatenates them to k and v);
        the queries, and so the number of tokens, stay the same.
        """
        self.require_vit("visual prompting")
        visual = self.clip.visual
        x = visual._embeds(images)
        n_tokens = x.shape[1]
        if not visual.transformer.batch_first:
            raise UnsupportedBackboneError("visual prompting expects open_clip's batch-first transformer")
        prefixes = prefixes or ()
        for index, block in enumerate(visual.transformer.resblocks):
            prompts = layer_prompts[index] if index < len(layer_prompts) else None
            if prompts is not None:
                if index == 0:
                    prompts = visual.ln_pre(prompts)
                prompts = prompts.to(x.dtype)
                if prompts.dim() == 2:
                    prompts = prompts[None].expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :n_tokens], prompts], dim=1)
            prefix = prefixes[index] if index < len(prefixes) else None
            x = block(x) if prefix is None else self.prefix_block(block, x, *prefix)
        pooled, _ = visual._pool(x[:, :n_tokens])
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return F.normalize(pooled, dim=-1)

    @staticmethod
    def prefix_block(block, x: torch.Tensor, prefix_keys: torch.Tensor, prefix_values: torch.Tensor) -> torch.Tensor:
        """open_clip's ``ResidualAttentionBlock`` with prefix keys / values ([B, Lp, width]) in its attention:
        q, k, v = in_proj(ln_1(x)); k <- [prefix_keys; k], v <- [prefix_values; v]; then the block as it is."""
        attention = block.attn
        if type(block).__name__ != "ResidualAttentionBlock" or not attention.batch_first \
                or attention.in_proj_weight is None:
            raise UnsupportedBackboneError("prefix prompts expect open_clip's ResidualAttentionBlock with a packed, "
                                           f"batch-first attention; this tower's block is {type(block).__name__}")
        batch, tokens, width = x.shape
        heads = attention.num_heads
        q, k, v = F.linear(block.ln_1(x), attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
        k = torch.cat([prefix_keys.to(k.dtype), k], dim=1)
        v = torch.cat([prefix_values.to(v.dtype), v], dim=1)

        def split(t):   # [B, L, width] -> [B, heads, L, width / heads]
            return t.view(batch, t.shape[1], heads, width // heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split(q), split(k), split(v))
        attended = attention.out_proj(attended.transpose(1, 2).reshape(batch, tokens, width))
        x = x + block.ls_1(attended)
        return x + block.ls_2(block.mlp(block.ln_2(x)))
