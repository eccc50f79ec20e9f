"""The sandbox's quality bars, measured: python bench/sandbox_quality.py [model overrides ...]

1. zero-shot mini-CLIP over the 100 colour-shape classes, clean style: compositions seen in pretraining
   and the held-out ones;
2. on every single-task sandbox dataset (test split): zero-shot, and a linear probe on frozen image
   features trained on 16 shots per class (weight decay chosen on the valid split).

Overrides are Hydra overrides of the model group, e.g. ``model.pretrained=/tmp/other.safetensors``.
Prints a markdown table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from clprompt.methods.zeroshot import ZeroShot
from clprompt.pretrain import to_model_input, zeroshot_colour_shape
from scenarios.sandbox.pretraining import captioned_batch
from scenarios.sandbox.tasks import sandbox_stream

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SINGLE_TASKS = ["shapes_lowcontrast", "shapes_textured", "shapes_palette", "shapes_fine", "shapes_novel"]


def split_arrays(stream, split: str):
    """(images uint8 [N, S, S, 3], labels [N]) of the one experience of a single-task stream."""
    dataset = getattr(stream.benchmark, f"{split}_stream")[0].dataset  # untransformed: items are PIL images
    images = np.stack([np.asarray(dataset[i][0]) for i in range(len(dataset))])
    labels = np.array([int(dataset[i][1]) for i in range(len(dataset))])
    return images, labels


@torch.inference_mode()
def image_features(backbone, images: np.ndarray, batch_size: int = 1000) -> torch.Tensor:
    model = backbone.model
    chunks = [model.encode_image(to_model_input(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


def few_shot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in np.unique(labels)])


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, n_classes: int, weight_decay: float,
                            steps: int = 100) -> torch.nn.Linear:
    """Multinomial logistic regression by L-BFGS with an L2 penalty on the weights."""
    head = torch.nn.Linear(features.shape[1], n_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features), labels) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def linear_probe(train_x, train_y, valid_x, valid_y, test_x, test_y, n_classes: int) -> tuple[float, float]:
    """Test accuracy (%) of the probe whose weight decay is best on valid; returns (accuracy, weight decay)."""
    best = None
    for weight_decay in (1e-4, 1e-3, 1e-2):
        head = fit_logistic_regression(train_x * 10, train_y, n_classes, weight_decay)
        with torch.no_grad():
            valid_accuracy = (head(valid_x * 10).argmax(1) == valid_y).float().mean().item()
        if best is None or valid_accuracy > best[0]:
            best = (valid_accuracy, weight_decay, head)
    with torch.no_grad():
        test_accuracy = (best[2](test_x * 10).argmax(1) == test_y).float().mean().item()
    return 100 * test_accuracy, best[1]


def evaluate_task(backbone, task: str, shots: int, seed: int) -> dict:
    stream = sandbox_stream(task)
    arrays = {split: split_arrays(stream, split) for split in ("train", "valid", "test")}
    features = {split: image_features(backbone, images) for split, (images, _) in arrays.items()}
    labels = {split: torch.as_tensor(y) for split, (_, y) in arrays.items()}
    method = ZeroShot(backbone, stream.class_names).eval()
    with torch.inference_mode():
        text = method.class_text_features(range(len(stream.class_names)))
    zeroshot = 100 * (features["test"] @ text.t()).argmax(1).eq(labels["test"]).float().mean().item()
    chosen = torch.as_tensor(few_shot_indices(arrays["train"][1], shots, seed))
    probe, weight_decay = linear_probe(features["train"][chosen], labels["train"][chosen], features["valid"],
                                       labels["valid"], features["test"], labels["test"], len(stream.class_names))
    return {"task": task, "classes": len(stream.class_names), "style": stream.description["style"],
            "chance": 100 / len(stream.class_names), "zeroshot": zeroshot, f"linear_probe_{shots}shot": probe,
            "probe_weight_decay": weight_decay, "test_images": len(labels["test"])}


def generation_speed(n_batches: int = 8, batch_size: int = 512) -> float:
    """Captioned pretraining scenes per second, in this process (one core)."""
    started = time.perf_counter()
    for index in range(n_batches):
        captioned_batch(0, index, batch_size)
    return n_batches * batch_size / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the model, e.g. model.pretrained=FILE")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.time()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=miniclip", *args.overrides])
    torch.manual_seed(args.seed)
    backbone = instantiate(cfg.model)
    clean = zeroshot_colour_shape(backbone, torch.device("cpu"))
    rows = [evaluate_task(backbone, task, args.shots, args.seed) for task in SINGLE_TASKS]
    probe_key = f"linear_probe_{args.shots}shot"
    print(f"weights: {backbone.identity.get('pretrained')} (sha256 {backbone.identity.get('sha256', '-')[:16]}...)")
    print(f"\nzero-shot, clean style, 100 colour-shape classes (chance {clean['chance']:.1f} %): "
          f"seen compositions {clean['seen']:.1f} %, held-out compositions {clean['held_out']:.1f} %\n")
    print(f"| task | style | classes | chance % | zero-shot % | {args.shots}-shot linear probe % |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['task']} | {row['style']} | {row['classes']} | {row['chance']:.1f} | {row['zeroshot']:.1f} | "
              f"{row[probe_key]:.1f} |")
    print(f"\ngeneration: {generation_speed():.0f} captioned scenes/s on one core")
    print(f"({time.time() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"clean": clean, "tasks": rows, "weights": backbone.identity}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
