"""The evaluation protocol: after each experience, score every task of the stream.

Class-incremental (the default of class-incremental streams): a task already trained is scored over all
classes seen so far; a task not trained yet over its own classes (zero-shot, by its class names).
Task-incremental: each task over its own classes. Domain-incremental (the default, and the only protocol, of
domain-incremental streams): every test domain over every class, the domain never given. The plugin fills
one row of the accuracy matrix per evaluation: R[i, j] = test experience j after training experience i.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from tqdm.auto import tqdm

from clprompt.errors import ConfigValueError

log = logging.getLogger(__name__)

PROTOCOLS = ("class_incremental", "task_incremental", "domain_incremental")


def resolve_protocol(requested: str, scenario_type: str, stream_name: str) -> str:
    """``eval.protocol`` for this stream: ``auto`` is the scenario's own; a protocol that does not fit the
    stream is refused, saying which does."""
    if requested == "auto":
        return scenario_type
    if requested not in PROTOCOLS:
        raise ConfigValueError(f"eval.protocol={requested!r}; choose auto or one of {', '.join(PROTOCOLS)}")
    if scenario_type == "domain_incremental" and requested != "domain_incremental":
        raise ConfigValueError(
            f"eval.protocol={requested} does not apply to {stream_name}, a domain-incremental stream (every experience "
            "the same classes from a new domain): its test images are scored over every class with the domain not "
            "given. Use eval.protocol=domain_incremental (or auto, the default)")
    if scenario_type != "domain_incremental" and requested == "domain_incremental":
        raise ConfigValueError(
            f"eval.protocol=domain_incremental needs a domain-incremental scenario (every experience the same classes "
            f"from a new domain, e.g. scenario=domainnet, core50 or shapes_domains); {stream_name} brings new classes "
            "each experience: use eval.protocol=class_incremental or task_incremental (or auto, the default)")
    return requested


def candidate_classes(protocol: str, task: int, n_trained: int,
                      experience_classes: Sequence[Sequence[int]]) -> list[int]:
    """Classes that task ``task`` is scored over after ``n_trained`` experiences have been trained."""
    if protocol not in PROTOCOLS:
        raise ConfigValueError(f"eval.protocol={protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "class_incremental" and task < n_trained:
        return sorted(c for classes in experience_classes[:n_trained] for c in classes)
    return sorted(experience_classes[task])   # domain-incremental: every class is each domain's


class AccuracyMatrixPlugin(SupervisedPlugin):
    """Sets each evaluated task's candidate classes and records R[i, j] (fractions in [0, 1]).

    Row i is filled by the evaluation that follows the training of experience i. ``row_ready`` is
    called with the row index once a row is complete, so results can be written as they come.
    The matrix is square (training experiences x the same tasks' tests) unless ``test_classes`` gives test
    experiences of their own (a domain stream's held-out test domains): then it has one column per test
    experience.
    """

    def __init__(self, experience_classes: Sequence[Sequence[int]], protocol: str = "class_incremental",
                 progress: bool = True, reduce=None, test_classes: Optional[Sequence[Sequence[int]]] = None):
        """reduce(tensor) -> tensor: sums counts over the processes of a torchrun run (each scored a share of
        every test experience); None: one process. test_classes: the classes of each test experience, when
        they are not the training experiences' (candidates then come from them)."""
        super().__init__()
        self.reduce = reduce
        if protocol not in PROTOCOLS:
            raise ConfigValueError(f"eval.protocol={protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        self.experience_classes = [list(c) for c in experience_classes]
        self.test_classes = [list(c) for c in (test_classes if test_classes is not None else experience_classes)]
        self.protocol = protocol
        self.progress = progress
        self.matrix = np.full((len(self.experience_classes), len(self.test_classes)), np.nan)
        # task confusion per evaluation: true task x task of the predicted class (counts), filled in the
        # same pass as the matrix; row r of ``task_confusion`` is the evaluation after experience r + 1
        self.task_confusion: list[list[list[int]]] = []
        n_classes = 1 + max((c for classes in self.experience_classes for c in classes), default=0)
        self._task_of_class = torch.full((n_classes,), -1, dtype=torch.long)
        for task, classes in enumerate(self.experience_classes):
            self._task_of_class[list(classes)] = task
        self.n_trained = 0
        self._counts: dict[int, list[int]] = {}
        self._confusion = None
        self._bar = None

    def after_training_exp(self, strategy, **kwargs):
        self.n_trained = strategy.experience.current_experience + 1

    def before_eval(self, strategy, **kwargs):
        strategy.model.clear_text_cache()
        self._counts = {}
        self._confusion = None
        total = sum(len(exp.dataset) for exp in strategy.current_eval_stream)
        self._bar = tqdm(total=total, desc=f"eval after experience {self.n_trained}", unit="img",
                         disable=None if self.progress else True, leave=False)  # None: no bar without a terminal

    def before_eval_exp(self, strategy, **kwargs):
        task = strategy.experience.current_experience
        strategy.model.set_candidate_classes(
            candidate_classes(self.protocol, task, self.n_trained, self.test_classes))
        self._counts[task] = [0, 0]
        if self._confusion is None and self.protocol != "domain_incremental":  # a class names no domain
            self._confusion = torch.zeros((len(self.experience_classes),) * 2, dtype=torch.long, device=strategy.device)
            self._lookup = self._task_of_class.to(strategy.device)

    def after_eval_iteration(self, strategy, **kwargs):
        task = strategy.experience.current_experience
        predictions = strategy.mb_output.argmax(dim=1)
        counts = self._counts[task]
        counts[0] = counts[0] + (predictions == strategy.mb_y).sum()  # stays on the device: no sync per batch
        counts[1] += int(strategy.mb_y.shape[0])
        if self._confusion is not None:
            predicted_task = self._lookup[predictions]
            self._confusion[task] += torch.bincount(predicted_task.clamp_min(0), minlength=len(self._confusion))
        self._bar.update(int(strategy.mb_y.shape[0]))

    def after_eval(self, strategy, **kwargs):
        self._bar.close()
        if self.n_trained == 0:
            return
        row = self.n_trained - 1
        tasks = sorted(self._counts)
        counts = torch.tensor([[int(self._counts[t][0]), int(self._counts[t][1])] for t in tasks], dtype=torch.long)
        if self.reduce is not None:
            counts = self.reduce(counts)
            self._confusion = self.reduce(self._confusion) if self._confusion is not None else None
        for task, (correct, total) in zip(tasks, counts.tolist()):
            self.matrix[row, task] = correct / total if total else np.nan
        if self._confusion is not None:
            del self.task_confusion[row:]
            self.task_confusion.append(self._confusion.cpu().tolist())
        log.info("after experience %d: %s", row + 1,
                 " ".join(f"{100 * a:.2f}" for a in self.matrix[row]))
