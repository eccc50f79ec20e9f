"""5-datasets (Ebrahimi et al. 2020, Adversarial Continual Learning) as L2P runs it: SVHN, MNIST, CIFAR-10,
notMNIST and Fashion-MNIST, one task of 10 classes each, 50 classes in all.

Built with ``scenarios.sequences.task_sequence``: each member is a one-experience scenario (scenarios/
svhn.py, mnist.py, cifar10.py, notmnist.py, fashion_mnist.py), task t takes the class ids
``10 t .. 10 t + 9`` (L2P's ``target_transform``: label + the classes before), and
``eval.protocol=class_incremental`` (the default, L2P's: ``task_inc=False``) scores over the union of
the tasks seen, ``task_incremental`` within each task.

Order (``order``):

- ``l2p`` (default): SVHN, MNIST, CIFAR-10, notMNIST, Fashion-MNIST, the fixed list of L2P's PyTorch
  code (JH-LEE-KR/l2p-pytorch ``datasets.py``, ``--shuffle`` False), kept by several code bases built on
  it;
- ``l2p_jax``: CIFAR-10, MNIST, SVHN, notMNIST, Fashion-MNIST, the default ``dataset_list`` of L2P's
  original JAX code (google-research/l2p ``libml/input_pipeline.py``, ``create_5datasets``);
- or a list of the task names, e.g. ``scenario.order=[cifar10,mnist,svhn,notmnist,fashion_mnist]``.

A named order skips a task dropped with ``~scenario.tasks.<name>`` and puts tasks it does not name last.

Data: each member's own layout under ``data.root`` (see its module): ``svhn/{train,test}_32x32.mat``,
``MNIST/raw/``, ``cifar-10-batches-py/``, ``notMNIST/{Train,Test}/<A..J>/``, ``FashionMNIST/raw/``. The
notMNIST is Adversarial Continual Learning's ``notMNIST.zip``, the one L2P's PyTorch code reads (its JAX
code used its own unreproducible 80/20 split of Bulatov's archive). All images become 3-channel RGB.

Class names (``class_naming``). MNIST's and SVHN's classes are both the ten digits, so their own names
("zero" ... "nine") are the same words: in one class-incremental label space, two classes would have the
same prompt, so a text-side classifier gives them the same score and can never tell an MNIST "zero" from
an SVHN "zero". No CLIP-based work we found runs 5-datasets to settle how to name them (L2P and its
successors train a linear head and use no names). So:

- ``distinct`` (default): each member's names say what its images are: MNIST's become "handwritten digit
  zero" ..., SVHN's "house number digit zero" ...; CIFAR-10 (airplane, ...), Fashion-MNIST (t-shirt, ...)
  and notMNIST ("letter A", ...) keep theirs, which clash with nothing. 50 distinct names.
- ``shared``: every member keeps its own names; MNIST and SVHN then share ten names, which is logged as a
  warning and recorded (``repeated_class_names``). Class-incremental scores then count every MNIST/SVHN
  digit confusion that the names cannot prevent; task-incremental scores (each task over its own
  classes) are not affected, since no task has a name twice.

The run's description records the order, its source, the naming and any repeated names.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Callable, Mapping, Optional, Sequence, Union

from scenarios.errors import StreamConfigError
from scenarios.sequences import task_sequence
from scenarios.stream import TaskStream

log = logging.getLogger(__name__)

ORDERS = {
    "l2p": ["svhn", "mnist", "cifar10", "notmnist", "fashion_mnist"],
    "l2p_jax": ["cifar10", "mnist", "svhn", "notmnist", "fashion_mnist"],
}
ORDER_SOURCES = {
    "l2p": "L2P's PyTorch code (JH-LEE-KR/l2p-pytorch datasets.py): SVHN, MNIST, CIFAR10, NotMNIST, FashionMNIST",
    "l2p_jax": "L2P's JAX code (google-research/l2p input_pipeline.create_5datasets): cifar10, mnist, svhn_cropped, "
               "not_mnist, fashion_mnist",
}
# a member's description "dataset" -> how its names become distinct from the other members'
DISTINCT_NAMES = {"MNIST": "handwritten digit {}", "SVHN": "house number digit {}"}
NAMINGS = ("distinct", "shared")


def task_order(keys: Sequence[str], order: Union[str, Sequence[str]]) -> list[str]:
    """The task names of ``keys`` in the order ``order`` asks (a name of ORDERS or a list of task names)."""
    keys = list(keys)
    if isinstance(order, str):
        if order not in ORDERS:
            raise StreamConfigError(
                f"scenario.order={order!r} is not a named order; choose "
                + ", ".join(f"{name} ({ORDER_SOURCES[name]})" for name in ORDERS)
                + f", or list the task names ({', '.join(keys)})")
        named = [k for k in ORDERS[order] if k in keys]
        return named + [k for k in keys if k not in named]
    wanted = [str(k) for k in order]
    missing, unknown = [k for k in keys if k not in wanted], [k for k in wanted if k not in keys]
    repeated = sorted(k for k, n in Counter(wanted).items() if n > 1)
    if missing or unknown or repeated:
        raise StreamConfigError(
            f"scenario.order must list each task of scenario.tasks ({', '.join(keys)}) once; missing: {missing}, "
            f"not a task: {unknown}, repeated: {repeated}")
    return wanted


def five_datasets(tasks: Mapping, order: Union[str, Sequence[str]] = "l2p", class_naming: str = "distinct",
                  name: str = "five_datasets", description: Optional[dict] = None,
                  train_transform: Optional[Callable] = None,
                  eval_transform: Optional[Callable] = None) -> TaskStream:
    """The task sequence of ``tasks`` (name -> one-experience scenario config) in ``order``, named as
    ``class_naming`` says (see the module docstring)."""
    if class_naming not in NAMINGS:
        raise StreamConfigError(f"scenario.class_naming={class_naming!r}; choose distinct (MNIST's and SVHN's digits "
                                "named apart) or shared (each dataset's own names)")
    keys = task_order(list(tasks), order)
    stream = task_sequence(name, {key: tasks[key] for key in keys}, train_transform=train_transform,
                           eval_transform=eval_transform, description=description)
    names = list(stream.class_names)
    renamed = []
    if class_naming == "distinct":
        for key, classes in zip(stream.tasks, stream.experience_classes):
            pattern = DISTINCT_NAMES.get(stream.description["task_streams"][key].get("dataset"))
            if pattern:
                renamed.append(key)
                for class_id in classes:
                    names[class_id] = pattern.format(names[class_id])
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        remedy = ("scenario.class_naming=distinct names MNIST's and SVHN's digits apart" if class_naming == "shared"
                  else "give the tasks that share them names of their own")
        log.warning("%s: %d class names belong to more than one class (%s): a text-side classifier cannot tell those "
                    "classes apart under eval.protocol=class_incremental (task_incremental is not affected); %s",
                    name, len(repeated), ", ".join(repeated[:10]), remedy)
    record = dict(stream.description)
    named = isinstance(order, str)
    record.update(order=list(stream.tasks), order_name=order if named else None,
                  order_source=ORDER_SOURCES[order] if named else "scenario.order (a list)",
                  class_naming=class_naming, renamed_tasks=renamed, repeated_class_names=repeated)
    return dataclasses.replace(stream, class_names=names, description=record)
