"""End-to-end training speed: today's path against the defaults (feature cache, loader settings), one invocation.

    python bench/train_speed.py                      # CPU: mini-CLIP, the sandbox's 10-experience palette stream
    python bench/train_speed.py --device cuda        # GPU: Split-CIFAR-100 (random pixels in the real layout), ViT-B/16

Each (method, path) is one ``python -m clprompt.run`` subprocess, as a user runs it. "today" is
``train.feature_cache=off data.num_workers=0 train.compile=off data.batch_transforms=off`` (every image through the
tower at every step and every evaluation, loading and transforming per image in the main process); "default" is the configs as shipped, with a cache folder of
its own that starts empty (a first run: nothing reused from earlier runs), and "default, warm" is the
same command again on that cache (the second run of a sweep over methods or seeds); ``--compile`` adds
on CPU the warm run with ``train.compile=on`` (on CUDA the default compiles already), ``--per-image`` a first
run with ``data.batch_transforms=off`` (the default's cache without the batched transforms). Prints per-run
train and eval seconds, training images per second, peak memory, the speed-up over today's path, the
largest difference between the two accuracy matrices, and the extrapolation to each method's recipe
(epochs scale the training time; evaluation does not change).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE_EPOCHS = {"zeroshot": 0, "coop": 50, "lamm": 50, "coop_lamm": 50, "vpt_deep": 5, "maple": 5, "cocoop": 10}


def write_random_cifar100(root: Path) -> None:
    """CIFAR-100 in torchvision's pickle layout with random pixels (timing only)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(100)], "coarse_label_names": []}, handle)
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 500), ("test", 100)):
        labels = np.repeat(np.arange(100), per_class)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as handle:
            pickle.dump({"data": data, "fine_labels": labels.tolist(), "coarse_labels": [0] * len(labels)}, handle)


def one_run(overrides: list[str], run_dir: Path, cache_dir: Path) -> dict:
    env = dict(os.environ, CLPROMPT_CACHE=str(cache_dir), HYDRA_FULL_ERROR="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clprompt.run", *overrides, f"hydra.run.dir={run_dir}",
                           "progress=false"], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"run failed: {' '.join(overrides)}\n{done.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    results["process_wall_s"] = wall
    return results


def summarize(results: dict) -> dict:
    timing = results["timing"]
    train_s = sum(t["train_s"] for t in timing)
    eval_s = sum(t["eval_s"] for t in timing)
    epochs = results["config"]["train"]["epochs"]
    images = sum(t["train_images"] for t in timing) * epochs
    memory = results["resources"]
    return {"train_s": train_s, "eval_s": eval_s, "wall_s": results["process_wall_s"],
            "img_per_s": images / train_s if train_s > 0 and images else float("nan"),
            "memory_mib": memory.get("peak_cuda_mib", memory["peak_rss_mib"]),
            "epochs": epochs, "n_experiences": len(timing),
            "cache": results["feature_cache"], "matrix": np.array(results["accuracy_matrix"], dtype=float)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--methods", default=None, help="comma-separated (default: zeroshot,coop,lamm on CPU; "
                                                         "lamm,coop,vpt_deep on CUDA)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per experience (CPU 10, CUDA 1)")
    parser.add_argument("--augmentation", default=None, help="train.augmentation (CPU: model, CUDA: coop)")
    parser.add_argument("--compile", action="store_true", help="CPU: also the warm run with train.compile=on "
                                                                 "(auto is on for CUDA only)")
    parser.add_argument("--per-image", action="store_true", help="also a first run with data.batch_transforms=off "
                                                                   "(the defaults' cache, per-image PIL transforms)")
    parser.add_argument("--work", default=None, help="folder for runs and caches (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="clprompt-bench-"))
    if args.device == "cpu":
        methods = (args.methods or "zeroshot,coop,lamm").split(",")
        epochs = args.epochs or 10
        common = ["scenario=shapes_palette", "scenario.n_experiences=10", "scenario.class_order_seed=1993",
                  "scenario.train_per_class=16", "model=miniclip", "device=cpu",
                  f"train.augmentation={args.augmentation or 'model'}"]
        machine = f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    else:
        import torch

        methods = (args.methods or "lamm,coop,vpt_deep").split(",")
        epochs = args.epochs or 1
        write_random_cifar100(work / "data")
        common = ["scenario=split_cifar", f"data.root={work / 'data'}", "model=vit_b16", "model.pretrained=null",
                  "device=cuda", f"train.augmentation={args.augmentation or 'coop'}"]
        machine = torch.cuda.get_device_name(0)
    if epochs <= 1:   # one epoch would be all warm-up (train.warmup_epochs=1), which a run refuses
        common.append("train.warmup_epochs=0")
    print(f"machine: {machine}; {' '.join(common)} train.epochs={epochs}", flush=True)
    # path -> (overrides, feature cache folder): "default, warm" reuses what "default" cached
    paths = {"today": (["train.feature_cache=off", "data.num_workers=0", "train.compile=off",
                        "data.batch_transforms=off"], "cache"),
             "default": ([], "cache"), "default, warm": ([], "cache")}
    if args.device == "cpu" and args.compile:  # on CPU train.compile=auto is off: measure it on
        paths["warm, compiled"] = (["train.compile=on"], "cache")
    if args.per_image:  # what the batched transforms add to the cache: the default without them, on an empty cache
        paths["default, per-image"] = (["data.batch_transforms=off"], "cache_per_image")
    rows = []
    for method in methods:
        measured = {}
        for path, (extra, cache) in paths.items():
            overrides = common + [f"method={method}", f"train.epochs={epochs}", *extra]
            run_dir = work / "runs" / f"{method}_{path.replace(', ', '_')}"
            measured[path] = summarize(one_run(overrides, run_dir, work / f"{cache}_{method}"))
            m = measured[path]
            print(f"{method:10s} {path:14s} train {m['train_s']:8.1f} s  eval {m['eval_s']:7.1f} s  "
                  f"wall {m['wall_s']:7.1f} s  {m['img_per_s']:8.1f} img/s  {m['memory_mib']:8.0f} MiB  "
                  f"cache hits {m['cache'].get('hits', '-')} misses {m['cache'].get('misses', '-')}", flush=True)
        for path in paths:
            m = measured[path]
            recipe = RECIPE_EPOCHS.get(method, epochs)
            per_epoch = m["train_s"] / max(1, m["epochs"])
            rows.append({"method": method, "path": path, **{k: m[k] for k in ("train_s", "eval_s", "wall_s",
                         "img_per_s", "memory_mib")},
                         "speedup": measured["today"]["wall_s"] / m["wall_s"],
                         "max_matrix_diff": float(np.nanmax(np.abs(m["matrix"] - measured["today"]["matrix"]))),
                         "recipe_epochs": recipe, "recipe_s": per_epoch * recipe + m["eval_s"]})
    print(f"\n{machine}\n")
    print("| method | path | train s | eval s | run s (process) | train img/s | peak memory MiB | speed-up | "
          "matrix diff vs today | recipe epochs | recipe run s (extrapolated) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['path']} | {r['train_s']:.1f} | {r['eval_s']:.1f} | {r['wall_s']:.1f} | "
              f"{r['img_per_s']:.0f} | {r['memory_mib']:.0f} | {r['speedup']:.2f}x | {r['max_matrix_diff']:.2g} | "
              f"{r['recipe_epochs']} | {r['recipe_s']:.0f} |")
    (work / "train_speed.json").write_text(json.dumps(rows, indent=2))
    print(f"\nruns and caches in {work}")


if __name__ == "__main__":
    main()
