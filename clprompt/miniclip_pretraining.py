"""The mini-CLIP's contrastive pretraining on the sandbox world (``python -m clprompt.pretrain`` runs it).

A small open_clip ``CLIP`` (the architecture of ``configs/model/miniclip.yaml``) learns from captioned
scenes rendered on the fly. The loss is a label-aware InfoNCE: a caption and an image are positives
whenever every attribute the caption names matches the image (plain CLIP loss would call the many
in-batch duplicates, "a red star" twice, negatives). The output is an ordinary open_clip checkpoint
(fp16 safetensors) that loads through ``model.pretrained=<file>`` like real CLIP weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file
from tqdm.auto import tqdm

from clprompt.model.backbone import load_backbone, sha256_of_file
from clprompt.model.clip_adapter import CLIPAdapter
from clprompt.methods.zeroshot import ZeroShot
from clprompt.stages import resolve_device, seed_everything
from scenarios.sandbox.pretraining import CaptionedScenes
from scenarios.sandbox.tasks import colour_shape_task, render_split
from scenarios.sandbox.world import caption_matches

log = logging.getLogger("clprompt.pretrain")

OPENAI_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [B, S, S, 3] -> normalized float [B, 3, S, S], as open_clip's eval transform does it."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255)
    return (x - OPENAI_MEAN) / OPENAI_STD


def label_aware_infonce(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                        positives: torch.Tensor) -> torch.Tensor:
    """Soft-target contrastive loss. features: [B, D] normalized; positives: [B captions, B images] bool
    with a true diagonal. Each image's target spreads evenly over the captions that describe it, and
    each caption's over the images it describes."""
    logits_per_text = logit_scale * text_features @ image_features.t()
    target_per_text = positives.float() / positives.sum(dim=1, keepdim=True)
    target_per_image = positives.t().float() / positives.t().sum(dim=1, keepdim=True)
    loss_text = -(target_per_text * F.log_softmax(logits_per_text, dim=1)).sum(dim=1).mean()
    loss_image = -(target_per_image * F.log_softmax(logits_per_text.t(), dim=1)).sum(dim=1).mean()
    return (loss_text + loss_image) / 2


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on gains, biases, embeddings or the temperature. Token
    embeddings of words the corpus never uses get no gradient and keep their initial values."""
    no_decay_names = ("token_embedding", "positional_embedding", "class_embedding", "logit_scale")
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.ndim < 2 or any(key in name for key in no_decay_names):
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


@torch.inference_mode()
def zeroshot_colour_shape(backbone, device: torch.device, per_class: int = 20, seed: int = 12345,
                          batch_size: int = 500) -> dict:
    """Zero-shot top-1 (%) over the 100 colour-shape classes, clean style, split into the pairs seen in
    pretraining and the held-out ones."""
    task = colour_shape_task()
    images, labels = render_split(task, per_class, seed)
    method = ZeroShot(backbone, task.class_names).to(device).eval()
    predictions = torch.cat([method(to_model_input(chunk).to(device)).argmax(dim=1).cpu()
                             for chunk in np.array_split(images, max(1, len(images) // batch_size))])
    correct = (predictions.numpy() == labels)
    held_out = np.isin(labels, task.notes["held_out_classes"])
    return {"seen": 100 * correct[~held_out].mean(), "held_out": 100 * correct[held_out].mean(),
            "all": 100 * correct.mean(), "chance": 100 / len(task.class_names)}


def save_checkpoint(model: torch.nn.Module, path: Path) -> str:
    """The state dict in fp16 safetensors (what open_clip.load_checkpoint reads); returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to(torch.float16).contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path))
    return sha256_of_file(str(path))


def pretrain(cfg: DictConfig, run_dir: Path) -> dict:
    started = time.time()
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    backbone = load_backbone(cfg.model.arch, pretrained=None, config=cfg.model.config)
    model = backbone.model.to(device).train().requires_grad_(True)
    adapter = CLIPAdapter(model)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    corpus = CaptionedScenes(cfg.seed, cfg.steps, cfg.batch_size, cfg.model.config.vision_cfg.image_size,
                             tokenizer=backbone.tokenizer)
    loader = torch.utils.data.DataLoader(corpus, batch_size=None, num_workers=cfg.num_workers,
                                         persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    history = []
    bar = tqdm(loader, total=cfg.steps, desc="pretraining", unit="step", disable=None)   # no bar without a terminal
    for step, (images, tokens, named, attributes) in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg.steps, cfg.lr, cfg.warmup_steps)
        positives = torch.as_tensor(caption_matches(np.asarray(named), np.asarray(attributes)))
        tokens = tokens.to(device)
        with amp:
            image_features = F.normalize(model.encode_image(to_model_input(images).to(device)), dim=-1)
            text_features = F.normalize(adapter.encode_token_embeddings(adapter.embed_tokens(tokens),
                                                                        adapter.eot_positions(tokens)), dim=-1)
            loss = label_aware_infonce(image_features.float(), text_features.float(), model.logit_scale.exp(),
                                       positives.to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()} at step {step}; lower lr (now {cfg.lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        history.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(history[-25:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    bar.close()
    train_seconds = time.time() - started
    model.eval().requires_grad_(False)
    output = Path(cfg.output) if cfg.output else run_dir / "miniclip.safetensors"
    sha256 = save_checkpoint(model, output)
    reloaded = load_backbone(cfg.model.arch, pretrained=str(output), config=cfg.model.config)
    accuracy = zeroshot_colour_shape(reloaded, device)
    summary = {
        "checkpoint": str(output), "sha256": sha256, "bytes": output.stat().st_size,
        "pretraining_seconds": round(train_seconds, 1), "device": str(device), "threads": torch.get_num_threads(),
        "final_loss": float(np.mean(history[-25:])), "zeroshot_clean_100_classes": accuracy,
        "recipe": OmegaConf.to_container(cfg, resolve=True),
    }
    (run_dir / "pretrain.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "recipe"}, indent=2))
    return summary
