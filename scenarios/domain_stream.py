"""Domain-incremental streams: every experience brings the same label space from a new domain.

Experience i trains on domain i's images of all the classes (DomainNet's clipart, then infograph, ...;
CORe50's training sessions; the sandbox's rendering styles). After each experience the test stream is
scored: by default one test experience per training domain, so the accuracy matrix R[i, j] is domain j
after experience i and Last / Avg / forgetting / BWT keep their meanings. A benchmark whose test domains are
not its training domains (CORe50's NI protocol tests on sessions 3, 7 and 10, never trained) passes
``test_domains``: the test stream is those domains and R is rectangular (experiences x test domains).

Every class is a candidate at every step (``eval.protocol=domain_incremental``); the domain of a test image
is never given. Labels are the same ids in every domain; the datasets of a split are joined end to end
(``scenarios.sequences.SequenceDataset`` with no label shift), so the feature cache keys each domain's
images by their own content.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.utils.classification_dataset import (
    _as_taskaware_supervised_classification_dataset as as_supervised_dataset,
)
from torch.utils.data import Dataset

from scenarios.errors import StreamConfigError
from scenarios.sequences import SequenceDataset
from scenarios.stream import TaskStream, sample_ids

SPLITS = ("train", "valid", "test")


def _check_labels(name: str, domain: str, split: str, dataset: Dataset, n_classes: int,
                  require_all: bool) -> None:
    labels = {int(t) for t in dataset.targets}
    if not labels:
        raise StreamConfigError(f"{name}: domain {domain!r} has no {split} images")
    outside = sorted(labels - set(range(n_classes)))
    if outside:
        raise StreamConfigError(f"{name}: domain {domain!r}'s {split} labels {outside[:5]} are outside 0..{n_classes - 1}")
    absent = sorted(set(range(n_classes)) - labels)
    if absent and require_all:
        raise StreamConfigError(
            f"{name}: domain {domain!r}'s {split} split has no images of classes {absent[:10]}"
            f"{' ...' if len(absent) > 10 else ''} ({len(absent)} of {n_classes}); a domain-incremental stream "
            "brings every class in every domain")


def _joined(datasets: Sequence[Dataset]) -> tuple[SequenceDataset, list[list[int]]]:
    """The datasets end to end (labels unchanged) and, per dataset, the indices of its items in the join."""
    joined = SequenceDataset(list(datasets), [0] * len(datasets))
    return joined, [list(range(joined.starts[d], joined.starts[d + 1])) for d in range(len(datasets))]


def domain_incremental_stream(name: str, domains: Mapping[str, Mapping[str, Dataset]], class_names: Sequence[str],
                              test_domains: Optional[Mapping[str, Dataset]] = None,
                              description: Optional[dict] = None,
                              allow_missing_train_classes: bool = False,
                              allow_missing_test_classes: bool = False) -> TaskStream:
    """One experience per entry of ``domains`` (domain name -> {'train': ..., 'test': ..., 'valid': ...}), in order.

    Every dataset's ``targets`` are ids into ``class_names``; each domain's splits hold every class, unless
    ``allow_missing_train_classes`` / ``allow_missing_test_classes`` (a published dataset's own gap, which the
    reader has checked and recorded: DomainNet's painting has no t-shirt). ``test_domains`` (name -> dataset):
    a test stream of other domains than the training ones; the domains then need no 'test' split of their own.
    """
    if not domains:
        raise StreamConfigError(f"{name}: a domain-incremental stream needs at least one domain")
    n_classes = len(class_names)
    names = list(domains)
    held_out = dict(test_domains) if test_domains is not None else None
    if held_out is not None and not held_out:
        raise StreamConfigError(f"{name}: test_domains is empty; give the held-out test domains or None")
    needed = ("train",) if held_out is not None else ("train", "test")
    for domain, splits in domains.items():
        missing = [split for split in needed if split not in splits]
        if missing:
            raise StreamConfigError(f"{name}: domain {domain!r} has no {' or '.join(missing)} split")
        for split in needed + (("valid",) if "valid" in splits else ()):
            allowed = allow_missing_train_classes if split == "train" else allow_missing_test_classes
            _check_labels(name, domain, split, splits[split], n_classes, require_all=not allowed)
    for domain, dataset in (held_out or {}).items():
        _check_labels(name, domain, "test", dataset, n_classes, require_all=not allow_missing_test_classes)

    per_split = {"train": [domains[d]["train"] for d in names]}
    if all("valid" in domains[d] for d in names):
        per_split["valid"] = [domains[d]["valid"] for d in names]
    per_split["test"] = list(held_out.values()) if held_out is not None else [domains[d]["test"] for d in names]
    splits, streams = {}, {}
    for split, datasets in per_split.items():
        joined, members = _joined(datasets)
        splits[split] = joined
        data = as_supervised_dataset(joined).update_data_attribute("sample_id", sample_ids(joined))
        streams[split] = [data.subset(indices) for indices in members]
    benchmark = with_classes_timeline(benchmark_from_datasets(**streams))

    all_classes = list(range(n_classes))
    record = dict(description or {})
    record.update(name=name, scenario_type="domain_incremental", n_classes=n_classes, n_experiences=len(names),
                  domains=names, test_domains=list(held_out) if held_out is not None else names,
                  class_order=all_classes,
                  **{f"n_{split}": len(data) for split, data in splits.items()},
                  domain_sizes={split: [len(d) for d in datasets] for split, datasets in per_split.items()})
    return TaskStream(name=name, benchmark=benchmark, class_names=list(class_names),
                      experience_classes=[all_classes for _ in names], description=record, splits=splits,
                      domains=names, test_domains=list(held_out) if held_out is not None else None)
