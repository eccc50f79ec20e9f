"""``train.compile``: the text tower's training forward as one captured graph.

A text-prompt training step (CoOp, LAMM, CLS tuning, full prompt tuning, CoOp+LAMM, MaPLe's text side,
the cached-feature head) is dominated by the text tower run over a few short prompts: a dozen blocks of
small kernels, where launching them costs more than computing them. ``torch.compile`` captures that
forward (and AOTAutograd its backward) once per prompt shape; on CUDA with ``mode="reduce-overhead"``
the captured graph is replayed as a CUDA graph, one launch per step.

What is compiled: ``CLIPAdapter.text_tower`` (word embeddings with the learned vectors in place -> text
features), for steps that need its gradient. Evaluation and frozen text (VPT) keep the eager tower:
they run once per class set. The capture is dynamic in the class set's size and the prompts' length, so
a stream compiles once (on CUDA a graph is recorded per shape it meets); the math is the eager tower's,
to floating-point reordering (the suite checks losses to 1e-5 in fp32).

``train.compile``: ``auto`` (on for CUDA, off on CPU, where a compile costs tens of seconds on 2 cores and
a sandbox step is short), ``on`` (also on CPU, inductor's default mode there), ``off``.
``train.compile_backend``: torch.compile's backend (``inductor``; ``aot_eager`` captures without code
generation, to debug a capture).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from clprompt.model.clip_adapter import CLIPAdapter
from clprompt.errors import ConfigValueError

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


def resolve_compile(mode: str, device: torch.device) -> tuple[bool, str]:
    """(compile the text tower?, why) for ``train.compile=mode`` on ``device``."""
    if mode not in MODES:
        raise ConfigValueError(f"train.compile={mode!r}; choose auto (on for CUDA), on or off")
    if mode == "off":
        return False, "off (train.compile=off)"
    if mode == "on":
        return True, "on (train.compile=on)"
    if device.type == "cuda":
        return True, "on (auto: CUDA)"
    return False, "off (auto: CPU, where compiling costs more than it saves on short runs; train.compile=on forces it)"


class CompiledTextTower:
    """Swaps every text tower of a method for its compiled forward while the method trains."""

    def __init__(self, device: torch.device, backend: str = "inductor"):
        self.device = device
        self.backend = backend
        self.mode: Optional[str] = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
        self._compiled: dict[int, object] = {}   # one compiled forward per adapter (kept over experiences)
        self.installed: list[CLIPAdapter] = []

    def _compiled_for(self, adapter: CLIPAdapter):
        if id(adapter) not in self._compiled:
            # dynamic: one capture for every class-set size and prompt length a stream meets (a static
            # capture per shape cost a 10-experience CPU run twice the compiling)
            self._compiled[id(adapter)] = torch.compile(adapter.eager_text_tower, backend=self.backend,
                                                        mode=self.mode, dynamic=True)
        return self._compiled[id(adapter)]

    def install(self, method: torch.nn.Module) -> None:
        """Before an experience's training: its text towers run compiled when their gradient is needed."""
        for module in method.modules():
            if isinstance(module, CLIPAdapter):
                module.compiled_text_tower = self._compiled_for(module)
                self.installed.append(module)

    def remove(self) -> None:
        """After training: back to the eager towers (evaluation, saving, copying the method)."""
        for module in self.installed:
            module.compiled_text_tower = None
        self.installed = []

    def record(self) -> dict:
        return {"backend": self.backend, "torch_compile_mode": self.mode or "default"}
