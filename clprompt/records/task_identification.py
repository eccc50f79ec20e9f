"""Task identification: how often a method that picks a task's prompts per image picks the right task.

DualPrompt chooses one expert prompt per image by key matching, S-Prompts one task's prompts by the
nearest K-means centroid; their class-incremental accuracy is bounded by that choice. A method that
chooses sets ``chosen_tasks`` (a long tensor [B]: the experience index chosen for each image of the
last forward, or None where it chose nothing, e.g. a task not trained yet); this plugin counts the
choices that equal the true task, per evaluated experience, into one row per evaluation (percent).
Methods that choose nothing leave the attribute absent and the rows empty.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from avalanche.core import SupervisedPlugin


class TaskIdentificationPlugin(SupervisedPlugin):
    """rows[i][j]: percent of task j's test images whose chosen task was j, in the evaluation after
    experience i + 1 (None where the method chose no task for that experience's images)."""

    def __init__(self, n_tasks: int, reduce=None, enabled: bool = True):
        """n_tasks: test experiences; enabled=False: the test experiences are not training tasks (held-out
        domains), so no choice can be right and none is counted."""
        super().__init__()
        self.n_tasks, self.reduce, self.enabled = n_tasks, reduce, enabled
        self.rows: list[list[Optional[float]]] = []
        self.n_trained = 0
        self._counts: Optional[torch.Tensor] = None   # [tasks, 2]: right choices, images with a choice

    def after_training_exp(self, strategy, **kwargs):
        self.n_trained = strategy.experience.current_experience + 1

    def before_eval(self, strategy, **kwargs):
        self._counts = None

    def before_eval_iteration(self, strategy, **kwargs):
        strategy.model.__dict__["chosen_tasks"] = None   # a method that chooses sets it in its forward

    def after_eval_iteration(self, strategy, **kwargs):
        chosen = getattr(strategy.model, "chosen_tasks", None)
        if chosen is None or not self.enabled:
            return
        if self._counts is None:
            self._counts = torch.zeros((self.n_tasks, 2), dtype=torch.long, device=chosen.device)
        task = strategy.experience.current_experience
        self._counts[task, 0] += (chosen == task).sum()   # stays on the device: no sync per batch
        self._counts[task, 1] += chosen.numel()

    def after_eval(self, strategy, **kwargs):
        if self.n_trained == 0:
            return
        counts = (self._counts if self._counts is not None   # a process that scored no image still joins the sum
                  else torch.zeros((self.n_tasks, 2), dtype=torch.long, device=strategy.device))
        if self.reduce is not None:
            counts = self.reduce(counts)
        counts = counts.cpu().numpy()
        # plain floats: the rows go into checkpoints, which load with weights_only (no numpy scalars)
        row = [100.0 * int(right) / int(total) if total else None for right, total in counts.tolist()]
        del self.rows[self.n_trained - 1:]
        self.rows.append(row)

    @property
    def chose(self) -> bool:
        """Whether the method identified tasks in any evaluation so far."""
        return any(value is not None for row in self.rows for value in row)

    def record(self) -> Optional[dict]:
        """The results.json entry (None for a method that never chooses a task)."""
        if not self.chose:
            return None
        return {"accuracy": self.rows, "mean_over_trained": [mean_over_trained(row, i + 1)
                                                             for i, row in enumerate(self.rows)],
                "units": "percent of task j+1's test images given task j+1's prompts, after experience i+1"}

    def log_row(self, writer, row: int) -> None:
        """TensorBoard scalars task_identification/task_k and .../trained_mean at step row + 1."""
        if row >= len(self.rows) or not self.chose:
            return
        for task, value in enumerate(self.rows[row]):
            if value is not None:
                writer.add_scalar(f"task_identification/task_{task + 1}", value, row + 1)
        mean = mean_over_trained(self.rows[row], row + 1)
        if mean is not None:
            writer.add_scalar("task_identification/trained_mean", mean, row + 1)
        writer.flush()


def mean_over_trained(row: list, n_trained: int) -> Optional[float]:
    """The mean task-identification accuracy over the tasks trained so far (those with a choice)."""
    values = [v for v in row[:n_trained] if v is not None]
    return float(np.mean(values)) if values else None
