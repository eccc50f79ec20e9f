"""A view of a dataset with chosen samples and given labels: the training set a protocol hands on."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch.utils.data import Dataset


class RelabeledSubset(Dataset):
    """Samples ``indices`` of ``dataset`` with ``labels`` in place of their own.

    ``.targets`` are the given labels, ``.true_targets`` the dataset's own; ``with_transform`` returns
    the same view over the dataset with another transform (the dataset must offer ``with_transform``).
    ``fingerprint`` and ``sample_ids`` are the underlying dataset's: a sample keeps its identity (and its
    cached features) whatever label a protocol gives it.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int], labels: Sequence[int]):
        if len(indices) != len(labels):
            raise ValueError(f"{len(indices)} indices but {len(labels)} labels")
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.targets = [int(t) for t in labels]
        self.true_targets = [int(dataset.targets[i]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, _ = self.dataset[self.indices[index]]
        return image, self.targets[index]

    @property
    def transform(self) -> Optional[Callable]:
        return self.dataset.transform

    def with_transform(self, transform: Optional[Callable]) -> "RelabeledSubset":
        return RelabeledSubset(self.dataset.with_transform(transform), self.indices, self.targets)

    def fingerprint(self) -> str:
        return self.dataset.fingerprint()

    def decoded(self):
        """The underlying dataset's images (indexed by its sample ids, which are this view's too)."""
        return self.dataset.decoded() if hasattr(self.dataset, "decoded") else None

    def sample_ids(self) -> list[int]:
        ids = self.dataset.sample_ids()
        return [ids[i] for i in self.indices]
