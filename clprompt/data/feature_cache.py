"""Image features computed once: the frozen image tower's output per (encoder, dataset, views, sample, view).

For a method whose image side is frozen, the features of an image in a given view never change during a
run, nor between the runs of a sweep that share the backbone and the data. ``FeatureCache`` keeps them
in memory and on disk; ``ExperienceFeatures`` is what the strategy calls: it turns an experience's images
into a dataset of features (training: the current epoch's view; evaluation: the fixed view), encoding
only what the cache does not hold yet.

Keys. The *encoder* is a hash of the image tower's weights, the autocast dtype, the device type and the
torch / open_clip versions (features from another tower, precision or kernel set are never read). The
*dataset* is the images' content fingerprint (``LabelledImages.fingerprint``: pixels, or file paths and
sizes). The *views* are the transform's identity (its repr, kind and augmentation seed). A *sample* is
its index in that dataset (``sample_id``), so a few-shot draw, a noisy relabelling or another class
order reads the same features. The *view* is the epoch's view number (0 for a deterministic transform).

On disk: ``<dir>/<hash of encoder, dataset, views>/key.json`` (the key in words) and, per view,
``view_<v>/shard-<uuid>.pt`` files of ``{"ids": int64 [n], "features": [n, d]}``. Each shard is written
to a temporary name and renamed, so a crash never leaves a half-written shard under a real name, and two
jobs of a sweep writing the same samples only add equal shards. Shards load with ``weights_only=True``;
one that cannot be read is reported and its samples are encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from avalanche.benchmarks.utils.classification_dataset import (
    _as_taskaware_supervised_classification_dataset as as_supervised_dataset,
)
from torch.utils.data import DataLoader, Dataset

from clprompt.training.distributed import Distributed
from clprompt.errors import ConfigValueError
from scenarios.atomic_write import write_atomic

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


def digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def encoder_identity(image_tower: torch.nn.Module, amp_dtype: Optional[torch.dtype], device: torch.device) -> dict:
    """What decides the features an image tower computes: its weights, precision, device type, versions."""
    import open_clip

    weights = hashlib.sha256()
    for name, tensor in sorted(image_tower.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return {"weights_sha256": weights.hexdigest(), "autocast": str(amp_dtype), "device_type": device.type,
            "torch": torch.__version__, "open_clip": open_clip.__version__}


@dataclass(frozen=True)
class FeatureKey:
    """One table of features: encoder x dataset x views (each a hash), and the view number."""

    encoder: str
    dataset: str
    views: str
    view: int

    @property
    def namespace(self) -> str:
        return digest([self.encoder, self.dataset, self.views])[:32]


class FeatureCache:
    """Features by (key, sample id), in memory for the run and on disk under ``directory`` (None: memory only).

    ``hits`` and ``misses`` count samples looked up and found / encoded.
    """

    def __init__(self, directory: Optional[str | Path], distributed: Optional[Distributed] = None):
        """distributed: the processes of a torchrun run, which decide their misses together (the union),
        encode them in shares and let the main one write the shards."""
        self.distributed = distributed or Distributed()
        self.directory = Path(directory).expanduser() if directory else None
        self.hits = self.misses = 0
        self._tables: dict[FeatureKey, tuple[np.ndarray, torch.Tensor]] = {}
        self._described: dict[str, dict] = {}
        if self.directory is not None:
            check_writable(self.directory)

    def describe(self, key: FeatureKey, words: dict) -> None:
        """Record what a key's hashes stand for (written once to ``key.json`` beside its shards)."""
        self._described[key.namespace] = words

    def _folder(self, key: FeatureKey) -> Path:
        return self.directory / key.namespace / f"view_{key.view}"

    def _load(self, key: FeatureKey) -> Optional[tuple[np.ndarray, torch.Tensor]]:
        if self.directory is None or not self._folder(key).is_dir():
            return None
        ids, features = [], []
        for shard in sorted(self._folder(key).glob("shard-*.pt")):
            try:
                payload = torch.load(shard, map_location="cpu", weights_only=True)
                shard_ids, shard_features = payload["ids"], payload["features"]
                if shard_ids.ndim != 1 or shard_features.shape[0] != shard_ids.shape[0]:
                    raise ValueError(f"ids {tuple(shard_ids.shape)} and features {tuple(shard_features.shape)}")
            except Exception as error:  # a foreign or damaged file: say so, encode its samples again
                log.warning("feature cache: ignoring unreadable shard %s (%s); its samples are encoded again",
                            shard, error)
                continue
            ids.append(shard_ids.numpy())
            features.append(shard_features)
        if not ids:
            return None
        return merge(np.concatenate(ids), torch.cat(features))

    def _save(self, key: FeatureKey, ids: np.ndarray, features: torch.Tensor) -> None:
        if self.directory is None:
            return
        folder = self._folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        described = folder.parent / "key.json"
        if key.namespace in self._described and not described.exists():
            write_atomic(described, lambda path: path.write_text(json.dumps(self._described[key.namespace], indent=2)))
        payload = {"ids": torch.from_numpy(np.asarray(ids, dtype=np.int64)), "features": features.contiguous()}
        write_atomic(folder / f"shard-{uuid.uuid4().hex}.pt", lambda path: torch.save(payload, path))

    def get(self, key: FeatureKey, ids: np.ndarray, encode: Callable[[np.ndarray], torch.Tensor],
            keep: bool = True) -> torch.Tensor:
        """Features [len(ids), d] of samples ``ids`` (in that order).

        encode(positions) computes the features of ``ids[positions]`` (the samples not cached yet).
        keep: hold the table in memory for later calls of this run (evaluation's fixed view); a training
        view is read from disk when needed again.
        """
        ids = np.asarray(ids, dtype=np.int64)
        table = self._tables.get(key) or self._load(key)
        found = np.zeros(len(ids), dtype=bool)
        rows = np.zeros(len(ids), dtype=np.int64)
        if table is not None:
            table_ids, _ = table
            where = np.clip(np.searchsorted(table_ids, ids), 0, len(table_ids) - 1)
            found = table_ids[where] == ids
            rows = where
        missing = np.flatnonzero(self.distributed.union(~found))
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        if len(missing):
            new_ids, first = np.unique(ids[missing], return_index=True)
            new = encode(missing[first]).detach().cpu()
            if self.distributed.is_main:
                self._save(key, new_ids, new)
            self.distributed.barrier()   # every process reads the shard from the disk state they share
            table = merge(new_ids, new) if table is None else merge(
                np.concatenate([table[0], new_ids]), torch.cat([table[1], new.to(table[1].dtype)]))
            rows = np.searchsorted(table[0], ids)
        if keep:
            self._tables[key] = table
        else:
            self._tables.pop(key, None)
        return table[1][torch.from_numpy(rows)]

    def record(self) -> dict:
        return {"dir": str(self.directory) if self.directory else None, "hits": self.hits, "misses": self.misses}


def merge(ids: np.ndarray, features: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Sorted unique ids and their feature rows (duplicates from concurrent writers are equal)."""
    unique, first = np.unique(ids, return_index=True)
    return unique, features[torch.from_numpy(first)]


def check_writable(directory: Path) -> None:
    """Refuse, before any work, a cache folder that cannot be created or written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigValueError(
            f"cache.dir={directory} is not writable ({error.strerror or error}): choose a folder you can write "
            "(cache.dir=/some/folder), keep features in memory only (cache.dir=null), or turn the cache off "
            "(train.feature_cache=off)") from None


class FeatureTable(Dataset):
    """Features of an experience's samples, in the experience's order; ``features`` is swapped per epoch."""

    def __init__(self, features: torch.Tensor, targets):
        self.features = features
        self.targets = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.features[index], self.targets[index]


class ExperienceFeatures:
    """The strategy's door to the cache: experiences in, datasets of image features out.

    sources: per stream name ('train', 'valid', 'test'), the split dataset its experiences come from
    (its ``fingerprint`` and ``transform`` define the key). encode(images) -> features runs the frozen
    tower (under the run's autocast, without gradients). Encoding reads images with ``loader_args``
    (workers, pinned memory) and its own generator, so the run's random stream is not touched; or, given
    ``images`` (``clprompt.data.image_batches.ImageBatches``), makes them on the device from the sample ids.
    """

    def __init__(self, cache: FeatureCache, encoder: dict, sources: dict, encode: Callable, device: torch.device,
                 batch_size: int = 256, loader_args: Optional[dict] = None, images=None):
        self.cache, self.sources, self.encode, self.images = cache, sources, encode, images
        self.device, self.batch_size = device, batch_size
        self.loader_args = dict(loader_args or {})
        self.loader_args.pop("persistent_workers", None)  # one pass per call
        self.encoder = digest(encoder)
        self.encoder_words = encoder

    def _key(self, stream_name: str, view: Optional[int]) -> tuple[FeatureKey, bool]:
        if stream_name not in self.sources:
            raise ValueError(f"no source dataset for stream {stream_name!r}")
        source = self.sources[stream_name]
        transform = source.transform
        views = transform.identity() if hasattr(transform, "identity") else {"transform": repr(transform), "random": False}
        random = bool(views.get("random"))
        key = FeatureKey(self.encoder, source.fingerprint(), digest(views), int(view) if random else 0)
        self.cache.describe(key, {"encoder": self.encoder_words, "dataset": source.fingerprint(),
                                  "dataset_type": type(source).__name__, "views": views})
        return key, random

    def _encode_positions(self, dataset, positions: np.ndarray, split: str, view: int) -> torch.Tensor:
        """Features of the experience's items at ``positions``; over a torchrun run's processes, each encodes
        its share and the shares are gathered in order."""
        split_up = self.cache.distributed
        if split_up.enabled and len(positions) >= split_up.world_size:
            mine = self._encode_own(dataset, positions[split_up.share(len(positions))], split, view)
            return split_up.gather_shares(mine, len(positions))
        return self._encode_own(dataset, positions, split, view)

    def _encode_own(self, dataset, positions: np.ndarray, split: str, view: int) -> torch.Tensor:
        if self.images is not None:
            ids = torch.from_numpy(np.asarray(dataset.sample_id, dtype=np.int64)[positions])
            return torch.cat([self.encode(self.images.images(split, chunk, view)).cpu()
                              for chunk in ids.split(self.batch_size)])
        loader = DataLoader(dataset.subset(positions.tolist()), batch_size=self.batch_size, shuffle=False,
                            generator=torch.Generator(), **self.loader_args)
        features = []
        for batch in loader:
            features.append(self.encode(batch[0].to(self.device, non_blocking=True)).cpu())
        return torch.cat(features)

    def features(self, experience, view: Optional[int] = None) -> torch.Tensor:
        """[len(experience.dataset), d] features of the experience's samples in ``view`` (None: 0)."""
        dataset = experience.dataset
        split = experience.origin_stream.name
        key, random = self._key(split, view or 0)
        ids = np.asarray(dataset.sample_id, dtype=np.int64)
        with torch.inference_mode(False), torch.no_grad():  # plain tensors: training reads them too
            return self.cache.get(key, ids, lambda positions: self._encode_positions(dataset, positions, split,
                                                                                     key.view), keep=not random)

    def dataset(self, experience, view: Optional[int] = None, fill: bool = True):
        """(table, Avalanche dataset of (features, label, task)) for the experience, in its order.

        fill=False leaves the table empty, for the caller to set ``table.features`` (per epoch).
        """
        table = FeatureTable(self.features(experience, view) if fill else None, experience.dataset.targets)
        return table, as_supervised_dataset(table)


def resolve_mode(mode: str, method_frozen: bool, method_name: str) -> tuple[bool, str]:
    """(use the cache?, why) for ``train.feature_cache=mode``."""
    if mode not in MODES:
        raise ConfigValueError(f"train.feature_cache={mode!r}; choose auto, on or off")
    if mode == "off":
        return False, "off (train.feature_cache=off)"
    if not method_frozen:
        if mode == "on":
            raise ConfigValueError(
                f"train.feature_cache=on, but {method_name}'s prompts change the image features (its image side "
                "is not frozen), so they cannot be cached: use train.feature_cache=auto or off")
        return False, f"off: {method_name}'s image side is trained"
    return True, f"{mode}: image side frozen"
