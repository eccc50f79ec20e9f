"""Class-incremental task streams as Avalanche benchmarks.

The class partition is computed here, not by Avalanche: ``class_incremental_benchmark(num_experiences=n)``
silently drops the classes left over when n does not divide the class count (see
``tests/test_streams.py::test_avalanche_drops_leftover_classes``), and it refuses a training set that
lacks a class (as a pseudo-labelled one can). We spread the remainder, cut each split by experience
ourselves and hand Avalanche one dataset per experience (``benchmark_from_datasets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

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
    tasks: Optional[list] = None    # a task sequence's member names (scenarios.sequences), else None
    domains: Optional[list] = None  # a domain-incremental stream's training domains (scenarios.domain_stream)
    test_domains: Optional[list] = None   # its test domains, where they are not the training ones (CORe50)

    @property
    def n_experiences(self) -> int:
        return len(self.experience_classes)

    @property
    def scenario_type(self) -> str:
        """'domain_incremental' (every experience the same classes from a new domain) or 'class_incremental'
        (every experience new classes; a task sequence is one too, scored task by task on request)."""
        return "domain_incremental" if self.domains is not None else "class_incremental"

    @property
    def test_classes(self) -> list[list[int]]:
        """The classes of each test experience (the training experiences' unless the test domains differ)."""
        if self.test_domains is None:
            return self.experience_classes
        return [list(range(len(self.class_names))) for _ in self.test_domains]

    def rebuild(self, train: Optional[Dataset] = None, n_experiences: Optional[int] = None,
                class_order: Optional[Sequence[int]] = None, allow_missing_train_classes: bool = False,
                **description) -> "TaskStream":
        """The same stream with another training set and/or another partition of the classes.

        Unchanged arguments keep their values (the partition too: a B50-Inc10 stream stays one);
        ``class_order`` given drops the seeded order, ``n_experiences`` given cuts it evenly. Extra keyword
        arguments are added to the description.
        """
        if self.domains is not None:
            raise StreamConfigError(
                f"{self.name} is a domain-incremental stream ({', '.join(self.domains)}): the few-shot, noisy-label, UPL "
                "and base-to-new protocols redraw one task's training set and do not apply to it; use protocol=standard")
        if self.tasks is not None:
            raise StreamConfigError(
                f"{self.name} is a sequence of tasks ({', '.join(self.tasks)}): the few-shot, noisy-label, UPL and "
                "base-to-new protocols redraw one task's training set and do not apply to it; use protocol=standard "
                "(a sandbox member's training images per class: scenario.tasks.<name>.train_per_class)")
        seed = None if class_order is not None else self.class_order_seed
        order = class_order if class_order is not None else self.description.get("class_order")
        same_partition = n_experiences is None and class_order is None
        increment = self.description.get("increment") if same_partition else None
        record = {k: v for k, v in self.description.items() if k not in _DERIVED_KEYS}
        record.update(description)
        return class_incremental_stream(
            self.name, train if train is not None else self.splits["train"], self.splits["test"],
            self.class_names, None if increment else (n_experiences or self.n_experiences), seed, order, record,
            valid=self.splits.get("valid"), allow_missing_train_classes=allow_missing_train_classes,
            initial_classes=self.description.get("initial_classes", 0) if increment else 0, increment=increment)


# Named class orders. "icarl" is the order iCaRL-style code bases (PyCIL) derive from seed 1993, the
# default; "continual_clip" is the fixed CIFAR-100 order shared by Continual-CLIP, ZSCL, MoE-Adapters and
# RAPF (it starts 87, 0, 52: the list DER / PODNet published).
CONTINUAL_CLIP_CIFAR100 = [
    87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86,
    84, 96, 18, 24, 32, 45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83,
    17, 81, 41, 12, 37, 59, 25, 20, 80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75,
    38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70, 90, 89, 43, 5, 42, 65, 76,
    40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
]
NAMED_ORDERS = {"icarl": "numpy RandomState(1993).permutation, the default seed",
                "continual_clip": "Continual-CLIP / ZSCL / MoE-Adapters / RAPF's CIFAR-100 order (100 classes)"}


def make_class_order(n_classes: int, seed: Optional[int] = None,
                     class_order: Optional[Union[str, Sequence[int]]] = None) -> list[int]:
    """The order in which classes enter the stream.

    ``class_order``: a name of ``NAMED_ORDERS`` or an explicit permutation of ``range(n_classes)``; it
    wins over the seed. Otherwise a seed shuffles the classes with numpy's legacy generator,
    ``RandomState(seed).permutation`` (the order iCaRL-style code bases derive from seed 1993); no seed
    keeps the dataset's own order.
    """
    if isinstance(class_order, str):
        if class_order == "icarl":
            return np.random.RandomState(1993).permutation(n_classes).tolist()
        if class_order == "continual_clip":
            if n_classes != len(CONTINUAL_CLIP_CIFAR100):
                raise StreamConfigError(
                    f"scenario.class_order=continual_clip is CIFAR-100's order (100 classes) but this dataset has "
                    f"{n_classes}; use scenario.class_order=icarl, an explicit list, or scenario.class_order_seed")
            return list(CONTINUAL_CLIP_CIFAR100)
        raise StreamConfigError(
            f"scenario.class_order={class_order!r} is not a named order; choose one of "
            + ", ".join(f"{name} ({what})" for name, what in NAMED_ORDERS.items())
            + ", or give a list of class ids")
    if class_order is not None:
        order = [int(c) for c in class_order]
        missing = sorted(set(range(n_classes)) - set(order))
        extra = sorted(set(order) - set(range(n_classes)))
        repeated = sorted({c for c in order if order.count(c) > 1})
        if missing or extra or repeated:
            raise StreamConfigError(
                f"scenario.class_order must list each of the {n_classes} class ids 0..{n_classes - 1} exactly "
                f"once; missing: {missing}, out of range: {extra}, repeated: {repeated}"
            )
        return order
    if seed is None:
        return list(range(n_classes))
    return np.random.RandomState(seed).permutation(n_classes).tolist()


def split_classes(class_order: Sequence[int], n_experiences: Optional[int] = None, initial_classes: int = 0,
                  increment: Optional[int] = None) -> list[list[int]]:
    """Cut the class order into consecutive groups, losing none.

    Either ``n_experiences`` equal groups (when the classes don't divide evenly, the first
    ``len(class_order) % n_experiences`` take one class more: 100 classes in 7 experiences are 15, 15, 14,
    14, 14, 14, 14), or the B-Inc settings: ``initial_classes`` B in the first experience (0: none of its
    own) and then ``increment`` classes per experience (B0-Inc10: 10 of 10; B50-Inc10: 50, then 5 of 10).
    """
    n_classes = len(class_order)
    if increment is not None:
        if not 1 <= increment <= n_classes:
            raise StreamConfigError(f"scenario.increment={increment} must be between 1 and the {n_classes} classes")
        if not 0 <= initial_classes < n_classes:
            raise StreamConfigError(
                f"scenario.initial_classes={initial_classes} must be between 0 and {n_classes - 1} (the classes of "
                "the first experience; 0 for none of its own)")
        rest = n_classes - initial_classes
        if rest % increment:
            raise StreamConfigError(
                f"scenario.increment={increment} does not divide the {rest} classes after "
                f"scenario.initial_classes={initial_classes} (of {n_classes}); choose an increment that divides {rest}"
                ", or set scenario.increment=null and scenario.n_experiences")
        sizes = ([initial_classes] if initial_classes else []) + [increment] * (rest // increment)
        if n_experiences is not None and n_experiences != len(sizes):
            raise StreamConfigError(
                f"scenario.n_experiences={n_experiences} contradicts scenario.initial_classes={initial_classes} and "
                f"scenario.increment={increment} ({len(sizes)} experiences); set scenario.n_experiences=null")
    else:
        if initial_classes:
            raise StreamConfigError(f"scenario.initial_classes={initial_classes} needs scenario.increment (the classes "
                                    "of each later experience)")
        if n_experiences is None or not 1 <= n_experiences <= n_classes:
            raise StreamConfigError(
                f"scenario.n_experiences must be between 1 and the number of classes ({n_classes}), got {n_experiences}"
            )
        base, extra = divmod(n_classes, n_experiences)
        sizes = [base + (1 if index < extra else 0) for index in range(n_experiences)]
    groups, start = [], 0
    for size in sizes:
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


_DERIVED_KEYS = ("name", "n_classes", "n_experiences", "class_order_seed", "class_order", "class_order_name",
                 "class_order_source",
                 "initial_classes", "increment", "experience_classes", "n_train", "n_valid", "n_test")


def class_incremental_stream(name: str, train: Dataset, test: Dataset, class_names: Sequence[str],
                             n_experiences: int, class_order_seed: Optional[int] = None,
                             class_order: Optional[Sequence[int]] = None,
                             description: Optional[dict] = None, valid: Optional[Dataset] = None,
                             allow_missing_train_classes: bool = False, initial_classes: int = 0,
                             increment: Optional[int] = None) -> TaskStream:
    """Build a class-incremental Avalanche benchmark over ``train`` / ``test`` (and ``valid``, if given).

    The datasets carry integer labels in ``.targets``, with every class of ``class_names`` present in each
    (``allow_missing_train_classes``: the training set may lack some, as a pseudo-labelled one can).
    The benchmark has ``train_stream`` and ``test_stream``, and ``valid_stream`` when ``valid`` is given.
    The classes are cut by ``n_experiences`` or by ``initial_classes`` / ``increment`` (``split_classes``).
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
    groups = split_classes(order, n_experiences, initial_classes, increment)
    benchmark = experience_benchmark(splits, groups)
    record = dict(description or {})
    record.update(name=name, n_classes=n_classes, n_experiences=len(groups),
                  class_order_seed=class_order_seed, class_order=order,
                  class_order_name=class_order if isinstance(class_order, str) else None,
                  initial_classes=initial_classes if increment else 0, increment=increment,
                  experience_classes=groups, **{f"n_{split}": len(data) for split, data in splits.items()})
    return TaskStream(name=name, benchmark=benchmark, class_names=list(class_names),
                      experience_classes=groups, description=record, splits=splits,
                      class_order_seed=class_order_seed)
