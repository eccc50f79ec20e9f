"""The training step on cached image features, eager against ``train.compile`` (one invocation).

    python bench/text_step.py                                   # CPU, mini-CLIP
    python bench/text_step.py --device cuda --model vit_b16     # the issue's "LAMM step at batch 32" on a GPU

Per method: C classes ("class i"), a batch of B cached (random, normalised) image features, the method's
loss terms, SGD; times S steps after W warm-up steps (which include the compile), eager and compiled
(``clprompt.training.compiled_step.CompiledTextTower``, the room ``train.compile=on`` installs), and prints
milliseconds per step, the compile time and the largest loss difference between the two over the timed
steps. Random backbone weights (timing only; ``model.pretrained=null``); bf16 autocast on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def build(model: str, method_name: str, classes: int, device):
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from clprompt.stages import scenario_templates

    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", f"method={method_name}",
                                                       "model.pretrained=null"])
    backbone = instantiate(cfg.model)
    names = [f"class {i}" for i in range(classes)]
    method = instantiate(cfg.method, backbone=backbone, class_names=names, **scenario_templates(cfg, {}))
    method = method.to(device).train()
    for module in method.modules():  # one experience holding every class (LAMM grows its labels here)
        if hasattr(module, "adaptation") and module is not method:
            module.adaptation(type("Experience", (), {"classes_in_this_experience": list(range(classes))})())
    method.set_candidate_classes(range(classes))
    return method, cfg


def time_steps(method, device, batch: int, warmup: int, steps: int, compiled) -> tuple[float, float, list]:
    import torch

    from clprompt.training.strategy import autocast_dtype

    amp = autocast_dtype(device, "auto")
    generator = torch.Generator().manual_seed(1)
    dim = method.clip.clip.visual.output_dim
    features = torch.nn.functional.normalize(torch.randn(warmup + steps, batch, dim, generator=generator), dim=-1)
    labels = torch.randint(0, len(method.candidate_classes), (warmup + steps, batch), generator=generator)
    features, labels = features.to(device), labels.to(device)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1e-3, momentum=0.9)
    if compiled is not None:
        compiled.install(method)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    losses, started = [], time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            warm_s, started = time.perf_counter() - started, time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = method.logits_from_image_features(features[step])
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[step]) + method.regularization(logits, labels[step])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            losses.append(loss.detach())
    sync()
    step_ms = 1000 * (time.perf_counter() - started) / steps
    if compiled is not None:
        compiled.remove()
    return step_ms, warm_s, [float(x) for x in losses]


def main() -> None:
    import torch

    from clprompt.training.compiled_step import CompiledTextTower

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="miniclip")
    parser.add_argument("--methods", default="coop,lamm,cls_tuning")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--backend", default="inductor")
    args = parser.parse_args()
    device = torch.device(args.device)
    machine = torch.cuda.get_device_name(0) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads ({platform.processor() or platform.machine()})"
    print(f"{machine}; model={args.model}, {args.classes} classes, batch {args.batch}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, backend {args.backend}\n")
    print("| method | eager ms/step | compiled ms/step | speed-up | compile (warm-up) s | max loss diff |")
    print("|---|---|---|---|---|---|")
    for name in args.methods.split(","):
        results = {}
        for path in ("eager", "compiled"):
            method, _ = build(args.model, name, args.classes, device)  # the same start for both paths
            compiled = CompiledTextTower(device, backend=args.backend) if path == "compiled" else None
            results[path] = time_steps(method, device, args.batch, args.warmup, args.steps, compiled)
        (eager_ms, _, eager_losses), (compiled_ms, compile_s, compiled_losses) = results["eager"], results["compiled"]
        diff = max(abs(a - b) for a, b in zip(eager_losses, compiled_losses))
        print(f"| {name} | {eager_ms:.2f} | {compiled_ms:.2f} | {eager_ms / compiled_ms:.2f}x | {compile_s:.1f} | "
              f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
