"""Test helpers: the run config as the CLI composes it, and dataset folders in the real on-disk layouts
(small, random pixels: test data only)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def compose_config(overrides: list[str]):
    """The run config as ``python -m clprompt.run <overrides>`` would see it."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def write_fashion_mnist(root: Path, train_per_class: int = 3, test_per_class: int = 2, gz: bool = True,
                        folder_name: str = "FashionMNIST") -> Path:
    """A small Fashion-MNIST (or, with folder_name="MNIST", MNIST) in torchvision's layout
    (<root>/<folder_name>/raw), 10 classes."""
    folder = root / folder_name / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, per_class, prefix in (("train", train_per_class, "train"), ("test", test_per_class, "t10k")):
        labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return folder


def write_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """A small CIFAR-100 in torchvision's pickle layout (<root>/cifar-100-python/{train,test,meta})."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"class_{i}" for i in range(100)]
    names[1] = "aquarium_fish"
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": names, "coarse_label_names": []}, handle)
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), per_class).tolist()
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as handle:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels)}, handle)
    return folder


def failing_zeroshot(fail_on_evaluation: int):
    """A ZeroShot method config target that raises during its ``fail_on_evaluation``-th evaluation."""
    from clprompt.methods.zeroshot import ZeroShot

    class FailingZeroShot(ZeroShot):
        evaluations = 0

        def clear_text_cache(self):
            FailingZeroShot.evaluations += 1
            if FailingZeroShot.evaluations == fail_on_evaluation:
                raise RuntimeError("simulated crash")
            super().clear_text_cache()

    return FailingZeroShot


def failing_zeroshot_on_second_evaluation(**kwargs):
    return failing_zeroshot(2)(**kwargs)


def traced_run(tmp_path: Path, monkeypatch, name: str, overrides: list[str]):
    """Run the tiny-colours stream in-process (tiny model); returns (per-step training losses, results)."""
    from clprompt.run import run
    from clprompt.training.strategy import PromptStrategy

    losses = []
    original = PromptStrategy.criterion

    def recording(self):
        loss = original(self)
        if self.is_training:
            losses.append(float(loss))
        return loss
    monkeypatch.setattr(PromptStrategy, "criterion", recording)
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "progress=false", "scenario.train_per_class=6",
                          f"cache.dir={tmp_path / 'cache'}", *overrides])
    results = run(cfg, tmp_path / name)
    monkeypatch.setattr(PromptStrategy, "criterion", original)
    return np.array(losses), results


def signalling_zeroshot_on_second_evaluation(**kwargs):
    """ZeroShot that sends this process the signal named by $CLPROMPT_TEST_SIGNAL in its 2nd evaluation
    (a pre-emption or a Ctrl-C at a known moment)."""
    import os
    import signal

    from clprompt.methods.zeroshot import ZeroShot

    class SignallingZeroShot(ZeroShot):
        evaluations = 0

        def clear_text_cache(self):
            SignallingZeroShot.evaluations += 1
            if SignallingZeroShot.evaluations == 2:
                os.kill(os.getpid(), getattr(signal, os.environ["CLPROMPT_TEST_SIGNAL"]))
            super().clear_text_cache()

    return SignallingZeroShot(**kwargs)


def killed_prompt_tuning(**kwargs):
    """A PromptTuning method (CoOp, LAMM, ...: the method's config with this _target_) that SIGKILLs its
    own process at $CLPROMPT_TEST_KILL: 'train:N' (the N-th training step of the run), 'eval:N' (the
    start of the N-th evaluation, the one after experience N) or 'checkpoint:N' (halfway through writing
    experience N's checkpoint: a partial temporary file, the rename never done)."""
    import os
    import signal

    import torch

    import clprompt.training.checkpoint
    from clprompt.methods.prompt_tuning import PromptTuning

    where, _, at = os.environ.get("CLPROMPT_TEST_KILL", "none:0").partition(":")
    at = int(at)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "checkpoint":
        save = clprompt.training.checkpoint.save

        def half_save(run_dir, payload):
            if payload["experiences_done"] == at:
                temporary = Path(run_dir) / f".{clprompt.training.checkpoint.FILE}.{os.getpid()}.tmp"
                temporary.write_bytes(b"PK\x03\x04 half a checkpoint")
                die()
            return save(run_dir, payload)
        clprompt.training.checkpoint.save = half_save

    class Killed(PromptTuning):
        steps = 0
        evaluations = 0

        def logits_from_image_features(self, image):
            if self.training and torch.is_grad_enabled():
                Killed.steps += 1
                if where == "train" and Killed.steps == at:
                    die()
            return super().logits_from_image_features(image)

        def clear_text_cache(self):
            Killed.evaluations += 1
            if where == "eval" and Killed.evaluations == at:
                die()
            super().clear_text_cache()

    return Killed(**kwargs)


def killed_in_second_evaluation(**kwargs):
    """The method named by $CLPROMPT_TEST_METHOD (a dotted class path) that SIGKILLs its own process when
    its second evaluation starts (after experience 2's checkpoint is written)."""
    import importlib
    import os
    import signal

    module, _, name = os.environ["CLPROMPT_TEST_METHOD"].rpartition(".")
    base = getattr(importlib.import_module(module), name)

    class Killed(base):
        evaluations = 0

        def clear_text_cache(self):
            Killed.evaluations += 1
            if Killed.evaluations == 2 and os.environ.get("CLPROMPT_TEST_KILL") == "eval:2":
                os.kill(os.getpid(), signal.SIGKILL)
            super().clear_text_cache()

    return Killed(**kwargs)


def discarded_sigterm_prompt_tuning(**kwargs):
    """A PromptTuning method that receives SIGTERM at its 3rd training step somewhere the raised exception is
    discarded, as a library's fork hook does it (filelock's, when a DataLoader starts its workers: "Exception
    ignored in ..."), and carries on; with $CLPROMPT_TEST_AFTER=error an error follows at once, as the
    DataLoader's when the same signal to the process group killed its workers."""
    import os
    import signal

    import torch

    from clprompt.methods.prompt_tuning import PromptTuning

    class DiscardedSigterm(PromptTuning):
        steps = 0

        def logits_from_image_features(self, image):
            if self.training and torch.is_grad_enabled():
                DiscardedSigterm.steps += 1
                if DiscardedSigterm.steps == 3:
                    try:
                        signal.raise_signal(signal.SIGTERM)
                    except BaseException:   # noqa: the hook's "Exception ignored"
                        pass
                    if os.environ.get("CLPROMPT_TEST_AFTER") == "error":
                        raise RuntimeError("DataLoader worker (pid(s) 1) exited unexpectedly")
            return super().logits_from_image_features(image)

    return DiscardedSigterm(**kwargs)
