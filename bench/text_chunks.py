"""``train.text_chunk``: peak memory and seconds per training step with the text side in class chunks.

    OMP_NUM_THREADS=2 python bench/text_chunks.py            # ViT-B/32-sized text tower: 1000 classes, then 21,000
    python bench/text_chunks.py --quick                      # tiny model, CoOp, 200 and 6000 classes: ~1 minute

Each case runs in a fresh subprocess (so ``ru_maxrss``, the process's peak resident memory, is the case's own):
the method built from the configs with random weights (``model.pretrained=null``, as bench/text_step.py), every
class a candidate (names "class 0", "class 1", ...), ``train.text_chunk`` set as ``configure_text_chunks`` sets
it in a run, then S training steps on a batch of B random normalised image features (the step on cached
features: the text tower over every class, the loss, the backward, SGD), and, where asked, one evaluation of
the class features (no grad, ``torch.inference_mode``). Prints a markdown table and the machine.

Columns: the prompts per chunk under grad / without (auto's choice at the class set's prompt length; "all": one
pass), the peak RSS after building the method (the backbone, the class set's prompt embeddings) and over the
whole case, the mean seconds of the training steps, and the evaluation's seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # Linux: KiB


def run_case(model: str, method_name: str, classes: int, setting, steps: int, batch: int, evaluate: bool) -> dict:
    """One case in this process; returns its measurements."""
    import logging

    import torch
    import torch.nn.functional as F

    logging.disable(logging.WARNING)
    sys.path.insert(0, str(BENCH))
    from text_step import build

    from clprompt.model.clip_adapter import configure_text_chunks

    device = torch.device("cpu")
    started = time.perf_counter()
    method, _ = build(model, method_name, classes, device)
    record = configure_text_chunks(method, setting, device)
    class_ids = list(range(classes))
    length = method._class_set_layout(class_ids)["length"]
    adapter = method.clip
    chunks = {grad: adapter.prompts_per_chunk(classes, length, grad) for grad in (True, False)}
    built_s, built_gib = time.perf_counter() - started, peak_rss_gib()

    generator = torch.Generator().manual_seed(1)
    dim = adapter.clip.visual.output_dim
    features = F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1e-3, momentum=0.9)
    step_s, losses = [], []
    for _ in range(steps):
        started = time.perf_counter()
        logits = method.logits_from_image_features(features)
        loss = F.cross_entropy(logits, labels) + method.regularization(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_s.append(time.perf_counter() - started)
        losses.append(float(loss.detach()))
        del logits, loss
    train_gib = peak_rss_gib()
    eval_s = None
    if evaluate:
        method.eval()
        method.clear_text_cache()
        started = time.perf_counter()
        with torch.inference_mode():
            text = method.candidate_text_features()
        eval_s = time.perf_counter() - started
        assert text.shape[0] == classes and bool(torch.isfinite(text).all())
    return {"method": method_name, "model": model, "classes": classes, "setting": setting, "length": length,
            "chunk_train": chunks[True], "chunk_eval": chunks[False], "record": record, "build_s": built_s,
            "built_gib": built_gib, "train_gib": train_gib, "peak_gib": peak_rss_gib(), "step_s": step_s,
            "losses": losses, "eval_s": eval_s, "threads": torch.get_num_threads()}


def in_subprocess(case: dict, timeout: float, rss_limit_gib: float) -> dict:
    """``run_case(**case)`` in a fresh Python (its own peak RSS), stopped when its resident memory passes
    ``rss_limit_gib`` or it runs past ``timeout``; a failure is reported, not raised."""
    command = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(case)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=BENCH.parent)
        started, stopped = time.monotonic(), None
        while child.poll() is None:
            time.sleep(0.5)
            if resident_gib(child.pid) > rss_limit_gib:
                stopped = f"stopped: resident memory passed {rss_limit_gib:g} GiB"
            elif time.monotonic() - started > timeout:
                stopped = f"stopped: ran past {timeout:.0f} s"
            if stopped:
                child.kill()
                child.wait()
                return {**case, "method": case["method_name"], "error": stopped}
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        tail = (stderr or stdout).strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        return {**case, "method": case["method_name"], "error": f"exit {child.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


def resident_gib(pid: int) -> float:
    """A running process's resident memory (Linux /proc), 0 where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2 ** 20
    except (OSError, ValueError):
        pass
    return 0.0


def chunk_text(result: dict, grad: bool) -> str:
    chunk = result["chunk_train" if grad else "chunk_eval"]
    return "all" if chunk >= result["classes"] else str(chunk)


def row(result: dict) -> str:
    name = f"{result['method']} | {result['classes']} | {result['setting']}"
    if "error" in result:
        return f"| {name} | - | - | - | - | {result['error']} |"
    steps = result["step_s"]
    step = f"{sum(steps) / len(steps):.1f} ({len(steps)} steps)" if steps else "-"
    evaluation = f"{result['eval_s']:.1f}" if result["eval_s"] is not None else "-"
    return (f"| {name} | {chunk_text(result, True)} / {chunk_text(result, False)} | {result['built_gib']:.2f} | "
            f"{result['peak_gib']:.2f} | {step} | {evaluation} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CoOp on the tiny model: 200 classes (auto / off / 16), 6000 (auto); "
                        "about a minute, mostly the 4 subprocesses' imports")
    parser.add_argument("--model", default="vit_b32")
    parser.add_argument("--methods", default="coop,lamm")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--settings", default="auto,off", help="train.text_chunk values compared at --classes")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--big-classes", type=int, default=21000, help="0: no large class set")
    parser.add_argument("--big-methods", default="coop")
    parser.add_argument("--big-steps", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per case")
    parser.add_argument("--rss-limit", type=float, default=20, help="GiB: a case whose resident memory passes it "
                        "is stopped and reported")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))), flush=True)
        return
    if args.quick:
        args.model, args.methods, args.classes, args.settings, args.steps = "tiny", "coop", 200, "auto,off,16", 2
        args.big_classes, args.big_methods, args.big_steps = 6000, "coop", 2

    def setting(value: str):
        return int(value) if value.isdigit() else value

    cases = [dict(model=args.model, method_name=name, classes=args.classes, setting=setting(value), steps=args.steps,
                  batch=args.batch, evaluate=False)
             for name in args.methods.split(",") for value in args.settings.split(",")]
    if args.big_classes:
        cases += [dict(model=args.model, method_name=name, classes=args.big_classes, setting="auto",
                       steps=args.big_steps, batch=args.batch, evaluate=True) for name in args.big_methods.split(",")]

    import torch

    print(f"{time.strftime('%Y-%m-%d')}; {platform.processor() or platform.machine()} ({platform.platform()}), "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); model={args.model} "
          f"(random weights), fp32, CPU, batch {args.batch} of cached image features\n")
    print("| method | classes | text_chunk | prompts per chunk (train / eval) | peak RSS after build GiB | "
          "peak RSS GiB | s / training step | eval s |")
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for case in cases:
        result = in_subprocess(case, args.timeout, args.rss_limit)
        results.append(result)
        print(row(result), flush=True)
    print()
    for result in results:   # the chunked and the one-pass runs of a method start equal: their losses agree
        if "error" not in result and result["setting"] in (0, "off"):
            for other in results:
                if other is not result and "error" not in other and other["method"] == result["method"] \
                        and other["classes"] == result["classes"]:
                    diff = max(abs(a - b) for a, b in zip(result["losses"], other["losses"]))
                    print(f"{result['method']}, {result['classes']} classes: text_chunk={other['setting']} against "
                          f"off, largest loss difference over the steps {diff:.1e}")
    lengths = sorted({(r["method"], r["length"]) for r in results if "error" not in r})
    print("prompt lengths (tokens, the class set's cut): " + ", ".join(f"{m} {n}" for m, n in lengths))


if __name__ == "__main__":
    main()
