"""A run's state after each experience, written atomically, and what a resumed run restores from it.

``checkpoint.pt`` in the run folder holds, after experience k: the method's learned state (its state
dict without the frozen backbone), the accuracy matrix, the per-experience records (timing, storage,
gradient-ratio history), every random generator's state (Python, NumPy, torch CPU and CUDA; the data
order and the ensembles' reseeding draw from these), the config it was computed with and the weights'
identity. Nothing else a later experience reads survives an experience: the optimizer is built afresh
per experience (its momentum starts at zero), the learning rate is a function of the epoch, training
views are pure functions of (seed, sample, view), and the feature cache is content-addressed.

Written through a temporary file and a rename, so the previous checkpoint stays whole until the new one
is complete (a kill while writing leaves the previous one). Plain data and tensors only: it loads with
``torch.load(weights_only=True)``. A resumed run replays the method's per-experience growth (LAMM's
labels, the probe's rows) for the finished experiences, loads the state, sets the generators and
continues with experience k + 1: on CPU its matrix and adapted states are bit-identical to an
uninterrupted run's (``tests/test_resume.py``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from clprompt.config_check import flatten_config, under
from clprompt.errors import ClpromptError
from scenarios.atomic_write import write_atomic

FILE = "checkpoint.pt"
FORMAT = 1


class CheckpointError(ClpromptError):
    """A run folder's checkpoint cannot be resumed from: damaged, foreign, or of another run."""


def rng_states() -> dict:
    """Every generator a run draws from, as plain data and tensors."""
    version, state, gauss = random.getstate()
    key, array, position, has_gauss, cached = np.random.get_state(legacy=True)
    states = {"python": [version, list(state), gauss],
              "numpy": {"key": key, "state": torch.from_numpy(np.asarray(array, dtype=np.int64)),
                        "position": int(position), "has_gauss": int(has_gauss), "cached": float(cached)},
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    numpy = states["numpy"]
    np.random.set_state((numpy["key"], numpy["state"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(run_dir: Path, payload: dict) -> Path:
    """``payload`` (plain data and tensors) as the run's checkpoint, atomically."""
    path = Path(run_dir) / FILE

    def write(temporary: Path) -> None:
        torch.save({"format": FORMAT, **payload}, temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())   # on disk before the rename makes it the checkpoint
    write_atomic(path, write)
    return path


def load(run_dir: Path) -> Optional[dict]:
    """The run folder's checkpoint, or None when it has none; a damaged or foreign file is refused."""
    path = Path(run_dir) / FILE
    for stale in Path(run_dir).glob(f".{FILE}.*.tmp"):  # a killed writer's partial file: never the checkpoint
        stale.unlink()
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(
            f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}): "
            "it is damaged or not a clprompt checkpoint. The run is not restarted over it: move the file away "
            "to start the run from experience 1, or give another run folder (hydra.run.dir=...)"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} is not a clprompt checkpoint of format {FORMAT} (found {found!r}): written by "
                              "another clprompt version or another program. Give another run folder "
                              "(hydra.run.dir=...), or move the file away to start over")
    return checkpoint


def differences(recorded: dict, current: dict, ignore) -> list[str]:
    """'key: recorded -> current' for every flattened key whose value differs, but those under ``ignore``."""
    old, new = flatten_config(recorded), flatten_config(current)
    keys = sorted(set(old) | set(new))
    return [f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}" for key in keys
            if old.get(key, "(unset)") != new.get(key, "(unset)") and not under(key, ignore)]
