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
``view_<v>/shard-<uuid>.pt`` files of ``{"format": 2, "key": {...}, "ids": int64 [n], "features": [n, d],
"sha256": ...}``. The checksum covers the key's fields, the ids' and features' dtypes and shapes and every
byte of both. It is verified when a run first reads a file, and again whenever the file changes (its inode,
size or modification time): the cache is shared by every run of a sweep and by later sweeps, so a shard
altered on disk (flipped bits, a zeroed block, a copy under another key's folder) would otherwise be
trained and scored on without a word. A shard that fails (or cannot be unpickled, or was written by an
older clprompt without a checksum: nothing vouches for it) is moved aside, never deleted, into
``rejected/`` beside it under its own name; its samples are encoded again; one warning per run says how
many and where, and ``record()`` counts them (``rejected``).

Concurrent runs. A shard is written to a temporary name, flushed and renamed (``write_atomic``), under a
fresh uuid: a reader sees a whole shard or none, writers never touch each other's files, and two runs
writing the same samples only add shards of equal features. Only a shard that fails its check is ever
moved; a shard another run moves away between the listing and the read is skipped (its samples are
encoded again). A folder that cannot be written (read-only, a full disk) is read as it is and written no
more: one warning, ``record()``'s ``write_failed``, and features not on disk are encoded again when
needed, as with ``cache.dir=null``; results are unchanged.

Freshly encoded features that are not finite stop the run (``NonFiniteFeaturesError``): the frozen image
tower overflowed or its weights are damaged, which no learning rate fixes; they are never written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from avalanche.benchmarks.utils.classification_dataset import (
    _as_taskaware_supervised_classification_dataset as as_supervised_dataset,
)
from torch.utils.data import DataLoader, Dataset

from clprompt.training.encoding_batch import EncodingBatch, EncodingBatchSampler
from clprompt.training.distributed import Distributed
from clprompt.errors import ClpromptError, ConfigValueError
from scenarios.atomic_write import write_atomic

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
SHARD_FORMAT = 2          # 2: checksummed shards; shards without a "format" field were written before it
REJECTED = "rejected"     # the folder, beside a view's shards, that failed shards are moved into


class NonFiniteFeaturesError(ClpromptError):
    """The frozen image tower produced NaN or infinite features (not a training problem)."""


def digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def encoder_identity(image_tower: torch.nn.Module, amp_dtype: Optional[torch.dtype], device: torch.device,
                     weights_file_sha256: Optional[str] = None) -> dict:
    """What decides the features an image tower computes: its weights, precision, device type, versions.

    The weights are the checkpoint file's sha256 when the tower was loaded from a file (``load_backbone``
    computed it while building the model, and a strict load puts exactly the file's values in the tower,
    cast to the dtypes recorded here); otherwise (random init, a downloaded tag) the tensors are hashed."""
    import open_clip

    state = image_tower.state_dict()
    if weights_file_sha256:
        weights = {"weights_file_sha256": weights_file_sha256,
                   "weights_dtypes": sorted({str(t.dtype) for t in state.values()})}
    else:
        hashed = hashlib.sha256()
        for name, tensor in sorted(state.items()):
            hashed.update(name.encode())
            hashed.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
        weights = {"weights_sha256": hashed.hexdigest()}
    # the modules, not only the weights: the same weights with QuickGELU or GELU compute other features
    architecture = hashlib.sha256(repr(image_tower).encode()).hexdigest()
    return {**weights, "architecture_sha256": architecture, "autocast": str(amp_dtype),
            "device_type": device.type, "torch": torch.__version__, "open_clip": open_clip.__version__}


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

    ``hits`` and ``misses`` count samples looked up and found / encoded; ``rejected`` maps each shard that
    failed its check this run to why; ``write_failed`` is why the folder could not be written (None: it can).
    """

    def __init__(self, directory: Optional[str | Path], distributed: Optional[Distributed] = None):
        """distributed: the processes of a torchrun run, which decide their misses together (the union),
        encode them in shares and let the main one write the shards (and move failed ones aside)."""
        self.distributed = distributed or Distributed()
        self.directory = Path(directory).expanduser() if directory else None
        self.hits = self.misses = 0
        self.rejected: dict[Path, str] = {}
        self.write_failed: Optional[str] = None
        self._warned_rejected = False
        self._verified: set = set()   # the shard files verified in this run (see read_shard)
        self._tables: dict[FeatureKey, tuple[np.ndarray, torch.Tensor]] = {}
        self._described: dict[str, dict] = {}
        if self.directory is not None:
            if self.directory.is_dir():   # an existing folder is read even when it cannot be written
                try:
                    write_probe(self.directory)
                except OSError as error:
                    self._stop_writing(error)
            else:
                check_writable(self.directory)

    def describe(self, key: FeatureKey, words: dict) -> None:
        """Record what a key's hashes stand for (written once to ``key.json`` beside its shards)."""
        self._described[key.namespace] = words

    def _folder(self, key: FeatureKey) -> Path:
        return self.directory / key.namespace / f"view_{key.view}"

    def _load(self, key: FeatureKey) -> Optional[tuple[np.ndarray, torch.Tensor]]:
        if self.directory is None or not self._folder(key).is_dir():
            return None
        accepted, failed = [], []
        for shard in sorted(self._folder(key).glob("shard-*.pt")):
            if shard in self.rejected:     # failed earlier in this run and could not be moved aside
                continue
            try:
                accepted.append((shard, *read_shard(shard, key, self._verified)))
            except FileNotFoundError:      # moved aside or removed by another run since the listing
                continue
            except ShardRejected as rejection:
                failed.append((shard, rejection.reason))
        accepted, odd = consistent_shards(accepted)
        failed += odd
        if failed:
            self._reject(failed)
        if not accepted:
            return None
        return merge(np.concatenate([ids for _, ids, _ in accepted]),
                     torch.cat([features for _, _, features in accepted]))

    def _reject(self, failed: list[tuple[Path, str]]) -> None:
        """Move failed shards aside (the main process only) and say so: one warning per run, then info lines."""
        not_moved = []
        for shard, reason in failed:
            self.rejected[shard] = reason
            if not self.distributed.is_main:
                continue
            try:
                moved = move_aside(shard)
                log.debug("feature cache: shard %s %s; moved to %s", shard, reason, moved)
            except FileNotFoundError:      # another run rejected it first
                log.debug("feature cache: shard %s %s; already moved aside by another run", shard, reason)
            except OSError as error:
                not_moved.append(f"{error.strerror or error}")
                log.debug("feature cache: shard %s %s; could not be moved aside (%s)", shard, reason,
                         error.strerror or error)
        kinds = Counter(reason_kind(reason) for _, reason in failed)
        folders = sorted({str(shard.parent / REJECTED) for shard, _ in failed})
        where = ", ".join(folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")
        moved = (f"were moved aside into {where}" if not not_moved else
                 f"could not be moved aside ({not_moved[0]}: they stay in place and are skipped)")
        message = (f"feature cache: {len(failed)} shard(s) failed their check "
                   f"({', '.join(f'{n} {kind}' for kind, n in kinds.most_common())}) and {moved}; their samples "
                   "are encoded again, so results are unchanged. Look at them, then delete the rejected/ folders "
                   "(results.json's feature_cache.rejected counts every shard rejected in this run)")
        if self._warned_rejected:
            log.info(message)
        else:
            log.warning(message)
            self._warned_rejected = True

    def _save(self, key: FeatureKey, ids: np.ndarray, features: torch.Tensor) -> None:
        if self.directory is None or self.write_failed is not None:
            return
        folder = self._folder(key)
        described = folder.parent / "key.json"
        payload = shard_payload(key, torch.from_numpy(np.asarray(ids, dtype=np.int64)), features)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if key.namespace in self._described and not described.exists():
                write_atomic(described,
                             lambda path: path.write_text(json.dumps(self._described[key.namespace], indent=2)))
            write_atomic(folder / f"shard-{uuid.uuid4().hex}.pt", lambda path: write_shard(path, payload))
        except OSError as error:           # a full disk, a folder made read-only: go on without writing
            self._stop_writing(error)

    def _stop_writing(self, error: OSError) -> None:
        self.write_failed = os_reason(error)
        log.warning("feature cache: cannot write to %s (%s): this run goes on without storing features there "
                    "(results are unchanged; features not on disk are encoded again when needed). Free space or "
                    "make the folder writable, choose another cache.dir, or keep features in memory only "
                    "(cache.dir=null)", self.directory, self.write_failed)

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
            check_finite(new, self._described.get(key.namespace))
            if table is not None and table[1].shape[1:] != new.shape[1:]:
                raise ClpromptError(
                    f"the feature cache under {self._folder(key)} holds features of width {table[1].shape[1]} "
                    f"but the image tower gives {new.shape[1]}: its key missed what changed; delete that folder")
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
        """results.json's ``feature_cache`` fields: the folder, hits, misses, the shards rejected this run and
        why the folder could not be written (None: it could)."""
        return {"dir": str(self.directory) if self.directory else None, "hits": self.hits, "misses": self.misses,
                "rejected": len(self.rejected), "write_failed": self.write_failed}


class ShardRejected(Exception):
    """A shard that must not be read; ``reason`` says why in words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def tensor_bytes(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's bytes as they are stored (any dtype, bf16 included), without a copy when contiguous."""
    return tensor.detach().contiguous().view(torch.uint8).numpy()


def shard_checksum(key: FeatureKey, ids: torch.Tensor, features: torch.Tensor) -> str:
    """sha256 over the key's fields, the ids' and features' dtypes and shapes, then their bytes.

    sha256 because it is the fastest of hashlib's on CPUs with SHA extensions (x86 since 2017, ARMv8);
    bench/cache_check_speed.py measures its cost against loading the shard."""
    header = json.dumps({"format": SHARD_FORMAT, "encoder": key.encoder, "dataset": key.dataset,
                         "views": key.views, "view": key.view, "ids": [str(ids.dtype), list(ids.shape)],
                         "features": [str(features.dtype), list(features.shape)]}, sort_keys=True)
    hasher = hashlib.sha256(header.encode())
    hasher.update(tensor_bytes(ids))
    hasher.update(tensor_bytes(features))
    return hasher.hexdigest()


def shard_payload(key: FeatureKey, ids: torch.Tensor, features: torch.Tensor) -> dict:
    """What a shard file holds: the key in clear, the ids, the features and their checksum."""
    features = features.contiguous()
    return {"format": SHARD_FORMAT,
            "key": {"encoder": key.encoder, "dataset": key.dataset, "views": key.views, "view": key.view},
            "ids": ids, "features": features, "sha256": shard_checksum(key, ids, features)}


def write_shard(path: Path, payload: dict) -> None:
    """torch.save through a file object: a full disk then raises OSError (ENOSPC), which the cache answers
    by writing no more, where torch.save(payload, path) raises an opaque RuntimeError ('enforce fail at
    inline_container.cc')."""
    with open(path, "wb") as handle:
        torch.save(payload, handle)


def read_shard(path: Path, key: FeatureKey, verified: Optional[set] = None) -> tuple[np.ndarray, torch.Tensor]:
    """(ids, features) of a shard written for ``key`` whose checksum holds; else ShardRejected.

    verified: the identities (inode, size, modification time) of the files this run has verified already;
    an unchanged one is not hashed again (a run reads a training view's shards once per epoch of every
    experience), a changed or new one is, and is added. The identity is taken from the open file, so it is
    that of the bytes read. FileNotFoundError passes through: a shard moved away since its folder was
    listed is not a damaged one."""
    identity = None
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            identity = (str(path), status.st_ino, status.st_size, status.st_mtime_ns)
            if status.st_size == 0:
                raise ShardRejected("is an empty file")
            payload = torch.load(handle, map_location="cpu", weights_only=True)
    except (FileNotFoundError, ShardRejected):
        raise
    except Exception as error:  # a foreign or truncated file
        raise ShardRejected(f"cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:120]})") from None
    if not isinstance(payload, dict) or "ids" not in payload or "features" not in payload:
        raise ShardRejected("is not a feature shard (no ids and features)")
    if "sha256" not in payload or "format" not in payload:
        raise ShardRejected("was written by an older clprompt, without a checksum")
    if payload["format"] != SHARD_FORMAT:
        raise ShardRejected(f"has shard format {payload['format']!r}; this clprompt reads {SHARD_FORMAT}")
    ids, features = payload["ids"], payload["features"]
    expected = {"encoder": key.encoder, "dataset": key.dataset, "views": key.views, "view": key.view}
    if payload.get("key") != expected:
        raise ShardRejected("was written for another key (a shard copied between folders)")
    if not (isinstance(ids, torch.Tensor) and isinstance(features, torch.Tensor) and ids.dtype == torch.int64
            and ids.ndim == 1 and features.ndim == 2 and features.is_floating_point()
            and features.shape[0] == ids.shape[0]):
        raise ShardRejected(f"has malformed ids {getattr(ids, 'shape', ids)!s:.40} or features "
                            f"{getattr(features, 'shape', features)!s:.40}")
    if verified is None or identity not in verified:
        if shard_checksum(key, ids, features) != payload["sha256"]:
            raise ShardRejected("fails its checksum (its bytes changed after it was written)")
        if verified is not None:
            verified.add(identity)
    return ids.numpy(), features


def consistent_shards(accepted: list) -> tuple[list, list[tuple[Path, str]]]:
    """Shards of one table must agree on the features' width and dtype; those that do not (only a writer
    that got the key wrong could make them) are rejected, keeping the group holding the most rows."""
    groups: dict[tuple, list] = {}
    for entry in accepted:
        groups.setdefault((entry[2].shape[1], entry[2].dtype), []).append(entry)
    if len(groups) <= 1:
        return accepted, []
    kept = max(groups, key=lambda group: sum(len(ids) for _, ids, _ in groups[group]))
    odd = [(shard, f"has features of width {features.shape[1]} ({features.dtype}) where the other shards have "
                   f"{kept[0]} ({kept[1]})")
           for group, entries in groups.items() if group != kept for shard, _, features in entries]
    return groups[kept], odd


def reason_kind(reason: str) -> str:
    """A rejection reason's short form, for the run's one warning."""
    for words, kind in (("older clprompt", "written by an older clprompt without a checksum"),
                        ("checksum", "failed the checksum"), ("another key", "written for another key"),
                        ("empty", "empty"), ("cannot be read", "unreadable"), ("width", "of another width")):
        if words in reason:
            return kind
    return "malformed"


def move_aside(shard: Path) -> Path:
    """Move a failed shard into ``rejected/`` beside it, under its own name (a numbered one if that is taken)."""
    folder = shard.parent / REJECTED
    folder.mkdir(exist_ok=True)
    target, number = folder / shard.name, 1
    while target.exists():
        target, number = folder / f"{shard.name}.{number}", number + 1
    os.replace(shard, target)
    return target


def os_reason(error: OSError) -> str:
    """An OS error in words with its code: 'No space left on device (ENOSPC)'."""
    code = errno.errorcode.get(error.errno) if error.errno else None
    return f"{error.strerror or error}" + (f" ({code})" if code else "")


def check_finite(features: torch.Tensor, words: Optional[dict]) -> None:
    """Refuse non-finite features from the frozen image tower, before they are stored or trained on."""
    finite = torch.isfinite(features).all(dim=1) if features.ndim == 2 else torch.isfinite(features).flatten()
    if bool(finite.all()):
        return
    autocast = (words or {}).get("encoder", {}).get("autocast", "the run's precision")
    raise NonFiniteFeaturesError(
        f"the frozen image tower gave NaN or infinite features for {int((~finite).sum())} of {len(finite)} images "
        f"(autocast {autocast}): its weights are damaged or its activations overflow in this precision, which no "
        "learning rate fixes; use precision=fp32 (or bf16 instead of fp16), or check model.pretrained. Nothing "
        "was written to the feature cache")


def merge(ids: np.ndarray, features: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Sorted unique ids and their feature rows (duplicates from concurrent writers are equal)."""
    unique, first = np.unique(ids, return_index=True)
    return unique, features[torch.from_numpy(first)]


def write_probe(directory: Path) -> None:
    """Create and remove an empty file in ``directory``: OSError when it cannot be written."""
    probe = directory / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    probe.write_bytes(b"")
    probe.unlink()


def check_writable(directory: Path) -> None:
    """Refuse, before any work, a cache folder that cannot be created or written.

    ``FeatureCache`` calls it for a folder that does not exist yet; an existing one that cannot be written is
    read as it is (one warning)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_probe(directory)
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
                 batch_size=256, loader_args: Optional[dict] = None, images=None):
        self.cache, self.sources, self.encode, self.images = cache, sources, encode, images
        # the encoding batch: an EncodingBatch (eval.batch_size, auto: measured) or a fixed size
        self.batch = batch_size if isinstance(batch_size, EncodingBatch) else EncodingBatch(batch_size, device)
        self.device = device
        self.loader_args = dict(loader_args or {})
        self.loader_args.pop("persistent_workers", None)  # one pass per call
        self._encoder = encoder   # a dict, or a Future of one (hashed beside the run's start)

    @property
    def encoder_words(self) -> dict:
        if not isinstance(self._encoder, dict):
            self._encoder = self._encoder.result()
        return self._encoder

    @property
    def encoder(self) -> str:
        """The digest of ``encoder_words``, computed once."""
        if getattr(self, "_encoder_digest", None) is None:
            self._encoder_digest = digest(self.encoder_words)
        return self._encoder_digest

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
            features, start = [], 0
            for size in self.batch.batches(len(ids)):
                chunk = ids[start:start + size]
                start += size
                features.append(self.batch.timed(size, lambda: self.encode(self.images.images(split, chunk, view)).cpu()))
            return torch.cat(features)
        subset = dataset.subset(positions.tolist())
        loader = DataLoader(subset, batch_sampler=EncodingBatchSampler(len(subset), self.batch),
                            generator=torch.Generator(), **self.loader_args)
        features = []
        for batch in loader:
            images = batch[0].to(self.device, non_blocking=True)
            features.append(self.batch.timed(len(images), lambda: self.encode(images).cpu()))
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
