"""A run's evaluation pass against the bare image tower on the same images (one invocation, CPU).

    python bench/eval_pass.py --data <data.root> --weights <OpenAI-layout ViT-B/32 file> [--scenario caltech101]
        [--tower-batches 32,100,256] [--run-settings auto,256] [--repeats 2]

The module level: open_clip's ViT-B/32 image tower (``encode_image``) over the scenario's test images,
preprocessed by open_clip's own eval transform, at batch 32, 100 (CoOp's test batch) and 256, milliseconds
per image, decoding and transforms included (as in a run). The run: ``python -m clprompt.run method=zeroshot``
on the same test set, whose whole work is the evaluation pass, at ``eval.batch_size=auto`` and ``256``:
results.json's ``timing.eval_s`` per image and the batch ``auto`` chose. Each case in a fresh process, one
thread (``OMP_NUM_THREADS=1``), interleaved over ``--repeats`` (every other repeat in the reverse order);
medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE = r"""
import sys, time, torch, open_clip
from torch.utils.data import DataLoader
from scenarios.coop_datasets import coop_stream
torch.set_num_threads(1)
data, weights, scenario, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=weights, force_quick_gelu=True)
model.eval()
stream = coop_stream(scenario, root=data, eval_transform=preprocess, train_transform=preprocess)
test = stream.splits["test"]
start = time.perf_counter()
with torch.no_grad():
    for images, *_ in DataLoader(test, batch_size=batch, shuffle=False):
        model.encode_image(images)
print((time.perf_counter() - start) / len(test) * 1000)
"""


def module_ms(data: str, weights: str, scenario: str, batch: int) -> float:
    done = subprocess.run([sys.executable, "-c", MODULE, data, weights, scenario, str(batch)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def run_ms(data: str, weights: str, scenario: str, setting: str, folder: Path) -> tuple[float, object]:
    command = [sys.executable, "-m", "clprompt.run", f"scenario={scenario}", f"data.root={data}", "method=zeroshot",
               "model=vit_b32", f"model.pretrained={weights}", "model.quick_gelu=true", "precision=fp32",
               "device=cpu", "data.num_workers=0", "progress=false", f"eval.batch_size={setting}",
               f"hydra.run.dir={folder}", "cache.dir=null"]
    subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    results = json.loads((folder / "results.json").read_text())
    seconds = sum(t["eval_s"] for t in results["timing"])
    return seconds, results.get("evaluation_batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--scenario", default="caltech101")
    parser.add_argument("--test-images", type=int, default=500, help="the test set's size (for per-image times)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tower-batches", default="32,100,256", help="the module-level tower's batch sizes")
    parser.add_argument("--run-settings", default="auto,256", help="the run's eval.batch_size settings")
    args = parser.parse_args()
    tower_batches = [int(b) for b in args.tower_batches.split(",")]
    run_settings = args.run_settings.split(",")
    rows: dict[str, list] = {}
    choices = []
    with tempfile.TemporaryDirectory() as work:
        cases = [(f"module level, batch {batch}", "module", batch) for batch in tower_batches] + \
            [(f"clprompt run, eval.batch_size={setting}", "run", setting) for setting in run_settings]
        rows.update({name: [] for name, _, _ in cases})   # the table's rows in this order
        for repeat in range(args.repeats):
            # every other repeat in the reverse order: a host that speeds up or slows down during a repeat
            # favours neither the first cases nor the last
            for name, kind, value in (cases if repeat % 2 == 0 else cases[::-1]):
                if kind == "module":
                    rows[name].append(module_ms(args.data, args.weights, args.scenario, value))
                    continue
                seconds, record = run_ms(args.data, args.weights, args.scenario, value,
                                         Path(work) / f"{value}_{repeat}")
                rows[name].append(1000 * seconds / args.test_images)
                if value == "auto":
                    choices.append(record)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k}: {v[-1]:.1f}" for k, v in rows.items()), flush=True)
    print(f"\nCPU, one thread; {args.test_images} test images of {args.scenario}; ViT-B/32 at 224 px, fp32; "
          f"median of {args.repeats}; {time.strftime('%Y-%m-%d')}\n")
    print("| pass | ms per image |\n|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.1f} |")
    print("\nauto chose: " + "; ".join(f"{c['size']} ({c['ms_per_image']})" for c in choices if c))


if __name__ == "__main__":
    main()
