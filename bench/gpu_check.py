"""The GPU check: what a lent GPU machine should measure in a few minutes, ending with one markdown table.

    bash bench/gpu_check.sh                      # installs the prepared wheels, then runs this (full, CUDA)
    python bench/gpu_check.py --quick --device cpu   # in the project's venv

Rows (each measured in its own try/except: a failure fills its row with "failed: <why>" and the rest go on):

- end-to-end LAMM / CoOp / VPT-deep: ``python -m clprompt.run`` on Split-CIFAR-100 (random pixels written
  in torchvision's pickle layout, so the real reader runs), ViT-B/16 with random weights, the old path
  (``train.feature_cache=off data.batch_transforms=off train.compile=off``) against the defaults on an
  empty feature cache: training images/s (results.json ``timing``) and the run's time;
- text step (LAMM, batch 32): ``bench/text_step.py``'s step on cached features, eager against
  ``train.compile`` (the compiled text tower);
- image tower bf16: the ViT-B/16 image tower's forward throughput under bf16 autocast and its share of the
  card's dense bf16 peak;
- batched transforms: ``bench/transform_speed.py``'s CIFAR 32 -> 224 px case with CoOp's crops, PIL per
  image against the Pillow-exact batches on the device, and their equality;
- 1000-class memory: peak memory of a CoOp run training at 1000 classes, batch 32 (ImageNet's 1000
  classes with CLIP's names in CoOp's folder layout, one random image per class);
  ``train.text_chunk=off`` against ``auto`` where the config has that key;
- killed and resumed run: a run SIGKILLed once its first experience's checkpoint exists, run again with
  the same command, against an uninterrupted run of the same config: the accuracy matrices.

``--quick`` shrinks every one (the tiny CLIP, two experiences, a few images per class). See
``--help`` for the sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# the table's rows, in order (tests/test_gpu_check.py expects each)
E2E_METHODS = {"lamm": "LAMM", "coop": "CoOp", "vpt_deep": "VPT-deep"}
ROWS = [*(f"end-to-end {label}" for label in E2E_METHODS.values()), "text step (LAMM, batch 32)",
        "image tower bf16", "batched transforms", "1000-class memory (CoOp, batch 32)", "killed and resumed run"]
OLD_PATH = ["train.feature_cache=off", "data.batch_transforms=off", "train.compile=off"]

# Dense (no sparsity) bf16 tensor-core peaks, TFLOPS, from NVIDIA's data sheets (which print twice these,
# "with sparsity"); matched in this order against torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3" is
# the SXM card). A card not in the list gets "n/a".
BF16_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]


@dataclass
class Plan:
    model: str
    experiences: int
    train_per_class: int
    test_per_class: int
    epochs: int
    text_warmup: int
    text_steps: int
    text_backend: str
    tower_batch: int
    tower_iters: int
    transform_images: int
    transform_batch: int
    transform_repeats: int
    memory_classes: int
    run_timeout: float
    runs: str
    parallel: int


def make_plan(args) -> Plan:
    cuda = args.device == "cuda"
    if args.quick:
        plan = Plan(model="tiny", experiences=2, train_per_class=2, test_per_class=1, epochs=1,
                    text_warmup=2, text_steps=5, text_backend="inductor" if cuda else "eager",
                    tower_batch=64 if cuda else 32, tower_iters=3, transform_images=64, transform_batch=32,
                    transform_repeats=1, memory_classes=100, run_timeout=150,
                    runs="separate" if cuda else "sweep", parallel=1 if cuda else 2)
    else:
        plan = Plan(model="vit_b16", experiences=10, train_per_class=20, test_per_class=5, epochs=1,
                    text_warmup=5, text_steps=50, text_backend="inductor", tower_batch=256, tower_iters=10,
                    transform_images=512, transform_batch=256, transform_repeats=3, memory_classes=1000,
                    run_timeout=150, runs="separate", parallel=1)
    for key in ("model", "experiences", "train_per_class", "test_per_class", "runs", "text_backend", "parallel",
                "memory_classes"):
        if getattr(args, key) is not None:
            setattr(plan, key, getattr(args, key))
    return plan


class Check:
    """The rows of the final table, filled as the measurements come."""

    def __init__(self, budget: float):
        self.started = time.perf_counter()
        self.budget = budget
        self.rows = {row: None for row in ROWS}
        self.lock = threading.Lock()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.budget - self.elapsed()

    def put(self, row: str, workload: str = "", baseline: str = "", measured: str = "", gain: str = "",
            note: str = "") -> None:
        with self.lock:
            self.rows[row] = (workload, baseline, measured, gain, note)
            print(f"[{self.elapsed():5.0f} s] {row}: {workload} | {baseline} | {measured} | {gain} | {note}",
                  flush=True)

    def say(self, text: str) -> None:
        with self.lock:
            print(f"[{self.elapsed():5.0f} s]   {text}", flush=True)

    def fail(self, row: str, error: BaseException, workload: str = "") -> None:
        self.put(row, workload, measured=outcome(error))

    def run(self, rows: list[str], measure, *args) -> None:
        """``measure(*args)`` fills ``rows``; an exception fills those it left empty with the failure."""
        try:
            self.in_budget()
            measure(*args)
        except Exception as error:   # one failure must not lose the other rows
            for row in rows:
                if self.rows[row] is None:
                    self.fail(row, error)
        finally:   # what an in-process measurement held on the GPU goes back before the runs need it
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()

    def in_budget(self) -> None:
        if self.left() <= 0:
            raise Skipped(f"time budget of {self.budget:.0f} s spent (--budget)")

    def table(self) -> str:
        lines = ["| check | workload | baseline | measured | gain | note |", "|---|---|---|---|---|---|"]
        for row, cells in self.rows.items():
            cells = cells or ("", "", "not run (--only)", "", "")
            lines.append("| " + " | ".join([row, *(c.replace("|", "/") for c in cells)]) + " |")
        return "\n".join(lines)


def one_line(error: BaseException) -> str:
    text = str(error) if isinstance(error, (RunFailed, Skipped)) else f"{type(error).__name__}: {error}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


class RunFailed(RuntimeError):
    pass


class Skipped(RuntimeError):
    pass


def outcome(error: BaseException) -> str:
    """A row's cell for a measurement that did not end: "skipped: ..." (time budget) or "failed: ..."."""
    return f"skipped: {error}" if isinstance(error, Skipped) else f"failed: {one_line(error)}"


# --- data ------------------------------------------------------------------------------------------------

def write_cifar100(root: Path, train_per_class: int, test_per_class: int) -> None:
    """CIFAR-100 in torchvision's pickle layout (<root>/cifar-100-python/{train,test,meta}), random pixels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(100)], "coarse_label_names": []}, handle)
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), per_class)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as handle:
            pickle.dump({"data": data, "fine_labels": labels.tolist(), "coarse_labels": [0] * len(labels)}, handle)


def write_imagenet(root: Path, classes: int) -> None:
    """ImageNet in CoOp's layout (imagenet/images/{train,val}/<wnid>/*, imagenet/classnames.txt) for the
    first ``classes`` wnids with CLIP's class names (their real token lengths), one random 32 px image per
    class and split."""
    from PIL import Image

    from scenarios.imagenet100 import imagenet_clip_names

    names = imagenet_clip_names()
    wnids = sorted(names)[:classes]
    folder = root / "imagenet"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{w} {names[w]}\n" for w in wnids), encoding="utf-8")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in wnids:
            (folder / "images" / split / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                folder / "images" / split / wnid / f"{wnid}_0.png")


# --- the command line, as a user runs it -----------------------------------------------------------------

class Runner:
    def __init__(self, args, plan: Plan, work: Path, check: Check):
        self.args, self.plan, self.work, self.check = args, plan, work, check
        self.env = dict(os.environ, HYDRA_FULL_ERROR="0", CLPROMPT_CACHE=str(work / "cache_home"))
        if args.device == "cpu":
            for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                self.env[key] = str(args.threads)

    def command(self, overrides: list[str]) -> list[str]:
        return [sys.executable, "-m", "clprompt.run", *overrides]

    def timeout(self) -> float:
        return max(30.0, min(self.plan.run_timeout, self.check.left() + 60))

    def run(self, overrides: list[str], run_dir: Path) -> dict:
        """One run in its own process; its results.json with ``process_wall_s`` added."""
        self.check.in_budget()
        start = time.perf_counter()
        try:
            done = subprocess.run(self.command([*overrides, f"hydra.run.dir={run_dir}"]), cwd=REPO, env=self.env,
                                  capture_output=True, text=True, timeout=self.timeout())
        except subprocess.TimeoutExpired as expired:
            raise RunFailed(f"timed out after {expired.timeout:.0f} s") from None
        (run_dir.parent / f"{run_dir.name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RunFailed(f"exit {done.returncode}: {last_line(done.stderr)}")
        results = json.loads((run_dir / "results.json").read_text())
        results["process_wall_s"] = time.perf_counter() - start
        results["stdout"] = done.stdout
        return results

    def sweep(self, overrides: list[str], sweep_dir: Path) -> dict:
        """Every (method, path) of the end-to-end check in one ``-m`` process (Hydra's basic launcher runs the
        jobs in turn, sparing five process starts): ``method`` swept with ``+gpucheck=old,default``, a config
        group written here whose ``old`` option sets the old path's keys. (method, path) -> results or the
        exception of that job."""
        self.check.in_budget()
        group = self.work / "conf" / "gpucheck"
        group.mkdir(parents=True, exist_ok=True)
        (group / "default.yaml").write_text("# @package _global_\n")
        nested = {}
        for item in OLD_PATH:   # "train.feature_cache=off" -> {"train": {"feature_cache": "off"}}
            key, value = item.split("=", 1)
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = value
        (group / "old.yaml").write_text("# @package _global_\n" + json.dumps(nested) + "\n")   # JSON is YAML
        jobs = [(method, path) for method in E2E_METHODS for path in ("old", "default")]   # the sweep's order
        start = time.perf_counter()
        try:
            done = subprocess.run(self.command(["-m", *overrides, f"method={','.join(E2E_METHODS)}",
                                                "+gpucheck=old,default", f"hydra.searchpath=[file://{self.work / 'conf'}]",
                                                f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}"]),
                                  cwd=REPO, env=self.env, capture_output=True, text=True,
                                  timeout=self.timeout() * 2)
        except subprocess.TimeoutExpired as expired:
            raise RunFailed(f"sweep timed out after {expired.timeout:.0f} s") from None
        wall = time.perf_counter() - start
        (sweep_dir.parent / f"{sweep_dir.name}.log").write_text(done.stdout + done.stderr)
        found = {}
        for number, (method, path) in enumerate(jobs):
            file = sweep_dir / str(number) / "results.json"
            results = json.loads(file.read_text()) if file.is_file() else None
            if results is None or results.get("status") != "complete":
                found[method, path] = RunFailed(f"sweep job {number} ({method}, {path}) did not complete (exit "
                                                f"{done.returncode}): {last_line(done.stderr)}")
                continue
            is_old = results["config"]["train"]["feature_cache"] == "off"
            if results["method"] != method or is_old != (path == "old"):
                raise RunFailed(f"sweep job {number} is {results['method']} {'old' if is_old else 'default'}, "
                                f"expected {method} {path}: Hydra ordered the jobs otherwise")
            results["process_wall_s"] = wall / len(jobs)
            found[method, path] = results
        return found


def last_line(text: str) -> str:
    """The line of a failed run's stderr that says why: clprompt's one-line "error: ..." or the exception
    Hydra printed (not its closing "Set the environment variable HYDRA_FULL_ERROR=1 ..." hint)."""
    lines = [line.strip() for line in (text or "").splitlines()
             if line.strip() and "HYDRA_FULL_ERROR" not in line]
    errors = [line for line in lines if line.lower().startswith("error") or "Error:" in line]
    return (errors or lines or ["(no output)"])[-1][:300]


# --- the measurements ------------------------------------------------------------------------------------

def summarize(results: dict) -> dict:
    from train_speed import summarize as train_speed_summary   # bench/train_speed.py's reading of a run

    summary = train_speed_summary(results)
    summary["run_s"] = results["wall_time_s"]
    summary["compile"] = (results.get("compile") or {}).get("enabled")
    summary["batched"] = ((results.get("data_loading") or {}).get("batch_transforms") or {}).get("enabled")
    return summary


def end_to_end(check: Check, runner: Runner, common: list[str], store: dict) -> None:
    plan = runner.plan
    for method, label in E2E_METHODS.items():   # the rows stay "failed" unless filled below
        store[method] = {}
    work = runner.work
    if plan.runs == "sweep":   # one process; cache.dir=null: each run starts without cached features
        try:
            found = runner.sweep([*common, "cache.dir=null"], work / "sweep")
        except Exception as error:
            found = {(method, path): error for method in E2E_METHODS for path in ("old", "default")}
        for (method, path), result in found.items():
            store[method][path] = result
    else:   # one process per run; each (method, path) its own empty cache folder: a first run
        for method in E2E_METHODS:
            for path, extra in (("old", OLD_PATH), ("default", [])):
                overrides = [*common, f"method={method}", *extra, f"cache.dir={work / f'cache_{method}_{path}'}"]
                try:
                    store[method][path] = runner.run(overrides, work / "runs" / f"{method}_{path}")
                except Exception as error:
                    store[method][path] = error
                result = store[method][path]
                check.say(f"end-to-end {method} {path}: " + (f"run {result['wall_time_s']:.1f} s" if
                          isinstance(result, dict) else outcome(result)))
    workload = (f"Split-CIFAR-100 random pixels, {plan.experiences} exp., {plan.train_per_class}+"
                f"{plan.test_per_class} img/class, {plan.model}, {plan.epochs} epoch")
    for method, label in E2E_METHODS.items():
        row = f"end-to-end {label}"
        old, new = store[method].get("old"), store[method].get("default")
        errors = [(path, r) for path, r in (("old path", old), ("defaults", new)) if not isinstance(r, dict)]
        if errors:
            skipped = all(isinstance(r, Skipped) for _, r in errors)
            if len(errors) == 2 and errors[0][1] is errors[1][1]:   # one error for both (the sweep's)
                errors = [("both paths", errors[0][1])]
            check.put(row, workload, measured=("skipped: " if skipped else "failed: ")
                      + "; ".join(f"{path}: {one_line(r)}" for path, r in errors))
            continue
        a, b = summarize(old), summarize(new)
        process = "" if plan.runs == "sweep" else " (process {:.0f} s)"
        diff = float(np.nanmax(np.abs(a["matrix"] - b["matrix"]))) if a["matrix"].shape == b["matrix"].shape \
            else float("nan")
        check.put(row, workload,
                  baseline=f"old path: {a['img_per_s']:.0f} img/s, run {a['run_s']:.1f} s"
                           + process.format(a["wall_s"]),
                  measured=f"defaults: {b['img_per_s']:.0f} img/s, run {b['run_s']:.1f} s"
                           + process.format(b["wall_s"]),
                  gain=f"{b['img_per_s'] / a['img_per_s']:.2f}x img/s, {a['run_s'] / b['run_s']:.2f}x run",
                  note=f"defaults: cache {'on' if b['cache'].get('enabled') else 'off'}"
                       f" ({b['cache'].get('hits', 0)} hits / {b['cache'].get('misses', 0)} misses), "
                       f"batched transforms {'on' if b['batched'] else 'off'}, compile {'on' if b['compile'] else 'off'}"
                       f"; matrix diff vs old {diff:.2g}"
                       + ("; all six runs in one -m process, cache.dir=null" if plan.runs == "sweep" else ""))


def text_step_check(check: Check, args, plan: Plan, device) -> None:
    import text_step   # bench/text_step.py

    from clprompt.training.compiled_step import CompiledTextTower

    row = ROWS[3]
    workload = f"{plan.model}, 10 classes, cached features, {plan.text_warmup} warm-up + {plan.text_steps} steps"
    method, _ = text_step.build(plan.model, "lamm", 10, device)
    eager_ms, _, eager_losses = text_step.time_steps(method, device, 32, plan.text_warmup, plan.text_steps, None)
    method, _ = text_step.build(plan.model, "lamm", 10, device)   # the same start for both
    compiled = CompiledTextTower(device, backend=plan.text_backend)
    compiled_ms, warm_s, compiled_losses = text_step.time_steps(method, device, 32, plan.text_warmup,
                                                                plan.text_steps, compiled)
    diff = max(abs(a - b) for a, b in zip(eager_losses, compiled_losses))
    check.put(row, workload, baseline=f"eager {eager_ms:.2f} ms/step", measured=f"compiled {compiled_ms:.2f} ms/step",
              gain=f"{eager_ms / compiled_ms:.2f}x",
              note=f"backend {plan.text_backend}{', CUDA graphs' if compiled.mode else ''}; "
                   f"warm-up incl. compile {warm_s:.1f} s; max loss diff {diff:.1e}")


def visual_macs(visual) -> float:
    """Multiply-accumulates of one forward of an open_clip VisionTransformer, counted from its shapes: patch
    embedding, per block QKV + attention (scores, weighted sum) + output projection + MLP, final projection.
    ViT-B/16 at 224 px: 17.56 G, the "17.6 GFLOPs" of the ViT / DeiT tables (Touvron et al. 2021, Table 1),
    which count multiply-adds (fvcore's convention). In FLOPs (2 per multiply-add, as the card's peak
    counts them): 35.1 G per image; torch.utils.flop_counter.FlopCounterMode gives 33.7 G for open_clip's
    ViT-B-16 tower, its matrix products without the 1.4 G of the attention products (QK^T, AV)."""
    conv = visual.conv1
    patch, width, channels = conv.kernel_size[0], conv.out_channels, conv.in_channels
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    patches = (size // patch) ** 2
    tokens = patches + 1   # the class token
    blocks = visual.transformer.resblocks
    mlp = blocks[0].mlp.c_fc.out_features
    per_block = 4 * tokens * width ** 2 + 2 * tokens ** 2 * width + 2 * tokens * width * mlp
    projection = width * visual.output_dim if getattr(visual, "proj", None) is not None else 0
    return patches * channels * patch ** 2 * width + len(blocks) * per_block + projection


def tower_check(check: Check, args, plan: Plan, device) -> None:
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    row = ROWS[4]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={plan.model}", "model.pretrained=null"])
    torch.manual_seed(0)
    visual = instantiate(cfg.model).model.visual.to(device).eval()
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    amp = torch.bfloat16 if device.type == "cuda" else None   # precision=auto: bf16 on CUDA, fp32 on CPU
    images = torch.randn(plan.tower_batch, 3, size, size, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        for _ in range(2):
            visual(images)
        sync()
        start = time.perf_counter()
        for _ in range(plan.tower_iters):
            visual(images)
        sync()
        seconds = time.perf_counter() - start
    rate = plan.tower_batch * plan.tower_iters / seconds
    flops = 2 * visual_macs(visual)
    achieved = rate * flops / 1e12
    workload = f"{plan.model} image tower, {size} px, batch {plan.tower_batch}, " \
               f"{'bf16 autocast' if amp else 'fp32 (CPU: precision=auto)'}"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((tflops for key, tflops in BF16_PEAK_TFLOPS if key in name), None)
        share = f"{100 * achieved / peak:.1f} % of {peak:.0f} TFLOPS (dense bf16, {name})" if peak else \
            f"n/a: {name} not in the peak table"
    else:
        share = "n/a (CPU)"
    check.put(row, workload, measured=f"{rate:.0f} img/s, {achieved:.2f} TFLOPS", gain=share,
              note=f"{flops / 1e9:.3g} GFLOP/img = 2 x {flops / 2e9:.3g} G multiply-adds counted from the "
                   "tower's shapes (ViT-B/16, 224 px: 2 x 17.6 G; the '17.6 GFLOPs' of the ViT/DeiT tables "
                   "are multiply-adds)")


def transforms_check(check: Check, args, plan: Plan, device) -> None:
    import torch

    from clprompt.data.augmentation import SampleViews, base_transform
    from clprompt.data.image_batches import BatchTransform
    from scenarios.array_dataset import ArrayImageDataset
    from transform_speed import Backbone   # bench/transform_speed.py

    row = ROWS[5]
    n, batch = plan.transform_images, plan.transform_batch
    pixels = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    views = SampleViews(base_transform("coop", Backbone(224)), "coop", seed=0, n_views=10, random=True)
    dataset = ArrayImageDataset(pixels, [0] * n, views)
    views.set_epoch(1)
    batched = BatchTransform(views)
    decoded = dataset.decoded()
    on_device = torch.from_numpy(decoded.rgb()).to(device)
    index = decoded.view_index

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def per_image():
        return torch.stack([dataset[i][0] for i in range(n)])

    def in_batches():
        out = [batched(on_device[i:i + batch], index[i:i + batch], 1) for i in range(0, n, batch)]
        sync()
        return torch.cat(out).cpu()

    equal = torch.equal(in_batches(), per_image())   # also the warm-up
    rates = {"pil": [], "batched": []}
    for _ in range(plan.transform_repeats):
        for path, run in (("pil", per_image), ("batched", in_batches)):
            start = time.perf_counter()
            run()
            rates[path].append(n / (time.perf_counter() - start))
    pil, fast = statistics.median(rates["pil"]), statistics.median(rates["batched"])
    check.put(row, f"CIFAR 32 -> 224 px, CoOp's crops, {n} images, batch {batch}, median of "
                   f"{plan.transform_repeats}",
              baseline=f"PIL per image: {pil:.0f} img/s (1 process)", measured=f"batched on {device.type}: {fast:.0f} img/s",
              gain=f"{fast / pil:.2f}x", note=f"equal to PIL: {'yes' if equal else 'NO'}")


def memory_check(check: Check, runner: Runner, plan: Plan, device_overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    row = ROWS[6]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        has_chunk = "text_chunk" in compose(config_name="config").train   # the setting, where it exists
    write_imagenet(runner.work / "imagenet_data", plan.memory_classes)
    common = ["scenario=imagenet", f"data.root={runner.work / 'imagenet_data'}", f"model={plan.model}",
              "model.pretrained=null", "method=coop", "train.epochs=1", "train.warmup_epochs=0",
              "train.batch_size=32", "train.compile=off", "progress=false", *device_overrides]
    variants = {"train.text_chunk=off": ["train.text_chunk=off"], "train.text_chunk=auto": ["train.text_chunk=auto"]} \
        if has_chunk else {"defaults": []}
    kind = "CUDA max allocated" if runner.args.device == "cuda" else "peak RSS (incl. ~1 GB of imports)"

    def one(name):   # each in its own process: its peak is its own
        tag = name.replace("train.text_chunk=", "chunk_")
        try:
            results = runner.run([*common, *variants[name], f"cache.dir={runner.work / f'cache_memory_{tag}'}"],
                                 runner.work / "runs" / f"memory_{tag}")
        except Exception as error:
            return outcome(error), None
        resources = results["resources"]
        return resources.get("peak_cuda_mib", resources["peak_rss_mib"]), results

    with ThreadPoolExecutor(max_workers=plan.parallel) as pool:   # --quick on CPU: side by side
        done = dict(zip(variants, pool.map(one, variants)))
    peaks = {name: peak for name, (peak, _) in done.items()}
    ran = [results for _, results in done.values() if results]
    notes = [f"eager step (train.compile=off), feature cache "
             f"{'on' if ran and (ran[0].get('feature_cache') or {}).get('enabled') else 'off'}"]
    text = {k: (f"{k}: {v:,.0f} MiB" if isinstance(v, float) else f"{k}: {v}") for k, v in peaks.items()}
    workload = f"ImageNet layout, {plan.memory_classes} classes in one experience, {plan.model}, 1 img/class"
    note = "; ".join([kind, *notes, *([] if has_chunk else ["no train.text_chunk in the config: default only"])])
    if has_chunk:
        off, auto = peaks["train.text_chunk=off"], peaks["train.text_chunk=auto"]
        gain = f"{off / auto:.2f}x less" if isinstance(off, float) and isinstance(auto, float) else ""
        check.put(row, workload, baseline=text["train.text_chunk=off"], measured=text["train.text_chunk=auto"],
                  gain=gain, note=note)
    else:
        check.put(row, workload, measured=text["defaults"], note=note)


def resume_check(check: Check, runner: Runner, overrides: list[str], reference) -> None:
    row = ROWS[7]
    work = runner.work
    run_dir = work / "runs" / "resume_killed"
    log = open(work / "runs" / "resume_killed.killed.log", "w")
    process = subprocess.Popen(runner.command([*overrides, f"hydra.run.dir={run_dir}"]), cwd=REPO, env=runner.env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.perf_counter() + runner.timeout()
    try:
        while process.poll() is None and time.perf_counter() < deadline:
            if (run_dir / "checkpoint.pt").exists():   # written to a temporary name, then renamed: whole
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        else:
            if process.poll() is None:
                raise RunFailed("no checkpoint.pt within the time limit")
    finally:
        if process.poll() is None and time.perf_counter() >= deadline:
            process.kill()
        process.wait()
        try:   # loader workers of the killed run, if any: its own process group, started here
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        log.close()
    if process.returncode != -signal.SIGKILL:
        raise RunFailed(f"the run ended (exit {process.returncode}) before its first checkpoint was seen: "
                        "nothing was killed")
    import torch

    done = torch.load(run_dir / "checkpoint.pt", weights_only=True, map_location="cpu").get("experiences_done")
    check.say(f"killed and resumed run: SIGKILL with {done} experience(s) checkpointed; resuming")
    resumed = runner.run(overrides, run_dir)   # the same command: it resumes from its checkpoint
    reference = reference()   # the uninterrupted run: the end-to-end one if it ran, else one of its own
    if not isinstance(reference, dict):
        reference = runner.run(overrides, work / "runs" / "resume_reference")
    said = next((line.strip() for line in resumed["stdout"].splitlines() if "resuming" in line), "")
    ours, theirs = np.array(resumed["accuracy_matrix"], float), np.array(reference["accuracy_matrix"], float)
    if resumed["accuracy_matrix"] == reference["accuracy_matrix"]:
        verdict = "identical"
    elif ours.shape != theirs.shape:
        verdict = f"DIFFERS: matrix shape {ours.shape} against {theirs.shape}"
    else:
        cells = np.argwhere(~np.isclose(ours, theirs, rtol=0, atol=0, equal_nan=True))
        verdict = (f"DIFFERS in {len(cells)} of {ours.size} cells, largest {np.nanmax(np.abs(ours - theirs)):.3g} "
                   f"points, first after experience {cells[0][0] + 1}")
    check.put(row, f"end-to-end LAMM old path, SIGKILL once checkpoint.pt exists ({done} exp. recorded)",
              baseline="uninterrupted run", measured=verdict,
              note=(said.split(" from ", 1)[-1] if " from " in said else said or "no 'resuming' line")
              + f"; status {resumed['status']}")


# --- main -----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every measurement shrunk (tiny CLIP, 2 experiences, "
                                                              "2+1 images per class)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--threads", type=int, default=1, help="CPU only: torch threads here and OMP_NUM_THREADS "
                                                               "of the runs (default 1)")
    parser.add_argument("--budget", type=float, default=None, help="seconds; a measurement not started by then "
                                                                   "is skipped (default 360, --quick 300)")
    parser.add_argument("--only", default=None, help="comma-separated subset of e2e,text,tower,transforms,memory,"
                                                     "resume (resume reuses e2e's LAMM old-path run when both run)")
    parser.add_argument("--model", default=None, help="model config (default vit_b16, --quick tiny)")
    parser.add_argument("--experiences", type=int, default=None, help="scenario.n_experiences (default 10, --quick 2)")
    parser.add_argument("--train-per-class", type=int, default=None, help="CIFAR training images per class "
                                                                           "(default 20, --quick 2)")
    parser.add_argument("--test-per-class", type=int, default=None, help="CIFAR test images per class "
                                                                          "(default 5, --quick 1)")
    parser.add_argument("--runs", default=None, choices=["separate", "sweep"],
                        help="end-to-end runs one process each (default) or all six in one -m process (--quick on CPU)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="command-line measurements (end-to-end, memory, resume) side by side (default 1; "
                             "--quick on CPU 2, where timings are not the point)")
    parser.add_argument("--memory-classes", type=int, default=None, help="classes of the memory run (default "
                                                                          "1000, --quick 100; at most 1000)")
    parser.add_argument("--text-backend", default=None, help="torch.compile backend of the text step (default "
                                                             "inductor; --quick on CPU eager: dynamo capture only)")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs, data and logs here (default: a "
                                                                "temporary folder, removed)")
    args = parser.parse_args(argv)
    plan = make_plan(args)
    budget = args.budget if args.budget is not None else (300 if args.quick else 360)
    only = set(args.only.split(",")) if args.only else {"e2e", "text", "tower", "transforms", "memory", "resume"}

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no GPU (torch.cuda.is_available() is False); "
              "use --device cpu to check the script itself", file=sys.stderr)
        return 3
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), {args.threads} thread(s)"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    header = (f"{machine}; torch {torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}; "
              f"commit {commit or '?'}{' + local changes' if dirty else ''}; {'quick' if args.quick else 'full'} mode, "
              f"model {plan.model}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(header, flush=True)

    check = Check(budget)
    temporary = None if args.work else tempfile.TemporaryDirectory(prefix="clprompt-gpu-check-")
    work = args.work or Path(temporary.name)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    runner = Runner(args, plan, work, check)
    device_overrides = [f"device={args.device}"]
    common = ["scenario=split_cifar", f"data.root={work / 'cifar'}", f"model={plan.model}", "model.pretrained=null",
              f"scenario.n_experiences={plan.experiences}", f"train.epochs={plan.epochs}", "train.warmup_epochs=0",
              "train.augmentation=coop", "progress=false", *device_overrides]
    try:
        # the in-process ones first, one at a time (timings), then the runs of the command line
        if "tower" in only:
            check.run([ROWS[4]], tower_check, check, args, plan, device)
        if "transforms" in only:
            check.run([ROWS[5]], transforms_check, check, args, plan, device)
        if "text" in only:
            check.run([ROWS[3]], text_step_check, check, args, plan, device)
        if "e2e" in only or "resume" in only:
            write_cifar100(work / "cifar", plan.train_per_class, plan.test_per_class)
        store, e2e_done = {}, threading.Event()
        lamm_old = [*common, "method=lamm", *OLD_PATH,   # the end-to-end LAMM old-path run's command
                    f"cache.dir={work / 'cache_lamm_old'}" if plan.runs == "separate" else "cache.dir=null"]

        def reference():   # waits for the end-to-end runs (another worker, or done before with one worker)
            if "e2e" in only:
                e2e_done.wait()
            return store.get("lamm", {}).get("old")

        def e2e():
            try:
                check.run(ROWS[:3], end_to_end, check, runner, common, store)
            finally:
                e2e_done.set()

        # with --parallel 1 (the default, and on CUDA) strictly in this order (e2e before resume, which waits
        # for its LAMM run); --quick on CPU two at a time
        with ThreadPoolExecutor(max_workers=plan.parallel) as pool:
            jobs = []
            if "e2e" in only:
                jobs.append(pool.submit(e2e))
            if "resume" in only:
                jobs.append(pool.submit(check.run, [ROWS[7]], resume_check, check, runner, lamm_old, reference))
            if "memory" in only:
                jobs.append(pool.submit(check.run, [ROWS[6]], memory_check, check, runner, plan, device_overrides))
            for job in jobs:
                job.result()
    finally:
        print(f"\n{header}; {check.elapsed():.0f} s\n")
        print(check.table(), flush=True)
        if args.work:
            print(f"\nruns, data and logs in {work}")
        if temporary is not None:
            temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
