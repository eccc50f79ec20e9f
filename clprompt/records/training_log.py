"""Training as it happens: per epoch, the loss (and each of its terms), training accuracy, learning rate
and seconds, on the console, in TensorBoard and in results.json.

A strategy plugin. Per step it adds the loss terms and the correct predictions on the device (no host
sync); at the end of each epoch, where the strategy syncs once already, it reads them. The console gets a
tqdm bar over the epoch's steps when it is a terminal and ``progress=true`` (its running loss refreshed
every 25 steps, the only extra reads), and always one log line per epoch (``run.log``, and the console
when it is not a terminal). TensorBoard gets ``train/loss``, ``train/<term>`` (``ce`` or ``gce``, LAMM's
``lamm_wc`` / ``lamm_cos`` / ``lamm_kd``), ``train/accuracy``, ``train/lr`` and ``train/epoch_seconds`` at
step = epochs trained so far in the run, in its own folder (``tensorboard/train``: its steps are epochs,
the other curves' experiences). ``summary(experience)`` is what results.json's ``timing`` keeps per
experience: epochs run, final training loss and accuracy, the start time.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict

import torch
from avalanche.core import SupervisedPlugin
from tqdm import tqdm

log = logging.getLogger(__name__)
REFRESH_STEPS = 25

# TensorBoard tags (in tensorboard/train, step = epochs trained in the run)
LOSS_TAG = "train/loss"
TERM_TAG = "train/{}"                   # each term of the loss: ce or gce, LAMM's lamm_wc, lamm_cos, lamm_kd
ACCURACY_TAG = "train/accuracy"
LR_TAG = "train/lr"
SECONDS_TAG = "train/epoch_seconds"
# the loss and its terms: every train/ tag but the accuracy, the learning rate and the seconds (a regex for
# the custom-scalars layout, clprompt.records.outputs.custom_scalars_layout)
LOSS_TAGS_REGEX = r"train/(?!(?:accuracy|lr|epoch_seconds)$)[^/]+$"


class TrainingLog(SupervisedPlugin):
    def __init__(self, log_scalar, progress: bool = True, epochs_logged: int = 0):
        super().__init__()
        self.log_scalar = log_scalar          # (tag, value, step) -> None: the training curves' writer
        self.progress = progress
        self.epochs_logged = epochs_logged    # the TensorBoard step; a resumed run starts from its checkpoint's
        self.experiences: dict[int, dict] = {}
        self._bar = None

    def before_training_exp(self, strategy, **kwargs):
        index = strategy.experience.current_experience
        self.experiences.setdefault(index, {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "epochs": 0,
            "final_train_loss": None, "final_train_accuracy": None})

    def before_training_epoch(self, strategy, **kwargs):
        self._sums = defaultdict(lambda: torch.zeros((), device=strategy.device))
        self._correct = torch.zeros((), dtype=torch.long, device=strategy.device)
        self._count = 0
        self._steps = 0
        self._started = time.perf_counter()
        if self.progress and sys.stderr.isatty():
            experience = strategy.experience.current_experience + 1
            self._bar = tqdm(total=len(strategy.dataloader), leave=False, unit="step",
                             desc=f"experience {experience} epoch {strategy.clock.train_exp_epochs + 1}/"
                                  f"{strategy.train_epochs}")

    def after_training_iteration(self, strategy, **kwargs):
        n = int(strategy.mb_y.shape[0])
        self._sums["loss"] += strategy.loss.detach().sum() * n   # Avalanche keeps it as shape [1]
        for name, value in getattr(strategy, "loss_terms", {}).items():
            self._sums[name] += value.float().sum() * n
        self._correct += (strategy.mb_output.argmax(dim=1) == strategy.mb_y).sum()
        self._count += n
        self._steps += 1
        if self._bar is not None:
            self._bar.update(1)
            if self._steps % REFRESH_STEPS == 1:
                self._bar.set_postfix(loss=f"{float(self._sums['loss']) / self._count:.4f}")

    def after_training_epoch(self, strategy, **kwargs):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        seconds = time.perf_counter() - self._started
        count = max(1, self._count)
        values = {name: float(total) / count for name, total in self._sums.items()}
        accuracy = 100 * int(self._correct) / count
        lr = strategy.optimizer.param_groups[0]["lr"]
        self.epochs_logged += 1
        step = self.epochs_logged
        for name, value in values.items():
            self.log_scalar(LOSS_TAG if name == "loss" else TERM_TAG.format(name), value, step)
        self.log_scalar(ACCURACY_TAG, accuracy, step)
        self.log_scalar(LR_TAG, lr, step)
        self.log_scalar(SECONDS_TAG, seconds, step)
        index = strategy.experience.current_experience
        record = self.experiences[index]
        record.update(epochs=record["epochs"] + 1, final_train_loss=values.get("loss"),
                      final_train_accuracy=accuracy)
        terms = " ".join(f"{name} {value:.4f}" for name, value in values.items() if name != "loss")
        log.info("experience %d epoch %d/%d: loss %.4f%s, train accuracy %.2f%%, lr %.3g, %.1f s",
                 index + 1, strategy.clock.train_exp_epochs + 1, strategy.train_epochs, values.get("loss", 0.0),
                 f" ({terms})" if terms else "", accuracy, lr, seconds)

    def summary(self, experience_index: int) -> dict:
        """What results.json's timing keeps for an experience (empty for one that was not trained)."""
        return dict(self.experiences.get(experience_index, {"epochs": 0}))
