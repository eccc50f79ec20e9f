"""Speed and memory of every method: one training epoch and one evaluation pass.

    python bench/methods_speed.py --model tiny
    python bench/methods_speed.py --model vit_b32 --images 256 --classes 100 --device cuda

Random weights (timing only), random images at the model's input size, C class names "class i". Each
method runs in its own subprocess so its peak memory is its own: peak RSS on CPU, peak CUDA memory on a
GPU. Training uses batch 32 for every method (so the numbers compare), SGD, the method's own loss terms;
evaluation uses batch 256 under inference mode (bf16 autocast on CUDA). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

METHODS = ["zeroshot", "coop", "cocoop", "vpt_shallow", "vpt_deep", "maple", "lamm", "coop_lamm", "maple_lamm",
           "cls_tuning", "full_prompt_tuning", "linear_probe", "tenc_ft", "l2p", "dualprompt", "coda_prompt",
           "sprompts", "attriclip"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def measure(args, method_name: str, queue) -> None:
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from clprompt.stages import scenario_templates
    from clprompt.training.strategy import autocast_dtype

    torch.manual_seed(0)
    device = torch.device(args.device)
    overrides = [f"model={args.model}", f"method={method_name}", "model.pretrained=null"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    backbone = instantiate(cfg.model)
    # the methods scale the papers' block lists and depths to the tower themselves (clprompt/parts/blocks.py)
    names = [f"class {i}" for i in range(args.classes)]
    method = instantiate(cfg.method, backbone=backbone, class_names=names,
                         **scenario_templates(cfg, {})).to(device)
    size = backbone.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    images = torch.randn(args.images, 3, size, size)
    labels = torch.arange(args.images) % args.classes
    amp = autocast_dtype(device, "auto")

    def autocast():
        return torch.autocast(device.type, dtype=amp, enabled=amp is not None)

    for module in method.modules():  # the classes of "one experience": all of them
        if hasattr(module, "adaptation") and module is not method:
            module.train()
            module.adaptation(type("Experience", (), {"classes_in_this_experience": list(range(args.classes)),
                                                      "current_experience": 0})())
    method.set_candidate_classes(range(args.classes))
    parameters = method.trainable_parameters()
    optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9) if parameters else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    train_seconds = float("nan")

    def train_step(start: int, update: bool = True) -> None:
        x, y = images[start:start + 32].to(device), labels[start:start + 32].to(device)
        with autocast():
            logits = method(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y) + method.regularization(logits, y)
        optimizer.zero_grad()
        loss.backward()
        if update:
            optimizer.step()

    if optimizer is not None:
        method.train()
        for _ in range(args.warmup):   # untimed, no update: CUDA's first calls (context, handles, kernel choice)
            train_step(0, update=False)
        optimizer.zero_grad()
        sync()
        started = time.perf_counter()
        for start in range(0, args.images, 32):
            train_step(start)
        sync()
        train_seconds = time.perf_counter() - started
    method.eval()
    method.clear_text_cache()
    with torch.inference_mode(), autocast():
        for _ in range(args.warmup):
            method(images[:256].to(device))
    method.clear_text_cache()
    sync()
    started = time.perf_counter()
    with torch.inference_mode(), autocast():
        for start in range(0, args.images, 256):
            method(images[start:start + 256].to(device))
    sync()
    eval_seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"method": method_name, "train_img_s": args.images / train_seconds,
               "eval_img_s": args.images / eval_seconds, "peak_mb": peak_mb,
               "trainable": sum(p.numel() for p in parameters)})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps before timing (default: 1 on CUDA, whose first calls take seconds; 0 on CPU)")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 1 if args.device.startswith("cuda") else 0
    context = mp.get_context("spawn")
    rows = []
    for name in args.methods:
        queue = context.Queue()
        process = context.Process(target=measure, args=(args, name, queue))
        process.start()
        process.join()
        if process.exitcode != 0:
            print(f"{name}: failed (exit {process.exitcode})", file=sys.stderr)
            continue
        rows.append(queue.get())
    memory = "peak CUDA MB" if args.device.startswith("cuda") else "peak RSS MB"
    print(f"model={args.model}, {args.images} images, {args.classes} classes, device={args.device}, "
          f"{args.warmup} untimed warm-up step(s)\n")
    print(f"| method | trainable params | train img/s | eval img/s | {memory} |")
    print("|---|---|---|---|---|")
    for row in rows:
        train = "-" if row["train_img_s"] != row["train_img_s"] else f"{row['train_img_s']:.0f}"
        print(f"| {row['method']} | {row['trainable']:,} | {train} | {row['eval_img_s']:.0f} | {row['peak_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
