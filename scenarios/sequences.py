"""Task sequences: several datasets one after another, each a task with its own label space (MTIL).

ZSCL's Multi-domain Task-Incremental Learning trains CLIP on Aircraft, then Caltech101, then CIFAR-100
and so on, and scores every dataset after every task over that dataset's own classes. Here each member
is a scenario of its own (any config under ``configs/scenario/`` with one experience); the sequence
gives task t the global class ids ``offset_t .. offset_t + n_t - 1`` and is one Avalanche benchmark
whose experience t holds task t. ``eval.protocol=task_incremental`` then scores each task over its own
classes (the MTIL table: Transfer, Avg, Last), ``class_incremental`` over the union of the tasks seen.

Members are built here, not by Hydra (the scenario config says ``_recursive_: false``), so that the
run's transforms reach each of them and every missing dataset is named at once.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Callable, Mapping, Optional

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch.utils.data import Dataset

from scenarios.errors import DatasetNotFoundError, StreamConfigError
from scenarios.labelled_images import DecodedImages
from scenarios.stream import TaskStream, experience_benchmark, sample_ids


class SequenceDataset(Dataset):
    """The members' datasets end to end; member t's labels shifted by ``offsets[t]``.

    ``fingerprint`` is made of the members' (so the feature cache keys it by its images); ``sample_ids``
    are the members' own, each member's shifted past the previous ones'.
    """

    def __init__(self, members: list, offsets: list[int]):
        self.members, self.offsets = list(members), list(offsets)
        self.starts = [0]
        for member in self.members:
            self.starts.append(self.starts[-1] + len(member))
        self.targets = [int(y) + offset for member, offset in zip(self.members, self.offsets) for y in member.targets]

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(member, index within it) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        member = bisect.bisect_right(self.starts, index) - 1
        return member, index - self.starts[member]

    def __getitem__(self, index: int):
        member, local = self.locate(index)
        image, label = self.members[member][local]
        return image, int(label) + self.offsets[member]

    @property
    def transform(self) -> Optional[Callable]:
        return self.members[0].transform

    def with_transform(self, transform: Optional[Callable]) -> "SequenceDataset":
        return SequenceDataset([m.with_transform(transform) for m in self.members], self.offsets)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"SequenceDataset")
        for member in self.members:
            digest.update(member.fingerprint().encode())
        return digest.hexdigest()

    def decoded(self) -> Optional[DecodedImages]:
        """The members' images end to end (indexed by ``sample_ids``), when each member holds its images in an
        array and all have one size; each keeps its own view index (a member's sample i is seeded as i)."""
        members = [m.decoded() if hasattr(m, "decoded") else None for m in self.members]
        if any(m is None for m in members) or len({m.rgb().shape[1:] for m in members}) != 1:
            return None
        if [len(m.view_index) for m in members] != [max(sample_ids(m), default=-1) + 1 for m in self.members]:
            return None   # the shift of the sample ids is not the member's array length
        return DecodedImages(np.concatenate([m.rgb() for m in members]), np.concatenate([m.view_index for m in members]))

    def sample_ids(self) -> list[int]:
        ids, shift = [], 0
        for member in self.members:
            own = sample_ids(member)
            ids.extend(shift + i for i in own)
            shift += max(own, default=-1) + 1
        return ids


def task_sequence(name: str, tasks: Mapping, train_transform: Optional[Callable] = None,
                  eval_transform: Optional[Callable] = None, description: Optional[dict] = None) -> TaskStream:
    """One experience per task of ``tasks`` (name -> scenario config with one experience), in that order."""
    if not tasks:
        raise StreamConfigError(f"scenario {name} lists no tasks (scenario.tasks)")
    streams, missing = {}, []
    for key, config in tasks.items():
        try:
            stream = instantiate(config, train_transform=train_transform, eval_transform=eval_transform)
        except InstantiationException as error:
            cause = error.__cause__
            if isinstance(cause, DatasetNotFoundError):
                missing.append(f"  scenario.tasks.{key}: {cause}")
                continue
            if isinstance(cause, StreamConfigError):
                raise StreamConfigError(f"scenario.tasks.{key}: {cause}") from cause
            raise
        if stream.n_experiences != 1:
            raise StreamConfigError(
                f"scenario.tasks.{key} has {stream.n_experiences} experiences; a task of a sequence is one experience "
                f"(set scenario.tasks.{key}.n_experiences=1)")
        streams[key] = stream
    if missing:
        raise DatasetNotFoundError(
            f"{name}: {len(missing)} of its {len(tasks)} datasets are missing (nothing was run):\n" + "\n".join(missing)
            + "\nSupply them, or drop them from the sequence: ~scenario.tasks.<name> on the command line")
    split_names = ["train", "test"] + (["valid"] if all("valid" in s.splits for s in streams.values()) else [])
    offsets, groups, class_names, start = [], [], [], 0
    for stream in streams.values():
        n = len(stream.class_names)
        offsets.append(start)
        groups.append(list(range(start, start + n)))
        class_names.extend(stream.class_names)
        start += n
    splits = {split: SequenceDataset([s.splits[split] for s in streams.values()], offsets) for split in split_names}
    record = dict(description or {})
    record.update(
        name=name, n_classes=len(class_names), n_experiences=len(streams), class_order=list(range(len(class_names))),
        experience_classes=groups, tasks=list(streams),
        task_streams={key: s.description for key, s in streams.items()},
        **{f"n_{split}": len(data) for split, data in splits.items()},
    )
    return TaskStream(name=name, benchmark=experience_benchmark(splits, groups), class_names=class_names,
                      experience_classes=groups, description=record, splits=splits, tasks=list(streams))
