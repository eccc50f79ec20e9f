"""Training views per second: per image in PIL (the loader's path) against batches on the device
(``data.batch_transforms``), one invocation, and their equality.

    python bench/transform_speed.py                  # CPU
    python bench/transform_speed.py --device cuda    # the batches on the GPU (the PIL path is CPU either way)

Data: CIFAR-100-shaped random images (32 px RGB) and Fashion-MNIST-shaped ones (28 px gray), transformed
for ViT-B/16 (224 px) with CoOp's recipe (random resized crop 0.08-1, flip) and open_clip's evaluation
transform (resize, centre crop); and the sandbox case, 32 px to the mini-CLIP's 32 px with open_clip's train
transform. The PIL path is timed in the main process (``data.num_workers=0``; workers multiply it by at
most the cores). Every batched view is compared with the PIL one (``torch.equal``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from open_clip.transform import image_transform

from clprompt.data.augmentation import SampleViews, base_transform
from clprompt.data.image_batches import BatchTransform


class Backbone:
    def __init__(self, size: int):
        self.train_transform = image_transform(size, is_train=True)
        self.eval_transform = image_transform(size, is_train=False)
        self.model = type("M", (), {"visual": type("V", (), {"image_size": size, "preprocess_cfg": {}})()})()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    machine = torch.cuda.get_device_name(0) if device.type == "cuda" else \
        f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    print(f"machine: {machine}; torch threads {torch.get_num_threads()}", flush=True)
    rng = np.random.default_rng(0)
    cases = [("CIFAR 32 px -> 224, coop", (32, 32, 3), 224, "coop"),
             ("CIFAR 32 px -> 224, eval", (32, 32, 3), 224, "none"),
             ("FMNIST 28 px gray -> 224, coop", (28, 28), 224, "coop"),
             ("sandbox 32 px -> 32, model", (32, 32, 3), 32, "model")]
    print("| case | PIL per image img/s | batched img/s | ratio | equal |")
    print("|---|---|---|---|---|")
    for name, shape, size, kind in cases:
        pixels = rng.integers(0, 256, (args.images, *shape), dtype=np.uint8)
        views = SampleViews(base_transform(kind, Backbone(size)), kind, seed=0, n_views=10, random=kind != "none")
        from scenarios.array_dataset import ArrayImageDataset
        dataset = ArrayImageDataset(pixels, [0] * args.images, views)
        views.set_epoch(1)
        start = time.perf_counter()
        expected = [dataset[i][0] for i in range(args.images)]
        pil_rate = args.images / (time.perf_counter() - start)
        batched = BatchTransform(views)
        decoded = dataset.decoded()
        on_device = torch.from_numpy(decoded.rgb()).to(device)
        batched(on_device[:8], decoded.view_index[:8], 1)   # warm-up (CUDA context, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = [batched(on_device[i:i + args.batch], decoded.view_index[i:i + args.batch], 1)
                   for i in range(0, args.images, args.batch)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        batch_rate = args.images / (time.perf_counter() - start)
        equal = torch.equal(torch.cat(outputs).cpu(), torch.stack(expected))
        print(f"| {name} | {pil_rate:.0f} | {batch_rate:.0f} | {batch_rate / pil_rate:.2f}x | {equal} |", flush=True)


if __name__ == "__main__":
    main()
