"""The evaluation protocol: after each experience, score every task of the stream.

Class-incremental (default): a task already trained is scored over all classes seen so far; a task
not trained yet is scored over its own classes (zero-shot, by its class names). Task-incremental:
each task over its own classes. The plugin fills one row of the accuracy matrix per evaluation.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from avalanche.core import SupervisedPlugin
from tqdm.auto import tqdm

from clprompt.errors import ConfigValueError

log = logging.getLogger(__name__)

PROTOCOLS = ("class_incremental", "task_incremental")


def candidate_classes(protocol: str, task: int, n_trained: int,
                      experience_classes: Sequence[Sequence[int]]) -> list[int]:
    """Classes that task ``task`` is scored over after ``n_trained`` experiences have been trained."""
    if protocol not in PROTOCOLS:
        raise ConfigValueError(f"eval.protocol={protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "class_incremental" and task < n_trained:
        return sorted(c for classes in experience_classes[:n_trained] for c in classes)
    return sorted(experience_classes[task])


class AccuracyMatrixPlugin(SupervisedPlugin):
    """Sets each evaluated task's candidate classes and records R[i, j] (fractions in [0, 1]).

    Row i is filled by the evaluation that follows the training of experience i. ``row_ready`` is
    called with the row index once a row is complete, so results can be written as they come.
    """

    def __init__(self, experience_classes: Sequence[Sequence[int]], protocol: str = "class_incremental",
                 progress: bool = True):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ConfigValueError(f"eval.protocol={protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        self.experience_classes = [list(c) for c in experience_classes]
        self.protocol = protocol
        self.progress = progress
        T = len(self.experience_classes)
        self.matrix = np.full((T, T), np.nan)
        self.n_trained = 0
        self._counts: dict[int, list[int]] = {}
        self._bar = None

    def after_training_exp(self, strategy, **kwargs):
        self.n_trained = strategy.experience.current_experience + 1

    def before_eval(self, strategy, **kwargs):
        strategy.model.clear_text_cache()
        self._counts = {}
        total = sum(len(exp.dataset) for exp in strategy.current_eval_stream)
        self._bar = tqdm(total=total, desc=f"eval after experience {self.n_trained}", unit="img",
                         disable=not self.progress, leave=False)

    def before_eval_exp(self, strategy, **kwargs):
        task = strategy.experience.current_experience
        strategy.model.set_candidate_classes(
            candidate_classes(self.protocol, task, self.n_trained, self.experience_classes))
        self._counts[task] = [0, 0]

    def after_eval_iteration(self, strategy, **kwargs):
        task = strategy.experience.current_experience
        predictions = strategy.mb_output.argmax(dim=1)
        counts = self._counts[task]
        counts[0] = counts[0] + (predictions == strategy.mb_y).sum()  # stays on the device: no sync per batch
        counts[1] += int(strategy.mb_y.shape[0])
        self._bar.update(int(strategy.mb_y.shape[0]))

    def after_eval(self, strategy, **kwargs):
        self._bar.close()
        if self.n_trained == 0:
            return
        row = self.n_trained - 1
        for task, (correct, total) in self._counts.items():
            self.matrix[row, task] = int(correct) / total if total else np.nan
        log.info("after experience %d: %s", row + 1,
                 " ".join(f"{100 * a:.2f}" for a in self.matrix[row]))
