"""clprompt against the reference trainers' own code (CoOp on Dassl, LAMM) on identical work, CPU, one thread.

    python bench/reference_speed.py --coop ~/refs/CoOp --dassl ~/refs/Dassl.pytorch --lamm ~/refs/LAMM
    python bench/reference_speed.py --coop ... --dassl ... --lamm ... --quick          # a couple of minutes
    python bench/reference_speed.py ... --only scaling --max-classes 250               # one section

The reference code is imported at run time from the checkouts given (nothing of it is copied here): a
driver runs their ``train.py``'s own ``main`` (CoOp's, or LAMM's fork of it) in a fresh process, with
one seam: ``clip._download`` returns the local weights file instead of downloading OpenAI's checkpoint.
Around Dassl's ``build_trainer``, ``trainer.train()`` and ``trainer.test()`` (which Dassl's
``after_train`` calls) it times set-up, training and the final test. clprompt runs as
``python -m clprompt.run`` in a fresh process; its results.json gives train and eval seconds.

The workload, the same files for both sides (written once under --work):
- weights: a random ViT-B/32 (``open_clip.create_model("ViT-B-32")``, seed 0) saved in OpenAI's key
  names as fp16 (as OpenAI's checkpoint, so CoOp's fp16 cast and ``.float()`` change nothing); both sides'
  image features of one test image are compared (printed) before anything is timed;
- data: Caltech101 in CoOp's layout (``caltech-101/101_ObjectCategories/<class>/*.jpg`` and
  ``split_zhou_Caltech101.json``): 10 classes (single-token names), exactly 16 training images per class
  (so CoOp's and clprompt's 16-shot draws both take every one of them), 4 val and 50 test images per
  class, random-content 256 px JPEGs;
- recipe: CoOp's (SGD lr 0.002 momentum 0.9 weight decay 5e-4, cosine, 1 warm-up epoch at 1e-5, batch
  32, 16 context tokens, class token at the end, 224 px, random resized crop + flip + normalize), 2
  epochs, fp32, one thread per process, no loader workers. LAMM: LAMM's script options
  (``--triplet-loss --origin-clip``, context "a photo of a") against ``method=lamm``.

Sections (``--only``): ``first`` (paired interleaved repeats of one run per side: train, eval, end to
end, fixed cost, peak RSS), ``study`` (CoOp and LAMM x 3 seeds x 4 and 16 shots, on data
with 40 training images per class: the reference from scratch per run, clprompt one sweep sharing its
feature cache), ``scaling`` (one text-side training step on fixed image
features at 10 / 100 / 250 / 1000 classes, each case in a fresh process). Prints markdown tables as
results come; ``--json`` saves the raw numbers. Ratios are reference / clprompt: above 1, clprompt is
faster (or smaller).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]

# Python packages the reference code imports (Dassl.pytorch's requirements, CoOp's / LAMM's): module -> pip name.
REFERENCE_PACKAGES = {"yacs": "yacs", "tabulate": "tabulate", "gdown": "gdown", "ftfy": "ftfy", "regex": "regex",
                      "tqdm": "tqdm", "scipy": "scipy", "sklearn": "scikit-learn", "tensorboard": "tensorboard",
                      "pandas": "pandas", "wilds": "wilds==1.2.2"}

# Caltech101 class folders whose names are one CLIP token each: LAMM's reference code learns only the first
# shortest-name-length tokens of every name, clprompt's method=lamm every token; with one-token names both
# learn the same embeddings, so method=lamm runs as it ships.
CLASS_NAMES = ["accordion", "anchor", "ant", "barrel", "bass", "beaver", "bonsai", "brain", "buddha", "butterfly"]
WEIGHTS_SEED = 0
SCALING_CLASSES = (10, 100, 250, 1000)


@dataclass(frozen=True)
class Workload:
    name: str
    classes: int
    shots: int            # training images per class: the split holds exactly this many, so every draw is all of them
    val_per_class: int
    test_per_class: int
    image_px: int
    epochs: int
    seeds: tuple          # the study's seeds
    study_shots: tuple    # the study's shot counts
    study_train_per_class: int   # the study's data: more training images per class than its largest shot count,
                                 # so that draws of different shot counts overlap only by chance (Caltech101's
                                 # split holds about 41 per class)
    scaling: tuple        # the class counts of the scaling section
    scaling_steps: int
    scaling_seconds: float


FULL = Workload("full", 10, 16, 4, 50, 256, 2, (1, 2, 3), (4, 16), 40, SCALING_CLASSES, 5, 30.0)
QUICK = Workload("quick", 4, 4, 1, 10, 64, 2, (1, 2), (2, 4), 8, (4, 10), 2, 5.0)


# --- the clprompt side's command ------------------------------------------------------------------------


def clprompt_overrides(method: str, workload: Workload, data_root: Path, weights: Path, seed: int,
                       shots: int | None = None) -> list:
    """The Hydra overrides of clprompt's run of ``workload`` (CoOp's recipe: see the module docstring)."""
    return ["scenario=caltech101", f"data.root={data_root}", f"method={method}", "model=vit_b32",
            f"model.pretrained={weights}", "model.quick_gelu=true", "protocol=few_shot",
            f"protocol.shots={shots or workload.shots}", f"protocol.shots_seed={seed}", f"seed={seed}",
            "train.augmentation=coop", f"train.epochs={workload.epochs}", "train.batch_size=32",
            "precision=fp32", "device=cpu", "data.num_workers=0", "progress=false"]


def clprompt_command(method: str, workload: Workload, data_root: Path, weights: Path, seed: int,
                     run_dir: Path, cache_dir: Path, extra: tuple = (), shots: int | None = None) -> list:
    """``python -m clprompt.run ...``: one run of ``method`` into ``run_dir``, features cached in ``cache_dir``."""
    return [sys.executable, "-m", "clprompt.run",
            *clprompt_overrides(method, workload, data_root, weights, seed, shots),
            f"hydra.run.dir={run_dir}", f"cache.dir={cache_dir}", *extra]


def clprompt_sweep_command(methods: list, workload: Workload, data_root: Path, weights: Path, seeds: tuple,
                           sweep_dir: Path, cache_dir: Path, extra: tuple = (), shots: tuple = ()) -> list:
    """One Hydra multirun over methods x seeds (x ``shots``, when given: ``protocol.shots``), with
    ``protocol.shots_seed`` following ``seed`` as CoOp's --seed sets both, every job reading and filling the
    same feature cache."""
    swept = ("method=", "seed=", "protocol.shots_seed=") + (("protocol.shots=",) if shots else ())
    overrides = [o for o in clprompt_overrides(methods[0], workload, data_root, weights, seeds[0])
                 if not o.startswith(swept)]
    return [sys.executable, "-m", "clprompt.run", "-m", *overrides, f"method={','.join(methods)}",
            f"seed={','.join(str(s) for s in seeds)}", "protocol.shots_seed=${seed}",
            *([f"protocol.shots={','.join(str(k) for k in shots)}"] if shots else []),
            f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}", f"cache.dir={cache_dir}", *extra]


# --- the reference side's options ------------------------------------------------------------------------


def reference_options(kind: str, workload: Workload, root: Path, data_root: Path, output_dir: Path, seed: int,
                      shots: int | None = None) -> dict:
    """The arguments of CoOp's / LAMM's train.py for ``workload`` (their scripts' options, ViT-B/32, fp32)."""
    opts = ["TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False", "TRAINER.COOP.CLASS_TOKEN_POSITION", "end",
            "DATASET.NUM_SHOTS", str(shots or workload.shots), "TRAINER.COOP.PREC", "fp32",
            "OPTIM.MAX_EPOCH", str(workload.epochs), "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"]
    args = dict(root=str(data_root), output_dir=str(output_dir), resume="", seed=seed, source_domains=None,
                target_domains=None, transforms=None, trainer="CoOp", backbone="", head="", eval_only=False,
                model_dir="", load_epoch=None, no_train=False,
                config_file=str(root / "configs/trainers/CoOp/vit_b32_ep50.yaml"),
                dataset_config_file=str(root / "configs/datasets/caltech101.yaml"))
    if kind == "lamm":  # scripts/lamm/base_train_lamm_all.sh: --triplet-loss --origin-clip, context "a photo of a"
        opts += ["TRAINER.COOP.CTX_INIT", "a photo of a"]
        args.update(shots=1, triplet_loss=True, origin_clip=True, random_init=False)
    args["opts"] = opts
    return args


# --- files written once -----------------------------------------------------------------------------------


def write_weights(path: Path) -> None:
    """A random ViT-B/32 in OpenAI's state-dict layout (open_clip's CLIP has OpenAI's key names), fp16."""
    if path.exists():
        return
    import open_clip
    import torch

    torch.manual_seed(WEIGHTS_SEED)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(path) + ".part")
    os.replace(str(path) + ".part", path)


def write_dataset(root: Path, workload: Workload, train_per_class: int | None = None) -> Path:
    """Caltech101 in CoOp's layout under ``root``, ``train_per_class`` training images per class (default: the
    workload's shot count, so that every draw takes them all); returns the split file. Rewritten only if the
    spec changed."""
    import numpy as np
    from PIL import Image

    folder = root / "caltech-101"
    spec = {"classes": CLASS_NAMES[:workload.classes], "train": train_per_class or workload.shots, "val": workload.val_per_class,
            "test": workload.test_per_class, "px": workload.image_px, "seed": 0}
    marker = folder / "workload.json"
    split_path = folder / "split_zhou_Caltech101.json"
    if marker.exists() and json.loads(marker.read_text()) == spec and split_path.exists():
        return split_path
    shutil.rmtree(folder, ignore_errors=True)
    images = folder / "101_ObjectCategories"
    rng = np.random.default_rng(0)
    split = {"train": [], "val": [], "test": []}
    px = workload.image_px
    for label, name in enumerate(spec["classes"]):
        (images / name).mkdir(parents=True)
        index = 0
        for part in ("train", "val", "test"):
            for _ in range(spec[part]):
                index += 1
                relative = f"{name}/image_{index:04d}.jpg"
                coarse = rng.integers(0, 256, size=(px // 8, px // 8, 3), dtype=np.uint8)  # blocks + noise: a JPEG
                pixels = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8)).astype(np.int16)  # of photo-like size
                pixels += rng.integers(-24, 25, size=pixels.shape, dtype=np.int16)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / relative, quality=90)
                split[part].append([relative, label, name])
    split_path.write_text(json.dumps(split))
    marker.write_text(json.dumps(spec))
    return split_path


# --- processes --------------------------------------------------------------------------------------------


def child_env(pythonpath: list) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               HYDRA_FULL_ERROR="1", OUTDATED_IGNORE="1", PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in pythonpath] +
                                        ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    return env


def run_process(cmd: list, cwd: Path, env: dict, log_path: Path) -> dict:
    """Run ``cmd``; returns its wall seconds and peak RSS (the child's ru_maxrss); exits with its log's tail
    if it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        sys.exit(f"failed (exit {process.returncode}): {' '.join(map(str, cmd))}\n--- {log_path} (end) ---\n{tail}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def child_command(kind: str, spec: dict, spec_path: Path) -> list:
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, default=str))
    return [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(spec_path)]


# --- children (run as: reference_speed.py --child KIND SPEC.json) ------------------------------------------


def _reference_imports(spec: dict):
    """Their code on sys.path (the checkout first, then Dassl), their folder as the working directory, one
    thread, and the seam: ``clip._download`` returns the local weights file."""
    import torch

    torch.set_num_threads(1)
    for path in (spec["dassl"], spec["root"]):
        sys.path.insert(0, path)
    os.chdir(spec["root"])
    from clip import clip as reference_clip

    reference_clip._download = lambda url, root=None, *args, **kwargs: spec["weights"]
    compat_torch()
    return reference_clip


COMPAT = []   # run-time shims for a torch newer than the reference code, listed in the report


def compat_torch() -> None:
    """Dassl's warm-up schedulers call ``_LRScheduler.__init__(optimizer, last_epoch, verbose)``; torch 2.7+
    dropped ``verbose``. Only that base class (Dassl's) takes and ignores it; nothing is computed otherwise."""
    import inspect

    from torch.optim import lr_scheduler

    if "verbose" not in inspect.signature(lr_scheduler.LRScheduler.__init__).parameters:
        def init(self, optimizer, last_epoch=-1, verbose=None):
            lr_scheduler.LRScheduler.__init__(self, optimizer, last_epoch)

        lr_scheduler._LRScheduler.__init__ = init
        COMPAT.append("torch.optim.lr_scheduler._LRScheduler.__init__ takes Dassl's positional verbose")


def reference_args(reference_train, spec: dict) -> SimpleNamespace:
    """train.py's parsed arguments. LAMM's ``extend_cfg`` reads them from the module global ``args`` that its
    ``if __name__ == "__main__"`` block sets: set here as that block would."""
    args = SimpleNamespace(**spec["args"])
    reference_train.args = args
    return args


def child_reference_run(spec: dict) -> dict:
    """One run of CoOp's / LAMM's ``train.main`` with set-up, train and test timed."""
    started = time.perf_counter()
    _reference_imports(spec)
    import train as reference_train   # CoOp/train.py or LAMM/train.py

    imported = time.perf_counter()
    timing = {"import_s": imported - started, "eval_s": 0.0, "test_calls": 0}
    build_trainer = reference_train.build_trainer

    def timed_build(cfg):
        start = time.perf_counter()
        trainer = build_trainer(cfg)
        timing["build_trainer_s"] = time.perf_counter() - start
        train, test = trainer.train, trainer.test

        def timed_test(*args, **kwargs):   # Dassl's after_train calls self.test(): timed apart from training
            start = time.perf_counter()
            result = test(*args, **kwargs)
            timing["eval_s"] += time.perf_counter() - start
            timing["test_calls"] += 1
            timing["accuracy"] = float(result)
            return result

        def timed_train():
            start = time.perf_counter()
            train()
            timing["train_and_test_s"] = time.perf_counter() - start

        trainer.test, trainer.train = timed_test, timed_train
        timing["train_images"] = len(trainer.dm.dataset.train_x)
        timing["test_images"] = len(trainer.dm.dataset.test)
        timing["batches_per_epoch"] = len(trainer.train_loader_x)
        return trainer

    reference_train.build_trainer = timed_build
    reference_train.main(reference_args(reference_train, spec))
    timing["main_s"] = time.perf_counter() - imported
    timing["train_s"] = timing["train_and_test_s"] - timing["eval_s"]
    timing["threads"] = __import__("torch").get_num_threads()
    timing["compat"] = COMPAT
    return timing


def _reference_trainer(spec: dict, class_names: list):
    """CoOp's / LAMM's trainer object with its own ``build_model`` run on ``class_names`` (no data set)."""
    _reference_imports(spec)
    import train as reference_train
    import trainers.coop as reference_coop
    from dassl.engine.trainer import TrainerBase

    cfg = reference_train.setup_cfg(reference_args(reference_train, spec))
    trainer = object.__new__(reference_coop.CoOp)
    TrainerBase.__init__(trainer)
    trainer.cfg, trainer.device = cfg, __import__("torch").device("cpu")
    trainer.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=class_names))
    trainer.build_model()  # load_clip_to_cpu, .float(), CustomCLIP, frozen towers, Dassl's SGD and scheduler
    return trainer


def fixed_features_encoder():
    """Stands in for CustomCLIP's image encoder: the batch given is already the image features."""
    import torch

    class FixedFeatures(torch.nn.Module):
        def forward(self, features):
            return features

    return FixedFeatures()


def child_reference_step(spec: dict) -> dict:
    """Their trainer's training step (``forward_backward``: prompt learner, text encoder, logits, loss, SGD)
    on fixed image features, ``spec['classes']`` classes."""
    names = [f"class {i}" for i in range(spec["classes"])]
    trainer = _reference_trainer(spec, names)
    trainer.model.image_encoder = fixed_features_encoder()
    trainer.set_model_mode("train")
    trainer.num_batches, trainer.batch_idx = 10 ** 9, 0   # no scheduler step inside the timed steps
    dim = trainer.model.text_encoder.text_projection.shape[1]

    def step(features, labels):
        trainer.forward_backward({"img": features, "label": labels})

    return _time_steps(step, dim, spec)


def child_clprompt_step(spec: dict) -> dict:
    """clprompt's training step on fixed image features: bench/text_step.py's ``build`` (the same weights
    file, QuickGELU), logits, cross-entropy plus the method's own terms, SGD."""
    import hydra
    import torch

    torch.set_num_threads(1)
    tree = Path(spec["clprompt_tree"])
    path = tree / "bench" / "text_step.py"
    if not path.exists():   # an older tree without it: this one's, on that tree's configs
        path = REPO / "bench" / "text_step.py"
    module_spec = importlib.util.spec_from_file_location("text_step", path)
    text_step = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(text_step)
    text_step.CONFIGS = tree / "configs"
    compose = hydra.compose

    def compose_with_weights(*args, overrides=(), **kwargs):  # build() asks for random weights: ours instead
        return compose(*args, overrides=[*overrides, f"model.pretrained={spec['weights']}", "model.quick_gelu=true"],
                       **kwargs)

    hydra.compose = compose_with_weights
    method, _ = text_step.build("vit_b32", spec["method"], spec["classes"], torch.device("cpu"))
    hydra.compose = compose
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)

    def step(features, labels):
        logits = method.logits_from_image_features(features)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) + method.regularization(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()

    return _time_steps(step, method.clip.clip.visual.output_dim, spec)


def _time_steps(step, dim: int, spec: dict) -> dict:
    """One warm-up step, then timed steps until ``steps`` or ``seconds`` (at least one)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    batch, classes = spec["batch"], spec["classes"]
    features = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    gc.collect()
    load_peak_mib = proc_status_mib("VmHWM")   # the peak so far (loading): the reset below forgets it
    before_mib = proc_status_mib("VmRSS")
    reset = reset_peak_rss()   # from here VmHWM is the steps' own peak (the load's peak is forgotten)
    start = time.perf_counter()
    step(features, labels)
    warm_s = time.perf_counter() - start
    times = []
    while len(times) < spec["steps"] and (not times or sum(times) < spec["seconds"]):
        start = time.perf_counter()
        step(features, labels)
        times.append(time.perf_counter() - start)
    steps_peak = proc_status_mib("VmHWM") if reset else None
    return {"warmup_s": warm_s, "step_s": statistics.median(times), "steps": len(times),
            "threads": torch.get_num_threads(), "load_peak_rss_mib": load_peak_mib, "rss_before_steps_mib": before_mib,
            "steps_peak_rss_mib": steps_peak,
            "steps_extra_mib": None if steps_peak is None else steps_peak - before_mib}


def proc_status_mib(field: str):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child_features(spec: dict) -> dict:
    """The same weights through both sides: one test image's features from the reference's
    ``load_clip_to_cpu`` (through the seam) and from clprompt's ``load_backbone``; the two eval transforms."""
    import torch
    from PIL import Image

    _reference_imports(spec)
    import train as reference_train
    import trainers.coop as reference_coop
    from dassl.data.transforms import build_transform

    trainer_cfg = reference_train.setup_cfg(reference_args(reference_train, spec))
    reference = reference_coop.load_clip_to_cpu(trainer_cfg).float().eval()
    from clprompt.model.backbone import load_backbone

    backbone = load_backbone("ViT-B-32", spec["weights"], quick_gelu=True)
    image = Image.open(spec["image"]).convert("RGB")
    ours = backbone.eval_transform(image).unsqueeze(0)
    theirs = build_transform(trainer_cfg, is_train=False)(image).unsqueeze(0)
    with torch.no_grad():
        a = reference.encode_image(ours)
        b = backbone.model.encode_image(ours)
    normalized = torch.nn.functional.normalize
    return {"max_abs_diff": float((a - b).abs().max()), "feature_scale": float(a.abs().max()),
            "max_abs_diff_normalized": float((normalized(a, dim=-1) - normalized(b, dim=-1)).abs().max()),
            "eval_transform_max_diff": float((ours - theirs).abs().max()), "dim": int(a.shape[-1])}


CHILDREN = {"reference-run": child_reference_run, "reference-step": child_reference_step,
            "clprompt-step": child_clprompt_step, "features": child_features}


def child_main(kind: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = CHILDREN[kind](spec)
    Path(spec["result"]).write_text(json.dumps(result))


# --- the benchmark ----------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, workload: Workload):
        self.args, self.workload = args, workload
        self.work = Path(args.work).expanduser().resolve()
        self.session = self.work / "runs" / time.strftime("%Y%m%d-%H%M%S")
        self.data_root = self.work / workload.name / "data"
        self.study_root = self.work / workload.name / "study_data"
        self.study_shots = tuple(args.study_shots or workload.study_shots)
        self.sections = [args.only] if args.only else ["first", "study", "scaling"]
        self.weights = self.work / "weights" / f"vit_b32_random_seed{WEIGHTS_SEED}_openai_layout_fp16.pt"
        self.tree = Path(args.clprompt_tree).resolve() if args.clprompt_tree else REPO
        self.refs = {"coop": Path(args.coop).resolve()}
        if args.lamm:
            self.refs["lamm"] = Path(args.lamm).resolve()
        self.dassl = Path(args.dassl).resolve()
        self.counter = 0
        self.raw = {"workload": asdict(workload), "machine": {}, "first": [], "study": {}, "scaling": [],
                    "features": {}}

    # processes
    def _next(self, name: str) -> Path:
        self.counter += 1
        return self.session / f"{self.counter:03d}_{name}"

    def reference_env(self, kind: str) -> dict:
        return child_env([self.refs[kind], self.dassl])

    def clprompt_env(self) -> dict:
        return child_env([self.tree])

    def reference_spec(self, kind: str, folder: Path, seed: int, shots: int | None = None,
                       data_root: Path | None = None) -> dict:
        return {"root": str(self.refs[kind]), "dassl": str(self.dassl), "weights": str(self.weights),
                "result": str(folder / "result.json"),
                "args": reference_options(kind, self.workload, self.refs[kind], data_root or self.data_root,
                                          folder / "output", seed, shots)}

    def reference_run(self, kind: str, seed: int, shots: int | None = None, data_root: Path | None = None) -> dict:
        folder = self._next(f"reference_{kind}_seed{seed}" + (f"_{shots}shots" if shots else ""))
        spec = self.reference_spec(kind, folder, seed, shots, data_root)
        process = run_process(child_command("reference-run", spec, folder / "spec.json"), self.refs[kind],
                              self.reference_env(kind), folder / "log.txt")
        timing = json.loads((folder / "result.json").read_text())
        if timing.get("compat") and not self.raw.get("compat"):
            self.raw["compat"] = timing["compat"]
            print(f"- reference run-time compatibility shim (torch {self.raw['machine'].get('torch')}): "
                  f"{'; '.join(timing['compat'])}", flush=True)
        phases = {"train_s": timing["train_s"], "eval_s": timing["eval_s"], **process}
        phases["fixed_s"] = phases["wall_s"] - phases["train_s"] - phases["eval_s"]
        return {**phases, "detail": timing, "folder": str(folder)}

    def clprompt_run(self, method: str, seed: int, cache=None, shots: int | None = None,
                     data_root: Path | None = None) -> dict:
        """One clprompt run; its own empty feature cache unless ``cache`` (a folder shared by several runs)."""
        folder = self._next(f"clprompt_{method}_seed{seed}" + (f"_{shots}shots" if shots else ""))
        command = clprompt_command(method, self.workload, data_root or self.data_root, self.weights, seed,
                                   folder / "run", cache or folder / "cache", tuple(self.args.clprompt_override),
                                   shots)
        process = run_process(command, self.tree, self.clprompt_env(), folder / "log.txt")
        results = json.loads((folder / "run" / "results.json").read_text())
        phases = {"train_s": sum(t["train_s"] for t in results["timing"]),
                  "eval_s": sum(t["eval_s"] for t in results["timing"]), **process}
        phases["fixed_s"] = phases["wall_s"] - phases["train_s"] - phases["eval_s"]
        detail = {"recorded_peak_rss_mib": results.get("resources", {}).get("peak_rss_mib"),
                  "feature_cache": {k: results.get("feature_cache", {}).get(k) for k in ("used", "hits", "misses")},
                  "train_images": sum(t["train_images"] for t in results["timing"]), "command": command,
                  "evaluation_batch": results.get("evaluation_batch"),
                  "clprompt_commit": results.get("versions", {}).get("clprompt_commit")}
        return {**phases, "detail": detail, "folder": str(folder)}

    # sections
    def prepare(self) -> None:
        print(f"workload files under {self.work} (written once) ...", flush=True)
        write_weights(self.weights)
        split = write_dataset(self.data_root, self.workload)
        if "study" in self.sections:
            write_dataset(self.study_root, self.workload, self.workload.study_train_per_class)
        self.first_test_image = self.data_root / "caltech-101" / "101_ObjectCategories" / \
            json.loads(split.read_text())["test"][0][0]

    def machine(self) -> None:
        import torch

        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor() or platform.machine())
        commits = {name: git_commit(path) for name, path in (("CoOp", self.refs["coop"]), ("Dassl.pytorch", self.dassl),
                                                             ("LAMM", self.refs.get("lamm")), ("clprompt", self.tree))
                   if path is not None}
        self.raw["machine"] = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
                               "python": platform.python_version(), "commits": commits}
        print("## Machine\n")
        print(f"- CPU: {cpu}, {os.cpu_count()} cores; every process runs one thread (OMP_NUM_THREADS=1, "
              f"torch.set_num_threads(1)), no data-loader workers")
        print(f"- torch {torch.__version__}, Python {platform.python_version()}; load average at the start "
              f"{load_average()} (other work on the machine slows both sides; the paired, alternating repeats "
              "share it out)")
        for name, commit in commits.items():
            where = {"CoOp": self.refs["coop"], "Dassl.pytorch": self.dassl, "LAMM": self.refs.get("lamm"),
                     "clprompt": self.tree}[name]
            print(f"- {name}: {commit} ({where})")
        w = self.workload
        print(f"- workload ({w.name}): Caltech101 layout, {w.classes} classes x {w.shots} training images "
              f"({w.classes * w.shots}), {w.classes * w.test_per_class} test images, {w.image_px} px JPEGs; "
              f"random ViT-B/32 at 224 px, fp32; CoOp's recipe, {w.epochs} epoch(s), batch 32\n", flush=True)

    def features(self) -> None:
        print("## Same weights, same features\n")
        print("| reference | max abs diff of the image features | largest feature | diff after L2 normalisation "
              "| eval transforms' max diff | within 1e-4 |")
        print("|---|---|---|---|---|---|")
        for kind in self.refs:
            folder = self._next(f"features_{kind}")
            spec = {**self.reference_spec(kind, folder, 1), "image": str(self.first_test_image)}
            run_process(child_command("features", spec, folder / "spec.json"), self.refs[kind],
                        child_env([self.refs[kind], self.dassl, self.tree]), folder / "log.txt")
            check = json.loads((folder / "result.json").read_text())
            check["ok"] = check["max_abs_diff_normalized"] <= 1e-4 and check["eval_transform_max_diff"] <= 1e-4
            self.raw["features"][kind] = check
            print(f"| {kind} | {check['max_abs_diff']:.2e} | {check['feature_scale']:.3g} | "
                  f"{check['max_abs_diff_normalized']:.2e} | {check['eval_transform_max_diff']:.2e} | "
                  f"{'yes' if check['ok'] else 'NO'} |", flush=True)
            if not check["ok"]:
                sys.exit("the two sides do not compute the same image features: the comparison would be unfair")
        print()

    def first(self) -> None:
        repeats = self.args.repeats
        print(f"## First run: {repeats} paired repeats, order alternating (a fresh process and an empty feature "
              "cache per run)\n", flush=True)
        rows = {}
        for kind in self.refs:
            pairs = []
            for r in range(repeats):
                order = ("reference", "clprompt") if r % 2 == 0 else ("clprompt", "reference")
                pair = {}
                for side in order:
                    pair[side] = self.reference_run(kind, 1) if side == "reference" else self.clprompt_run(kind, 1)
                pairs.append(pair)
                self.raw["first"].append({"method": kind, "repeat": r + 1, **pair})
                ref, ours = pair["reference"], pair["clprompt"]
                print(f"- {kind} repeat {r + 1}/{repeats} (first: {order[0]}): reference train {ref['train_s']:.1f} s, "
                      f"eval {ref['eval_s']:.1f} s, end to end {ref['wall_s']:.1f} s, {ref['peak_rss_mib']:.0f} MiB | "
                      f"clprompt train {ours['train_s']:.1f} s, eval {ours['eval_s']:.1f} s, end to end "
                      f"{ours['wall_s']:.1f} s, {ours['peak_rss_mib']:.0f} MiB", flush=True)
                self.save()
            rows[kind] = {side: {key: statistics.median(p[side][key] for p in pairs)
                                 for key in ("train_s", "eval_s", "wall_s", "fixed_s", "peak_rss_mib")}
                          for side in ("reference", "clprompt")}
            rows[kind]["detail"] = pairs[0]
        print(f"\n### Seconds per phase (median of {repeats})\n")
        print("| method | phase | reference s | clprompt s | reference / clprompt |")
        print("|---|---|---|---|---|")
        for kind, row in rows.items():
            for key, label in (("train_s", "train"), ("eval_s", "eval (test pass)"),
                               ("wall_s", "end to end (process)")):
                print(f"| {kind} | {label} | {row['reference'][key]:.1f} | {row['clprompt'][key]:.1f} | "
                      f"{ratio(row['reference'][key], row['clprompt'][key])} |")
        print(f"\n### Fixed cost: end to end - train - eval (median of {repeats})\n")
        print("The reference's split from its first repeat: imports (torch, Dassl, their train.py), Dassl's "
              "build_trainer (data set, loaders, CLIP from the weights file, CustomCLIP, optimiser), the rest "
              "(interpreter start, collect_env_info, logger, exit).\n")
        print("| method | reference s | imports / build_trainer / rest | clprompt s | reference / clprompt |")
        print("|---|---|---|---|---|")
        for kind, row in rows.items():
            first = row["detail"]["reference"]
            detail = first["detail"]
            rest = first["fixed_s"] - detail["import_s"] - detail["build_trainer_s"]
            print(f"| {kind} | {row['reference']['fixed_s']:.1f} | {detail['import_s']:.1f} / "
                  f"{detail['build_trainer_s']:.1f} / {rest:.1f} | {row['clprompt']['fixed_s']:.1f} | "
                  f"{ratio(row['reference']['fixed_s'], row['clprompt']['fixed_s'])} |")
        print(f"\n### Peak memory: the process's ru_maxrss (median of {repeats})\n")
        print("| method | reference MiB | clprompt MiB | reference / clprompt |")
        print("|---|---|---|---|")
        for kind, row in rows.items():
            print(f"| {kind} | {row['reference']['peak_rss_mib']:.0f} | {row['clprompt']['peak_rss_mib']:.0f} | "
                  f"{ratio(row['reference']['peak_rss_mib'], row['clprompt']['peak_rss_mib'])} |")
        print(flush=True)

    def study(self) -> None:
        seeds, kinds, shots = self.workload.seeds, list(self.refs), self.study_shots
        print(f"## Study: {' and '.join(kinds)} x seeds {', '.join(map(str, seeds))} x "
              f"{', '.join(map(str, shots))} shots\n", flush=True)
        print(f"Data: {self.workload.study_train_per_class} training images per class, so that the draws of "
              "different shot counts overlap only by chance.\n", flush=True)
        # The two sides interleaved in time, so that a change in the machine's speed falls on both: the
        # reference's runs seed by seed, clprompt's whole study after the first seed's, its study at the largest
        # shot count alone after the second's.
        runs = [(kind, seed, k) for seed in seeds for kind in kinds for k in shots]
        parts = [[run for run in runs if run[1] == seed] for seed in seeds]
        reference = []
        self.study_reference(parts[0], reference)
        clprompt, label = self.clprompt_study(kinds, seeds, shots, runs)
        self.raw["study"] = {"mode": self.args.study_mode, "shots": list(shots), "reference": reference,
                             "clprompt": clprompt}
        one = None
        for index, part in enumerate(parts[1:], start=1):
            self.study_reference(part, reference)
            if index == 1 and len(shots) > 1:   # the study at one shot count: methods x seeds only
                k = max(shots)
                print(f"- the same study at {k} shots only, with an empty feature cache:", flush=True)
                one, _ = self.clprompt_study(kinds, seeds, (k,), [(kind, seed, k) for seed in seeds for kind in kinds])
                one["shots"] = k
                self.raw["study"]["one_shot_count"] = one
        print(f"\n| study | reference s (sum of runs) | clprompt s ({label}) | reference / clprompt | "
              "reference peak MiB (largest run) | clprompt peak MiB |")
        print("|---|---|---|---|---|---|")
        if one is not None:
            theirs = [r for r in reference if r["shots"] == one["shots"]]
            total = sum(r["wall_s"] for r in theirs)
            print(f"| {' + '.join(kinds)} x {len(seeds)} seeds, {one['shots']} shots | {total:.1f} | {one['wall_s']:.1f} | "
                  f"{ratio(total, one['wall_s'])} | {max(r['peak_rss_mib'] for r in theirs):.0f} | "
                  f"{one['peak_rss_mib']:.0f} |")
        total_reference = sum(r["wall_s"] for r in reference)
        counts = f"x {len(shots)} shot counts ({', '.join(map(str, shots))})" if len(shots) > 1 else f", {shots[0]} shots"
        print(f"| {' + '.join(kinds)} x {len(seeds)} seeds {counts} | {total_reference:.1f} | "
              f"{clprompt['wall_s']:.1f} | {ratio(total_reference, clprompt['wall_s'])} | "
              f"{max(r['peak_rss_mib'] for r in reference):.0f} | {clprompt['peak_rss_mib']:.0f} |\n", flush=True)
        self.save()

    def study_reference(self, runs: list, reference: list) -> None:
        for kind, seed, k in runs:
            run = self.reference_run(kind, seed, k, self.study_root)
            reference.append({"method": kind, "seed": seed, "shots": k, **run})
            print(f"- reference {kind} seed {seed} {k} shots: {run['wall_s']:.1f} s", flush=True)

    def clprompt_study(self, kinds: list, seeds: tuple, shots: tuple, runs: list) -> tuple[dict, str]:
        """clprompt's side of a study: one sweep (or one process per run), one feature cache."""
        if self.args.study_mode == "sweep":
            return self.clprompt_sweep(kinds, seeds, shots), "the sweep, one process"
        cache = self._next("clprompt_study_cache")
        jobs = [{"method": kind, "seed": seed, "shots": k, **self.clprompt_run(kind, seed, cache, k, self.study_root)}
                for kind, seed, k in runs]
        for job in jobs:
            print(f"- clprompt {job['method']} seed {job['seed']} {job['shots']} shots: {job['wall_s']:.1f} s "
                  f"(feature cache hits {job['detail']['feature_cache']['hits']}, "
                  f"misses {job['detail']['feature_cache']['misses']})", flush=True)
        return ({"wall_s": sum(j["wall_s"] for j in jobs), "peak_rss_mib": max(j["peak_rss_mib"] for j in jobs),
                 "jobs": jobs}, "sum of runs")

    def clprompt_sweep(self, kinds: list, seeds: tuple, shots: tuple) -> dict:
        folder = self._next("clprompt_study")
        command = clprompt_sweep_command(kinds, self.workload, self.study_root, self.weights, seeds, folder / "sweep",
                                         folder / "cache", tuple(self.args.clprompt_override), shots)
        process = run_process(command, self.tree, self.clprompt_env(), folder / "log.txt")
        jobs = []
        for results_path in sorted((folder / "sweep").glob("*/results.json"), key=lambda p: int(p.parent.name)):
            results = json.loads(results_path.read_text())
            config = results.get("config", {})
            jobs.append({"job": results_path.parent.name, "method": results.get("method"), "seed": config.get("seed"),
                         "shots": config.get("protocol", {}).get("shots"), "wall_time_s": results.get("wall_time_s"),
                         "train_s": sum(t["train_s"] for t in results["timing"]),
                         "eval_s": sum(t["eval_s"] for t in results["timing"]),
                         "recorded_peak_rss_mib": results.get("resources", {}).get("peak_rss_mib"),
                         "feature_cache": {k: results.get("feature_cache", {}).get(k) for k in ("hits", "misses")}})
        expected = len(kinds) * len(seeds) * len(shots)
        if len(jobs) != expected or any(j["wall_time_s"] is None for j in jobs):
            sys.exit(f"the clprompt sweep wrote {len(jobs)} results.json, expected {expected}: see {folder / 'log.txt'}")
        outside = max(0.0, process["wall_s"] - sum(j["wall_time_s"] for j in jobs))   # start, between jobs, exit
        for job in jobs:
            print(f"- clprompt sweep job {job['job']} ({job['method']} seed {job['seed']} {job['shots']} shots): "
                  f"{job['wall_time_s']:.1f} s, train + eval {job['train_s'] + job['eval_s']:.1f} s (feature cache "
                  f"hits {job['feature_cache']['hits']}, misses {job['feature_cache']['misses']})", flush=True)
        print(f"- clprompt sweep, {len(jobs)} jobs in one process sharing one feature cache: {process['wall_s']:.1f} s "
              f"({outside:.1f} s of it outside the jobs: start, between jobs, exit)", flush=True)
        return {**process, "jobs": jobs, "outside_jobs_s": outside, "command": command}

    def scaling(self) -> None:
        classes = [c for c in (self.args.scaling_classes or self.workload.scaling) if c <= self.args.max_classes]
        methods = [m for m in self.args.scaling_methods.split(",") if m in self.refs]
        limit_mib = self.args.memory_limit_gb * 1024
        print(f"## Class-count scaling: one training step on fixed image features (batch 32), "
              f"{', '.join(methods)}; each case a fresh process; a case whose estimated peak exceeds "
              f"{self.args.memory_limit_gb:g} GB (--memory-limit-gb) is skipped\n")
        print("Peak: the process's peak RSS (loading the weights included); step: the steps' own peak RSS less "
              "the RSS before them (the autograd graph, activations, gradients; a lower bound where the steps "
              "reuse memory the loading freed, i.e. at few classes).\n")
        print("| method | classes | reference s/step | clprompt s/step | reference / clprompt | reference peak MiB | "
              "clprompt peak MiB | reference step MiB | clprompt step MiB | reference / clprompt (step MiB) |")
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for method in methods:
            measured = {"reference": [], "clprompt": []}
            for count in classes:
                cells = {}
                for side in ("reference", "clprompt"):
                    estimate = estimate_peak_mib(measured[side], count, side)
                    if estimate > limit_mib:
                        cells[side] = {"skipped": f"skipped: needs ~{estimate / 1024:.0f} GB", "estimate_mib": estimate}
                        print(f"- {side} {method} at {count} classes skipped: needs ~{estimate / 1024:.0f} GB "
                              f"(--memory-limit-gb {self.args.memory_limit_gb:g})", flush=True)
                        continue
                    cells[side] = self.scaling_case(side, method, count)
                    measured[side].append((count, cells[side]))
                self.raw["scaling"].append({"method": method, "classes": count, **cells})
                ref, ours = cells["reference"], cells["clprompt"]
                print(f"| {method} | {count} | {cell(ref, 'step_s', '.3f')} | {cell(ours, 'step_s', '.3f')} | "
                      f"{ratio(ref.get('step_s'), ours.get('step_s'))} | {cell(ref, 'peak_rss_mib', '.0f')} | "
                      f"{cell(ours, 'peak_rss_mib', '.0f')} | {cell(ref, 'steps_extra_mib', '.0f')} | "
                      f"{cell(ours, 'steps_extra_mib', '.0f')} | "
                      f"{ratio(ref.get('steps_extra_mib'), ours.get('steps_extra_mib'))} |", flush=True)
                self.save()
        print()

    def scaling_case(self, side: str, method: str, classes: int) -> dict:
        folder = self._next(f"step_{side}_{method}_{classes}")
        common = {"classes": classes, "batch": 32, "steps": self.workload.scaling_steps,
                  "seconds": self.workload.scaling_seconds, "weights": str(self.weights),
                  "result": str(folder / "result.json")}
        if side == "reference":
            spec = {**self.reference_spec(method, folder, 1), **common}
            process = run_process(child_command("reference-step", spec, folder / "spec.json"), self.refs[method],
                                  self.reference_env(method), folder / "log.txt")
        else:
            spec = {**common, "method": method, "clprompt_tree": str(self.tree)}
            process = run_process(child_command("clprompt-step", spec, folder / "spec.json"), self.tree,
                                  self.clprompt_env(), folder / "log.txt")
        result = {**json.loads((folder / "result.json").read_text()), **process}
        # the child reset its peak RSS before the steps, so ru_maxrss is the steps' peak: the process's is the larger
        result["peak_rss_mib"] = max(process["peak_rss_mib"], result.get("load_peak_rss_mib") or 0.0)
        return result

    def save(self) -> None:
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(self.raw, indent=2, default=str))


# Before two cases of a side are measured: (MiB before the steps, MiB per class), measured for ViT-B/32, batch 32,
# fp32 at 100 classes (the reference keeps every prompt's 77 positions in the autograd graph; clprompt cuts at EOT).
PRIOR_MIB = {"reference": (1350.0, 37.0), "clprompt": (1750.0, 11.0)}


def estimate_peak_mib(measured: list, classes: int, side: str = "reference") -> float:
    """A case's peak RSS from the same side's measured cases ``[(classes, result), ...]``: the RSS before the
    steps plus the steps' own peak, extrapolated linearly in the class count from the two largest cases, and
    at least the loading peak; before two cases are measured, ``PRIOR_MIB``."""
    if len(measured) < 2:
        base, per_class = PRIOR_MIB[side]
        return base + per_class * classes
    (c0, r0), (c1, r1) = measured[-2], measured[-1]
    if r0.get("steps_extra_mib") is None or r1.get("steps_extra_mib") is None:
        extra0, extra1, base = r0["peak_rss_mib"], r1["peak_rss_mib"], 0.0
    else:
        extra0, extra1, base = r0["steps_extra_mib"], r1["steps_extra_mib"], r1["rss_before_steps_mib"]
    slope = max(0.0, (extra1 - extra0) / (c1 - c0)) if c1 != c0 else 0.0
    return max(r1["peak_rss_mib"], base + extra1 + slope * (classes - c1))


def load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg()) + " (1/5/15 min)"
    except OSError:
        return "unknown"


def ratio(reference, ours) -> str:
    if reference is None or ours is None or ours <= 0:
        return "-"
    return f"{reference / ours:.2f}x"


def cell(result: dict, key: str, fmt: str) -> str:
    if "skipped" in result:
        return result["skipped"]
    return "-" if result.get(key) is None else format(result[key], fmt)


def git_commit(path: Path) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


# --- command line -----------------------------------------------------------------------------------------


CHECKOUTS = {  # flag -> (files a checkout has, where to get it)
    "--coop": (("train.py", "trainers/coop.py", "clip/clip.py", "configs/trainers/CoOp/vit_b32_ep50.yaml"),
               "git clone https://github.com/KaiyangZhou/CoOp"),
    "--dassl": (("dassl/engine/trainer.py",), "git clone https://github.com/KaiyangZhou/Dassl.pytorch"),
    "--lamm": (("train.py", "trainers/coop.py", "helpers.py", "configs/trainers/CoOp/vit_b32_ep50.yaml"),
               "git clone https://github.com/gaojingsheng/LAMM"),
}


def check_checkout(flag: str, value) -> None:
    """One line and exit 2 when a checkout is not given or is not what the flag names."""
    files, clone = CHECKOUTS[flag]
    if not value:
        sys.exit(f"error: {flag} is required: the path of a checkout ({clone})")
    path = Path(value).expanduser()
    if not path.is_dir():
        sys.exit(f"error: {flag} {value}: no such folder (give a checkout: {clone})")
    missing = [f for f in files if not (path / f).exists()]
    if missing:
        sys.exit(f"error: {flag} {value}: not that checkout ({missing[0]} is missing; {clone})")


def check_packages() -> None:
    missing = [pip for module, pip in REFERENCE_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        sys.exit(f"error: the reference code imports packages this Python lacks: {', '.join(missing)}. "
                 f"Install them with: {sys.executable} -m pip install {' '.join(missing)}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coop", help="a checkout of github.com/KaiyangZhou/CoOp (required)")
    parser.add_argument("--dassl", help="a checkout of github.com/KaiyangZhou/Dassl.pytorch (required)")
    parser.add_argument("--lamm", help="a checkout of github.com/gaojingsheng/LAMM (without it: CoOp only)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="paired repeats of the first run (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny variant, the same code paths (about 8 minutes on 2 busy cores): 1 repeat, "
                             "4 classes x 4 shots, 40 test images, 64 px JPEGs (224 px into the model), 2 epochs "
                             "(clprompt refuses epochs <= warm-up epochs), study seeds 1-2 x 2 and 4 shots of 8 training "
                             "images per class, scaling at 4 and 10 classes")
    parser.add_argument("--only", choices=["first", "study", "scaling"], help="run one section (default: all)")
    parser.add_argument("--clprompt-tree", help="run clprompt from this checkout (first on PYTHONPATH), e.g. an "
                                                "older commit, against the same reference (default: this one)")
    parser.add_argument("--clprompt-override", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra Hydra override for every clprompt run (repeatable)")
    parser.add_argument("--json", help="save the raw numbers to this file")
    parser.add_argument("--max-classes", type=int, default=1000, help="scaling: the largest class count (default 1000)")
    parser.add_argument("--memory-limit-gb", type=float, default=20.0,
                        help="scaling: skip a case whose estimated peak RSS exceeds this (default 20)")
    parser.add_argument("--scaling-methods", default="coop", help="scaling: coop, lamm or coop,lamm (default coop)")
    parser.add_argument("--scaling-classes", type=lambda text: tuple(int(c) for c in text.split(",")),
                        help="scaling: the class counts (default 10,100,250,1000; --quick 4,10)")
    parser.add_argument("--study-shots", type=lambda text: tuple(int(k) for k in text.split(",")),
                        help="study: the shot counts (default 4,16; --quick 2,4); e.g. 1,2,4,8,16 for CoOp's table")
    parser.add_argument("--study-mode", choices=["sweep", "processes"], default="sweep",
                        help="study, clprompt side: one Hydra multirun (default) or one process per run as CoOp's "
                             "scripts run theirs; either way one feature-cache folder")
    parser.add_argument("--work", default=os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"),
                                                      "clprompt-reference-speed"),
                        help="weights, data and runs (default: ~/.cache/clprompt-reference-speed); the weights and "
                             "data are written once and reused")
    parser.add_argument("--keep", action="store_true", help="keep this invocation's run folders (logs, outputs)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    workload = QUICK if args.quick else FULL
    if args.study_shots and not all(1 <= k <= workload.study_train_per_class for k in args.study_shots):
        sys.exit(f"error: --study-shots {','.join(map(str, args.study_shots))}: each shot count must be 1 to "
                 f"{workload.study_train_per_class} (the study's training images per class)")
    check_checkout("--coop", args.coop)
    check_checkout("--dassl", args.dassl)
    if args.lamm:
        check_checkout("--lamm", args.lamm)
    if args.clprompt_tree and not (Path(args.clprompt_tree) / "clprompt" / "run.py").exists():
        sys.exit(f"error: --clprompt-tree {args.clprompt_tree}: no clprompt/run.py there")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        sys.exit("error: --repeats must be 1 or more")
    check_packages()
    bench = Bench(args, workload)
    started = time.perf_counter()
    bench.machine()
    bench.prepare()
    bench.features()
    for section in bench.sections:
        getattr(bench, section)()
    bench.raw["total_s"] = time.perf_counter() - started
    bench.raw["machine"]["load_average_end"] = load_average()
    bench.save()
    print(f"total {bench.raw['total_s'] / 60:.1f} min; load average at the end {load_average()}; "
          f"raw numbers: {args.json or '(no --json)'}; runs: "
          f"{bench.session if args.keep else 'deleted (--keep keeps them)'}")
    if not args.keep:
        shutil.rmtree(bench.session, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
