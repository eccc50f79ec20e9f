"""Training views per second, three ways, one invocation: per image in PIL (the loader's path), the
Pillow-exact batches on the device (``data.batch_transforms``), and torchvision.transforms.v2 on the uint8
batch (the alternative); the batches' equality with PIL, and how far v2's views are from PIL's.

    python bench/transform_speed.py                          # CPU, torch's default thread count
    python bench/transform_speed.py --threads 1,2 --images 256 --repeats 7
    python bench/transform_speed.py --device cuda            # the batches on the GPU (the PIL path is CPU either way)

Data: CIFAR-100-shaped random images (32 px RGB) and Fashion-MNIST-shaped ones (28 px gray), transformed
for ViT-B/16 (224 px) with CoOp's recipe (random resized crop 0.08-1, flip) and open_clip's evaluation
transform (resize, centre crop); and the sandbox case, 32 px to the mini-CLIP's 32 px with open_clip's train
transform. The PIL path is timed in the main process (``data.num_workers=0``; workers multiply it by at
most the cores).

The v2 path takes the same random draws (crop boxes, flip coins, drawn by torchvision from the generator
seeded by (seed, sample, view)) and applies ``torchvision.transforms.v2.functional``: ``resized_crop`` per
image (each image has its own box), ``resize`` on the whole batch (a deterministic resize), ``center_crop``,
the flips, then ``to_dtype(float32, scale=True)`` and ``normalize``; antialias on, the transform's own
interpolation. Its input is the uint8 batch as the batched path holds it ([B, H, W, 3] viewed as
[B, 3, H, W], channels-last).

Repeats are interleaved (each repeat times every thread count and every path, the paths' order rotated;
an untimed round first),
so a load that comes and goes touches all of them; the table gives medians, the ratios are medians of the
per-repeat ratios. Every batched view is compared with the PIL one (``torch.equal``); for v2 the largest
absolute difference after normalisation, the same in uint8 levels (before normalisation), and the fraction
of values (pixel x channel) that differ, at all and by 2 levels or more. The ratios come with their range
over the repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from open_clip.transform import image_transform
from torchvision import transforms
from torchvision.transforms.v2 import functional as F

from clprompt.data.augmentation import SampleViews, base_transform
from clprompt.data.image_batches import BatchTransform, _pair, _size_list


class Backbone:
    def __init__(self, size: int):
        self.train_transform = image_transform(size, is_train=True)
        self.eval_transform = image_transform(size, is_train=False)
        self.model = type("M", (), {"visual": type("V", (), {"image_size": size, "preprocess_cfg": {}})()})()


class V2Batch:
    """The views of ``BatchTransform`` (its steps and its draws) computed by torchvision.transforms.v2 on
    the uint8 batch: the alternative to the Pillow-exact resampling. Not exact (see the bench's output)."""

    def __init__(self, batched: BatchTransform):
        self.batched = batched

    def __call__(self, pixels: torch.Tensor, view_indices: np.ndarray, view: int = 0) -> torch.Tensor:
        batch, height, width = pixels.shape[:3]
        draws = self.batched._draws(view_indices, view, height, width)
        images = pixels.permute(0, 3, 1, 2)   # uint8 [B, 3, H, W], channels-last, no copy
        drawn = 0
        for step in self.batched.geometry:
            if isinstance(step, transforms.RandomResizedCrop):
                size = list(_pair(step.size))
                images = torch.stack([
                    F.resized_crop(images[b], *d[drawn], size=size, interpolation=step.interpolation, antialias=True)
                    for b, d in enumerate(draws)])
                drawn += 1
            elif isinstance(step, transforms.Resize):
                images = F.resize(images, _size_list(step.size), interpolation=step.interpolation, antialias=True)
            elif isinstance(step, transforms.CenterCrop):
                images = F.center_crop(images, list(_pair(step.size)))
            elif isinstance(step, transforms.RandomHorizontalFlip):
                flips = torch.from_numpy(np.flatnonzero([d[drawn] for d in draws])).to(images.device)
                drawn += 1
                images = images.clone()
                images[flips] = images[flips].flip(-1)
        images = F.to_dtype(images, torch.float32, scale=True)
        normalize = self.batched.normalize
        if normalize is not None:
            images = F.normalize(images, mean=list(normalize.mean), std=list(normalize.std))
        return images.contiguous()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", default=None,
                        help="torch thread counts, comma-separated (e.g. 1,2); default: torch's own")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats per case")
    parser.add_argument("--cases", default=None, help="only the cases whose name contains one of these "
                                                      "comma-separated words (e.g. sandbox,eval)")
    args = parser.parse_args()
    device = torch.device(args.device)
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    machine = torch.cuda.get_device_name(0) if device.type == "cuda" else \
        f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    import PIL
    import torchvision
    print(f"machine: {machine}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"Pillow {PIL.__version__}; torch threads {thread_counts}; {args.images} images, batch {args.batch}, "
          f"{args.repeats} repeats; load average {os.getloadavg()}", flush=True)
    rng = np.random.default_rng(0)
    cases = [("sandbox 32 px -> 32, model", (32, 32, 3), 32, "model"),
             ("CIFAR 32 px -> 224, coop", (32, 32, 3), 224, "coop"),
             ("CIFAR 32 px -> 224, eval", (32, 32, 3), 224, "none"),
             ("FMNIST 28 px gray -> 224, coop", (28, 28), 224, "coop")]
    if args.cases:
        cases = [case for case in cases if any(word in case[0] for word in args.cases.split(","))]
    from scenarios.array_dataset import ArrayImageDataset
    rows, checks = [], []
    for name, shape, size, kind in cases:
        pixels = rng.integers(0, 256, (args.images, *shape), dtype=np.uint8)
        views = SampleViews(base_transform(kind, Backbone(size)), kind, seed=0, n_views=10, random=kind != "none")
        dataset = ArrayImageDataset(pixels, [0] * args.images, views)
        views.set_epoch(1)
        batched = BatchTransform(views)
        v2 = V2Batch(batched)
        decoded = dataset.decoded()
        on_device = torch.from_numpy(decoded.rgb()).to(device)
        index = decoded.view_index

        def run_pil():
            return torch.stack([dataset[i][0] for i in range(args.images)])

        def run_batches(transform):
            def run():
                out = [transform(on_device[i:i + args.batch], index[i:i + args.batch], 1)
                       for i in range(0, args.images, args.batch)]
                synchronize(device)
                return torch.cat(out).cpu()
            return run

        paths = {"pil": run_pil, "exact": run_batches(batched), "v2": run_batches(v2)}
        for transform in (batched, v2):   # warm-up (CUDA context, kernels)
            transform(on_device[:8], index[:8], 1)
        synchronize(device)
        expected = run_pil()
        exact_equal = torch.equal(paths["exact"](), expected)
        got = paths["v2"]()
        difference = (got - expected).abs()
        std = torch.tensor(batched.normalize.std).view(1, 3, 1, 1)
        levels = ((got - expected) * std * 255).abs().round()   # the difference in uint8 levels
        checks.append((name, exact_equal, float(difference.max()), int(levels.max()),
                       float((difference > 0).float().mean()), float((levels >= 2).float().mean())))
        rates = {(t, p): [] for t in thread_counts for p in paths}
        order = list(paths)
        for repeat in range(-1, args.repeats):   # repeat -1: untimed, warms each thread count's pool
            for threads in thread_counts:
                torch.set_num_threads(threads)
                for path in order[repeat % 3:] + order[:repeat % 3]:
                    start = time.perf_counter()
                    paths[path]()
                    if repeat >= 0:
                        rates[threads, path].append(args.images / (time.perf_counter() - start))
        for threads in thread_counts:
            r = {p: rates[threads, p] for p in paths}
            med = {p: statistics.median(v) for p, v in r.items()}
            def ratio(a, b):   # the median of the paired ratios, and their range
                ratios = [x / y for x, y in zip(r[a], r[b])]
                return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
            rows.append((name, threads, med["pil"], med["exact"], med["v2"],
                         ratio("exact", "pil"), ratio("v2", "pil"), ratio("exact", "v2")))
        print(f"  done: {name}; load average {os.getloadavg()}", flush=True)
    print()
    print("| case | torch threads | PIL per image img/s | Pillow-exact batched img/s | v2 batched img/s "
          "| exact / PIL (range) | v2 / PIL (range) | exact / v2 (range) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, threads, pil, exact, v2_rate, e_p, v_p, e_v in rows:
        print(f"| {name} | {threads} | {pil:.0f} | {exact:.0f} | {v2_rate:.0f} | {e_p} | {v_p} | {e_v} |")
    print()
    print("| case | Pillow-exact equal to PIL | v2: largest abs. difference (normalised) | v2: in uint8 levels "
          "| v2: values differing | v2: by 2 levels or more |")
    print("|---|---|---|---|---|---|")
    for name, equal, largest, levels, fraction, large in checks:
        print(f"| {name} | {equal} | {largest:.4f} | {levels} | {100 * fraction:.1f} % | {100 * large:.4f} % |")


if __name__ == "__main__":
    main()
