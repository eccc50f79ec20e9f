"""The Avalanche strategy that drives every run: Avalanche's supervised template plus method plugins.

A method is an ``nn.Module`` (a ``PromptMethod``) and may bring its own plugins. The optimizer is built
per experience over the method's trainable parameters only (Avalanche's default would register every
backbone parameter too). A method with nothing to train (zero-shot) goes through the same calls and
simply runs no epoch.

Four rooms the strategy calls: the training views (``clprompt.data.augmentation.SampleViews``: the strategy
tells them the epoch); for a method whose image side is frozen, the feature cache
(``clprompt.data.feature_cache.ExperienceFeatures``): training and evaluation then iterate over image
features instead of images, in the same order, and the method scores them with
``logits_from_image_features``; otherwise, with ``data.batch_transforms``, the decoded images
(``clprompt.data.image_batches.ImageBatches``): the loader yields sample ids and the batch's images are made
on the device, the same as the per-image path's; and, with ``train.compile``, the compiled text tower
(``clprompt.training.compiled_step.CompiledTextTower``), installed while an experience trains. The NaN check
reads the loss once per epoch (no host sync per step).
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import nullcontext
from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import DataLoader
from avalanche.benchmarks.utils.data_loader import (
    SingleDatasetDataLoader, TaskBalancedDataLoader, collate_from_data_or_kwargs,
)
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate

from clprompt.training.encoding_batch import EncodingBatchSampler
from clprompt.training.checkpoint import set_rng_states
from clprompt.training.distributed import Distributed
from clprompt.errors import ConfigValueError, NonFiniteLossError
from clprompt.model.losses import CrossEntropy
from clprompt.methods.base import PromptMethod

log = logging.getLogger(__name__)

TRAIN_CLASSES = ("experience", "seen")
SCHEDULES = ("cosine", "constant")


def autocast_dtype(device: torch.device, precision: str) -> Optional[torch.dtype]:
    """The AMP dtype for ``precision`` (auto | fp32 | bf16 | fp16): auto is bf16 on CUDA, none on CPU."""
    choices = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in choices:
        raise ConfigValueError(f"precision={precision!r}; choose auto, fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigValueError(f"precision=fp16 on {device.type}: half-precision autocast there is slower than fp32 "
                               "(3.6x in one trial); use precision=auto or fp32")
    return choices[precision]


class PromptStrategy(SupervisedTemplate):
    """Train and evaluate a prompt method experience by experience."""

    def __init__(self, *, method: PromptMethod, train_epochs: int = 1, train_mb_size: int = 32,
                 eval_mb_size: int = 256, device: torch.device = torch.device("cpu"),
                 plugins: Sequence = (), optimizer_factory: Optional[Callable] = None,
                 loss: Optional[torch.nn.Module] = None, warmup_epochs: int = 0, warmup_lr: float = 1e-5,
                 precision: str = "auto", views=None, features=None, train_classes: str = "experience",
                 compiled=None, image_batches=None, distributed=None, schedule: str = "cosine"):
        with warnings.catch_warnings():  # Avalanche warns that an evaluator without loggers logs nothing
            warnings.filterwarnings("ignore", message="No loggers specified")
            evaluator = EvaluationPlugin(loggers=[])
        super().__init__(
            model=method, optimizer=None, criterion=loss if loss is not None else CrossEntropy(),
            train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
            device=device, plugins=list(plugins) + list(method.plugins()),
            evaluator=evaluator, eval_every=-1,
        )
        if train_classes not in TRAIN_CLASSES:
            raise ConfigValueError(f"train.classes={train_classes!r}; choose experience (rank against the experience's "
                                   "own classes, the papers' recipe) or seen (against every class seen so far)")
        self.train_classes = train_classes
        if schedule not in SCHEDULES:
            raise ConfigValueError(f"train.schedule={schedule!r}; choose cosine (CoOp's) or constant (L2P's)")
        self.schedule = schedule
        self.optimizer_factory = optimizer_factory
        self.warmup_epochs, self.warmup_lr = warmup_epochs, warmup_lr
        self.amp_dtype = autocast_dtype(torch.device(device), precision)
        # fp16 gradients of small prompt losses underflow without loss scaling (bf16 needs none)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.views, self.features = views, features
        self.image_batches = image_batches   # an ImageBatches (data.batch_transforms) or None
        self.encoding_batch = None           # an EncodingBatch (eval.batch_size) or None: eval_mb_size as given
        # torchrun: each process trains on a share of every minibatch and scores a share of every test set
        self.distributed = distributed or Distributed()
        self._batch_share = 1.0              # this process's share of the current minibatch
        self.compiled = compiled        # a CompiledTextTower (train.compile) or None
        # train.checkpoint_every: every N epochs inside an experience, epoch_checkpoint(epochs done) is
        # called (the run writes a checkpoint); resume_within continues an experience from one
        self.checkpoint_every = 0
        self.epoch_checkpoint: Optional[Callable[[int], None]] = None
        self.resume_within: Optional[dict] = None
        self._feature_table = None      # the training experience's features, refilled per epoch
        self._features_in = False       # the current loader yields image features, not images
        self._ids_in = False            # the current loader yields sample ids, made into images on the device
        self._nonfinite = None          # per epoch: did any step's loss leave the finite range?

    def autocast(self):
        return (torch.autocast(self.device.type, dtype=self.amp_dtype)
                if self.amp_dtype is not None else nullcontext())

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen image features the cache stores, computed as the uncached forward would."""
        with torch.no_grad(), self.autocast():
            return self.model.frozen_image_features(images)

    def make_optimizer(self, **kwargs):
        parameters = self.model.trainable_parameters()
        if not parameters:
            self.optimizer = None
            return
        if self.optimizer_factory is None:
            raise ValueError("this method has trainable parameters but no optimizer was configured")
        if self.train_epochs <= self.warmup_epochs:
            raise ConfigValueError(
                f"train.epochs={self.train_epochs} is not larger than train.warmup_epochs={self.warmup_epochs}: "
                f"every epoch would run at the warm-up rate train.warmup_lr={self.warmup_lr} and the method would "
                "learn next to nothing. Train longer (e.g. train.epochs=5) or drop the warm-up "
                "(train.warmup_epochs=0)"
            )
        self.optimizer = self.optimizer_factory(parameters)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]

    def check_model_and_optimizer(self, **kwargs):
        self.model = self.model_adaptation()
        self.make_optimizer(**kwargs)

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)
        # the loss ranks the experience's classes (train.classes=experience), or all seen so far (seen): old
        # classes then compete with their frozen labels / features, against the recency bias
        classes = (self.experience.classes_seen_so_far if self.train_classes == "seen"
                   else self.experience.classes_in_this_experience)
        self.model.set_candidate_classes(sorted(classes))
        if self.compiled is not None:
            self.compiled.install(self.model)

    def _after_training_exp(self, **kwargs):
        if self.compiled is not None:
            self.compiled.remove()
        # the processes made the same updates; the main one's values guard against drift (kernel order)
        self.distributed.broadcast_parameters(self.model.trainable_parameters())
        super()._after_training_exp(**kwargs)

    def epoch_learning_rate(self, base_lr: float, epoch: int) -> float:
        """``warmup_epochs`` at the constant ``warmup_lr``, then (train.schedule) cosine over all epochs
        (CoOp's schedule) or the constant base rate (L2P's, DualPrompt's)."""
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        if self.schedule == "constant":
            return base_lr
        return base_lr * 0.5 * (1 + math.cos(math.pi * epoch / max(1, self.train_epochs)))

    def _loader_input(self, kwargs: dict, training: bool) -> None:
        """Set what the experience's loader yields: features, sample ids or (the default) images."""
        self._features_in = self.features is not None
        self._ids_in = not self._features_in and self.image_batches is not None
        if self._features_in:  # features in memory: no workers to feed; filled per epoch in training
            table, self.adapted_dataset = (self.features.dataset(self.experience, view=None, fill=False) if training
                                           else self.features.dataset(self.experience))
            if training:
                self._feature_table = table
        elif self._ids_in:     # ids: the images are made on the device, in _unpack_minibatch
            self.adapted_dataset = self.image_batches.dataset(self.experience)
        if self._features_in or self._ids_in:
            kwargs.update(num_workers=0, pin_memory=False, persistent_workers=False)
        if not training and self.distributed.enabled:   # this process's share of the test experience
            share = self.distributed.share(len(self.adapted_dataset))
            self.adapted_dataset = self.adapted_dataset.subset(share.tolist())

    # Avalanche's loaders, built here with its distributed sampler off: under torchrun that sampler deals
    # each process an interleaved part of the data, padded with repeated samples (counted twice in an
    # evaluation); clprompt shares the data among the processes itself (clprompt.training.distributed)

    def make_train_dataloader(self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False,
                              drop_last=False, **kwargs):
        loader = dict(num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers)
        self._loader_input(loader, training=True)
        args = self._obtain_common_dataloader_parameters(batch_size=self.train_mb_size, shuffle=shuffle,
                                                         drop_last=drop_last, **loader)
        if hasattr(self.experience, "task_labels"):
            self.dataloader = TaskBalancedDataLoader(self.adapted_dataset, oversample_small_groups=True,
                                                     distributed_sampling=False, **args)
        else:
            self.dataloader = DataLoader(self.adapted_dataset, **args)

    def make_eval_dataloader(self, num_workers=0, shuffle=False, pin_memory=None, persistent_workers=False,
                             **kwargs):
        loader = dict(num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers)
        self._loader_input(loader, training=False)
        batch = self.encoding_batch
        size = batch.size if batch is not None and not self._features_in else self.eval_mb_size
        args = self._obtain_common_dataloader_parameters(batch_size=size, shuffle=shuffle, **loader)
        collate_from_data_or_kwargs(self.adapted_dataset, args)
        if batch is not None and batch.measuring and not self._features_in:   # eval.batch_size=auto, measuring
            args.pop("batch_size"), args.pop("shuffle", None), args.pop("drop_last", None)
            self.dataloader = DataLoader(self.adapted_dataset,
                                         batch_sampler=EncodingBatchSampler(len(self.adapted_dataset), batch), **args)
        else:
            self.dataloader = SingleDatasetDataLoader(self.adapted_dataset, distributed_sampling=False, **args)

    def _unpack_minibatch(self):
        self.mbatch = list(self.mbatch)
        if self.is_training and self.distributed.enabled:   # data-parallel: this process's share of the batch
            size = len(self.mbatch[0])
            if size >= self.distributed.world_size:
                rows = torch.from_numpy(self.distributed.share(size))
                self.mbatch = [item[rows] for item in self.mbatch]
                self._batch_share = len(rows) / size
            else:   # fewer samples than processes: each trains the whole batch, the summed gradients averaged
                self._batch_share = 1.0 / self.distributed.world_size
        if self._ids_in:   # sample ids (on the host) -> the split's images in the current view, on the device
            self.mbatch[0] = self.image_batches.images(self.experience.origin_stream.name, self.mbatch[0])
        super()._unpack_minibatch()

    def _before_training_epoch(self, **kwargs):
        epoch = self.clock.train_exp_epochs
        for group in self.optimizer.param_groups:
            group["lr"] = self.epoch_learning_rate(group["base_lr"], epoch)
        if self.views is not None:
            self.views.set_epoch(epoch)
        if self._features_in:
            self._feature_table.features = self.features.features(
                self.experience, view=self.views.view if self.views is not None else 0)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        super()._before_training_epoch(**kwargs)

    def _after_training_epoch(self, **kwargs):
        # the one host sync of the epoch: a non-finite loss at any step, or parameters the last step made
        # non-finite (a finite loss can still produce an overflowing update); the experience's row is
        # then never scored
        parameters = self.model.trainable_parameters()
        broken = self._nonfinite | ~torch.stack([torch.isfinite(p).all() for p in parameters]).all()
        if bool(broken):
            what = "loss" if bool(self._nonfinite) else "parameters"
            raise NonFiniteLossError(
                f"the training {what} left the finite range in experience {self.experience.current_experience + 1}, "
                f"epoch {self.clock.train_exp_epochs + 1}: lower the learning rate (train.optimizer.lr) "
                "or use precision=fp32; the experiences already finished are in results.json"
            )
        super()._after_training_epoch(**kwargs)   # plugins' after_training_epoch; the clock counts the epoch
        done = self.clock.train_exp_epochs
        if self.epoch_checkpoint is not None and self.checkpoint_every and done % self.checkpoint_every == 0 \
                and done < self.train_epochs:   # the last epoch's state is the experience's checkpoint
            self.epoch_checkpoint(done)

    def criterion(self):
        loss = self._criterion(self.mb_output, self.mb_y)
        if self.is_training:
            # the terms of this step's loss, for the training log (detached: no sync, no graph kept)
            self.loss_terms = {getattr(self._criterion, "name", "task"): loss.detach()}
            loss = loss + self.model.regularization(self.mb_output, self.mb_y)
            self.loss_terms.update(self.model.loss_terms())
            self._nonfinite |= ~torch.isfinite(loss.detach())
            if self.distributed.enabled:   # weighted by the share, the processes' gradients sum to the batch's
                loss = loss * self._batch_share
        return loss

    def backward(self):
        if self.grad_scaler is None:
            return super().backward()
        self.grad_scaler.scale(self.loss).backward(retain_graph=self.retain_graph)

    def optimizer_step(self):
        self.distributed.sum_gradients(self.model.trainable_parameters())
        if self.grad_scaler is None:
            return super().optimizer_step()
        self.grad_scaler.step(self.optimizer)   # skips a step whose gradients overflowed
        self.grad_scaler.update()

    def _train_exp(self, experience, eval_streams=None, **kwargs):
        if self.optimizer is None:
            log.info("experience %d: nothing to train", experience.current_experience + 1)
            return
        if self.resume_within is None:
            return super()._train_exp(experience, eval_streams, **kwargs)
        # resuming inside this experience: the optimizer as it was, the generators as they were (set after
        # the data loader and the optimizer are made, as in the uninterrupted run at that epoch's start)
        start, state = self.resume_within["epochs_done"], self.resume_within
        self.resume_within = None
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_states(state["rng"])
        self.clock.train_exp_epochs = start
        for _ in range(start, self.train_epochs):   # Avalanche's epoch loop, from epoch ``start``
            self._before_training_epoch(**kwargs)
            if self._stop_training:
                self._stop_training = False
                break
            self.training_epoch(**kwargs)
            self._after_training_epoch(**kwargs)

    def forward(self):
        with self.autocast():
            if self._features_in:
                return self.model.logits_from_image_features(self.mb_x)
            if not self.is_training and self.encoding_batch is not None:   # scoring images: time the batch
                return self.encoding_batch.timed(len(self.mb_x), lambda: self.model(self.mb_x))
            return self.model(self.mb_x)

    def eval_epoch(self, **kwargs):
        with torch.inference_mode():
            super().eval_epoch(**kwargs)
