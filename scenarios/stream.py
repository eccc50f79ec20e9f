"""Class-incremental task streams as Avalanche benchmarks.

The class partition is computed here, not by Avalanche: ``class_incremental_benchmark(num_experiences=n)``
silently drops the classes left over when n does not divide the class count (see
``tests/test_streams.py::test_avalanche_drops_leftover_classes``), and it refuses a training set that
lacks a class (as a pseudo-labelled one can). We spread the remainder, cut each split by experience
ourselves and hand Avalanche one dataset per experience (``benchmark_from_datasets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
# the conversion Avalanche's own class_incremental_benchmark applies (targets + task label 0)
from avalanche.benchmarks.utils.classification_dataset import (
    _as_taskaware_supervised_classification_dataset as as_supervised_dataset,
)
from torch.utils.data import Dataset

from scenarios.errors import StreamConfigError


@dataclass
class TaskStream:
    """A stream of experiences and what the model side needs to know about it.

    benchmark: Avalanche ``CLScenario`` with ``train_stream`` and ``test_stream``.
    class_names: human-readable names, indexed by global class id.
    experience_classes: ``experience_classes[i]`` lists the class ids of experience i, in class order.
    description: dataset, source and class order, recorded in ``results.json``.
    splits: the datasets the benchmark was built from ('train', 'test', and 'valid' if any), before
        Avalanche wraps them; protocols draw from ``splits['train']`` and rebuild with ``rebuild``.
    """

    name: str
    benchmark: object
    class_names: list[str]
    experience_classes: list[list[int]]
    description: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    class_order_seed: Optional[int] = None

    @property
    def n_experiences(self) -> int:
        return len(self.experience_classes)

    def rebuild(self, train: Optional[Dataset] = None, n_experiences: Optional[int] = None,
                class_order: Optional[Sequence[int]] = None, allow_missing_train_classes: bool = False,
                **description) -> "TaskStream":
        """The same stream with another training set and/or another partition of the classes.

        Unchanged arguments keep their values; ``class_order`` given drops the seeded order. Extra keyword
        arguments are added to the description.
        """
        seed = None if class_order is not None else self.class_order_seed
        order = class_order if class_order is not None else self.description.get("class_order")
        record = {k: v for k, v in self.description.items() if k not in _DERIVED_KEYS}
        record.update(description)
        return class_incremental_stream(
            self.name, train if train is not None else self.splits["train"], self.splits["test"],
            self.class_names, n_experiences or self.n_experiences, seed, order, record,
            valid=self.splits.get("valid"), allow_missing_train_classes=allow_missing_train_classes)


def make_class_order(n_classes: int, seed: Optional[int] = None,
                     class_order: Optional[Sequence[int]] = None) -> list[int]:
    """The order in which classes enter the stream.

    An explicit ``class_order`` wins and must be a permutation of ``range(n_classes)``. Otherwise a seed
    shuffles the classes with numpy's legacy generator, ``RandomState(seed).permutation`` (the order
    iCaRL-style code bases derive from seed 1993); no seed keeps the dataset's own order.
    """
    if class_order is not None:
        order = [int(c) for c in class_order]
        missing = sorted(set(range(n_classes)) - set(order))
        extra = sorted(set(order) - set(range(n_classes)))
        repeated = sorted({c for c in order if order.count(c) > 1})
        if missing or extra or repeated:
            raise StreamConfigError(
                f"class_order must list each of the {n_classes} class ids 0..{n_classes - 1} exactly once; "
                f"missing: {missing}, out of range: {extra}, repeated: {repeated}"
            )
        return order
    if seed is None:
        return list(range(n_classes))
    return np.random.RandomState(seed).permutation(n_classes).tolist()


def split_classes(class_order: Sequence[int], n_experiences: int) -> list[list[int]]:
    """Cut the class order into ``n_experiences`` consecutive groups, losing none.

    When the classes don't divide evenly, the first ``len(class_order) % n_experiences`` experiences
    take one class more (100 classes in 7 experiences: 15, 15, 14, 14, 14, 14, 14).
    """
    n_classes = len(class_order)
    if not 1 <= n_experiences <= n_classes:
        raise StreamConfigError(
            f"n_experiences must be between 1 and the number of classes ({n_classes}), got {n_experiences}"
        )
    base, extra = divmod(n_classes, n_experiences)
    groups, start = [], 0
    for index in range(n_experiences):
        size = base + (1 if index < extra else 0)
        groups.append(list(class_order[start:start + size]))
        start += size
    return groups


def sample_ids(dataset: Dataset) -> list[int]:
    """Each item's index in the dataset whose images it shows (a relabelled subset maps through)."""
    return dataset.sample_ids() if hasattr(dataset, "sample_ids") else list(range(len(dataset)))


def experience_benchmark(splits: dict, groups: Sequence[Sequence[int]]):
    """An Avalanche benchmark with one stream per split; experience i holds the samples of ``groups[i]``.

    Each experience's dataset carries the data attribute ``sample_id`` (see ``sample_ids``): the feature
    cache keys samples by it.
    """
    streams = {}
    for split, dataset in splits.items():
        data = as_supervised_dataset(dataset).update_data_attribute("sample_id", sample_ids(dataset))
        targets = np.asarray(dataset.targets)
        streams[split] = [data.subset(np.flatnonzero(np.isin(targets, list(group))).tolist()) for group in groups]
    return with_classes_timeline(benchmark_from_datasets(**streams))


_DERIVED_KEYS = ("name", "n_classes", "n_experiences", "class_order_seed", "class_order", "experience_classes",
                 "n_train", "n_valid", "n_test")


def class_incremental_stream(name: str, train: Dataset, test: Dataset, class_names: Sequence[str],
                             n_experiences: int, class_order_seed: Optional[int] = None,
                             class_order: Optional[Sequence[int]] = None,
                             description: Optional[dict] = None, valid: Optional[Dataset] = None,
                             allow_missing_train_classes: bool = False) -> TaskStream:
    """Build a class-incremental Avalanche benchmark over ``train`` / ``test`` (and ``valid``, if given).

    The datasets carry integer labels in ``.targets``, with every class of ``class_names`` present in each
    (``allow_missing_train_classes``: the training set may lack some, as a pseudo-labelled one can).
    The benchmark has ``train_stream`` and ``test_stream``, and ``valid_stream`` when ``valid`` is given.
    """
    n_classes = len(class_names)
    splits = {"train": train, "test": test} if valid is None else {"train": train, "valid": valid, "test": test}
    for split, dataset in splits.items():
        present = set(int(t) for t in dataset.targets)
        absent = sorted(set(range(n_classes)) - present)
        if absent and not (split == "train" and allow_missing_train_classes):
            raise StreamConfigError(
                f"{name}: the {split} split has no images of classes {absent[:10]}"
                f"{' ...' if len(absent) > 10 else ''} ({len(absent)} of {n_classes}); "
                "every class must appear in every split"
            )
        if present - set(range(n_classes)):
            raise StreamConfigError(f"{name}: {split} labels outside 0..{n_classes - 1}")
    order = make_class_order(n_classes, class_order_seed, class_order)
    groups = split_classes(order, n_experiences)
    benchmark = experience_benchmark(splits, groups)
    record = dict(description or {})
    record.update(name=name, n_classes=n_classes, n_experiences=n_experiences,
                  class_order_seed=class_order_seed, class_order=order,
                  experience_classes=groups, **{f"n_{split}": len(data) for split, data in splits.items()})
    return TaskStream(name=name, benchmark=benchmark, class_names=list(class_names),
                      experience_classes=groups, description=record, splits=splits,
                      class_order_seed=class_order_seed)
