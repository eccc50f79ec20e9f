"""S-Prompts (S-liPrompts; Wang et al., NeurIPS 2022): each task learns its own prompts, independently; at
test time an image takes the prompts of the task owning the K-means centre nearest to its frozen feature.

Per task t (an experience), created when its experience starts (``TaskPrompts.adaptation``):
- a learned text context of ``context_length`` vectors shared by the task's classes (CoOp's layout): the
  prompt of class c is ``[SOT][ctx_t][name_c][.][EOT]``; N(0, 0.02), or the word embeddings of ``context_init``;
- ``image_prompt_length`` learned image prompt tokens, concatenated to the class and patch tokens at the
  image tower's input (block 0, through ln_pre with them; ``CLIPAdapter.encode_image_with_prompts`` with
  one prompt set per image), initialised U(-1/sqrt(width), 1/sqrt(width)) as the reference's
  ``nn.Linear(width, length)`` weight;
- ``clusters`` centres of the frozen tower's normalized features of the task's training images (evaluation
  transform), from a seeded K-means run after the task is trained (``KMeansPlugin``).
A task's prompts are frozen when the next task starts: they never move after their own training.

Training: every image takes the prompts of the task being trained; classes of other tasks score -inf.
Evaluation: each image's frozen feature picks the task owning its nearest centre (``distance``), among the
trained tasks owning at least one candidate class; the image is encoded with that task's image prompts and
scored against that task's classes only, with that task's context (hard selection: the reference keeps the
chosen domain's logits only); every other class scores -inf. The choice is recorded in ``chosen_tasks``
(task-identification accuracy) when it is a choice: more than one trained task owns a candidate class. In
task-incremental scoring the task is given. Candidates no trained task owns (a task the protocol scores
before training it) are scored zero-shot: ``template`` with the names, no prompts, no task chosen.

Departures from the reference code (iamwangyabin/S-Prompts, methods/sprompt.py, models/slinet.py):
- the reference clusters the training loader's augmented, shuffled batches; clprompt the training images
  under the evaluation transform (the view the test images are matched in);
- its domain search covers every trained task (domain-incremental: every task owns every class); clprompt
  searches the trained tasks owning a candidate class and scores zero-shot when none does (a task the
  protocol scores before training it; the reference never scores one).
A class several tasks own (a domain-incremental stream) has one text feature per owning task, each with its
task's context, as the reference's per-domain classifiers; only the chosen task's is scored.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models.dynamic_modules import DynamicModule
from torch.utils.data import DataLoader

from clprompt.config_check import SEED_RANGE, require_choice, require_int, require_template, require_words
from clprompt.model.backbone import Backbone
from clprompt.errors import ClpromptError, ConfigValueError
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.parts.labels import NameLabels, check_cut_names

DISTANCES = {"l1": "the reference code's sum |f - c|", "euclidean": "the squared Euclidean distance"}


# ---- K-means: scikit-learn's, as the reference's ---------------------------------------------------------

KMEANS_RESTARTS = 10   # scikit-learn's n_init default when the reference was written (it became 'auto' in 1.4)


def kmeans(features: torch.Tensor, k: int, seed: int, max_iterations: int = 300) -> torch.Tensor:
    """Centres [k, d] (float32) of features [N, d]: scikit-learn's ``KMeans(n_clusters=k, random_state=seed)``
    (k-means++, Lloyd's, the best of ``KMEANS_RESTARTS`` runs), as the reference's ``clustering()``, fitted on
    the CPU in float64 (the same centres on every device). With fewer points than ``k`` the points are the
    centres and the extra ones repeat them (duplicates change no nearest-centre distance)."""
    from sklearn.cluster import KMeans     # imported when a run clusters, not when clprompt is imported
    from sklearn.exceptions import ConvergenceWarning

    if features.shape[0] == 0:
        raise ClpromptError("S-Prompts' K-means got no training images for this experience: the experience is empty")
    points = features.detach().to("cpu", torch.float64).numpy()
    fitted = min(int(k), len(points))
    model = KMeans(n_clusters=fitted, random_state=int(seed), n_init=KMEANS_RESTARTS, max_iter=int(max_iterations))
    with warnings.catch_warnings():        # fewer distinct points than centres: duplicates, as documented
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        centres = torch.from_numpy(model.fit(points).cluster_centers_)
    return centres[torch.arange(int(k)) % fitted].float()


def nearest_task(query: torch.Tensor, centroids: torch.Tensor, distance: str = "l1") -> torch.Tensor:
    """Each query's task slot: the task owning its nearest centre. query [B, d], centroids [T, K, d] -> [B].

    l1: sum_i |q_i - c_i|, what the reference computes (``(((feature - center) ** 2) ** 0.5).sum(1)``);
    euclidean: the squared Euclidean distance (the same order as the distance)."""
    difference = query[:, None, None, :].float() - centroids[None].float()      # [B, T, K, d]
    distances = difference.abs().sum(-1) if distance == "l1" else difference.pow(2).sum(-1)
    return distances.min(dim=2).values.argmin(dim=1)


# ---- the per-task state ------------------------------------------------------------------------------------

class TaskPrompts(DynamicModule):
    """What each task (experience) learned, grown in ``adaptation`` (a resumed run replays it, then loads).

    contexts[t]: [context_length, text width] (absent when context_length is 0);
    image_prompts[t]: [image_prompt_length, image width] (absent when the length is 0);
    centroids: buffer [tasks, clusters, embed dim], the K-means centres of each task's training features;
    clustered: buffer [tasks], True once a task's centres are computed;
    classes[t]: the task's class ids; current: the task being trained (the last adapted).
    Only the current task's parameters train; earlier tasks' are frozen when a new task starts.
    """

    def __init__(self, context_length: int, context_init: Optional[str], image_prompt_length: int, clusters: int):
        super().__init__()
        self.requested_context_length, self.context_init = context_length, context_init
        self.image_length, self.clusters = image_prompt_length, clusters
        self.contexts = torch.nn.ParameterList()
        self.image_prompts = torch.nn.ParameterList()
        self.classes: list[list[int]] = []
        self.current: Optional[int] = None

    def bind(self, clip, tokenizer) -> None:
        """Sizes from the backbone; the context's start (words' embeddings) when ``context_init`` is set."""
        clip.require_vit("S-Prompts")
        self.clip = [clip]  # a list keeps the frozen backbone out of this module's parameters
        self.text_width = int(clip.clip.token_embedding.weight.shape[1])
        self.image_width = clip.image_width
        self.context_start = None
        if self.context_init:
            ids = torch.tensor(tokenizer.encode(self.context_init), dtype=torch.long,
                               device=clip.clip.token_embedding.weight.device)
            if not len(ids) and not self.image_length:
                raise ConfigValueError(f"method.context_init={self.context_init!r} gives no token and "
                                       "method.image_prompt_length=0: a task learns nothing, the run would be "
                                       "zero-shot CLIP; give words, e.g. 'a photo of a', or null "
                                       "(method.context_length vectors)")
            with torch.no_grad():
                self.context_start = clip.embed_tokens(ids[None])[0].float().cpu()
            self.context_length = int(self.context_start.shape[0])
        else:
            self.context_length = self.requested_context_length
        embed_dim = int(clip.clip.visual.output_dim)
        self.register_buffer("centroids", torch.zeros(0, self.clusters, embed_dim))
        self.register_buffer("clustered", torch.zeros(0, dtype=torch.bool))

    @property
    def n_tasks(self) -> int:
        return len(self.classes)

    def adaptation(self, experience) -> None:
        """Before training an experience: a new task (prompts, centre slots), earlier tasks frozen."""
        if not self.training:
            return
        index = int(experience.current_experience)
        if index > self.n_tasks:
            raise ClpromptError(f"S-Prompts got experience {index + 1} after {self.n_tasks} experience(s): "
                                "experiences must be trained in order")
        if index == self.n_tasks:
            self.add_task(sorted(int(c) for c in experience.classes_in_this_experience))
        self.current = index

    def add_task(self, classes: list[int]) -> None:
        for parameter in list(self.contexts) + list(self.image_prompts):
            parameter.requires_grad_(False)
        device = self.clip[0].logit_scale.device
        if self.context_length > 0:
            start = (self.context_start.clone() if self.context_start is not None
                     else torch.randn(self.context_length, self.text_width) * 0.02)
            self.contexts.append(torch.nn.Parameter(start.to(device)))
        if self.image_length > 0:
            bound = 1.0 / math.sqrt(self.image_width)
            prompts = torch.empty(self.image_length, self.image_width).uniform_(-bound, bound)
            self.image_prompts.append(torch.nn.Parameter(prompts.to(device)))
        self.centroids = torch.cat([self.centroids, self.centroids.new_zeros((1,) + self.centroids.shape[1:])])
        self.clustered = torch.cat([self.clustered, self.clustered.new_zeros(1)])
        self.classes.append(list(classes))

    def tasks_with(self, class_ids: Sequence[int]) -> list[int]:
        """The tasks owning at least one of ``class_ids``."""
        wanted = {int(c) for c in class_ids}
        return [t for t, classes in enumerate(self.classes) if wanted.intersection(classes)]

    def set_centroids(self, task: int, centres: torch.Tensor) -> None:
        with torch.no_grad():
            self.centroids[task] = centres.to(self.centroids)
            self.clustered[task] = True


class ContextSlots(torch.nn.Module):
    """The text layout of S-Prompts' prompts, ``[ctx x length][label][suffix]``, for ``PromptTuning``'s layout
    builder; the vectors are the tasks' (``TaskPrompts.contexts``), written per (task, class) row."""

    def __init__(self, tasks: TaskPrompts, suffix: str = "."):
        super().__init__()
        self.tasks = [tasks]   # a list: the TaskPrompts module is registered once, on the method
        self.suffix = suffix

    def bind(self, clip, tokenizer, n_classes: int) -> None:
        self.tokenizer = tokenizer
        self.tasks[0].bind(clip, tokenizer)
        self.length = self.tasks[0].context_length

    def segments(self) -> list:
        tail = [("words", self.tokenizer.encode(self.suffix))] if self.suffix.strip() else []
        return [("context", k) for k in range(self.length)] + [("label",)] + tail

    def vectors(self, class_ids: Sequence[int]) -> None:
        return None


class KMeansPlugin(SupervisedPlugin):
    """After an experience's training: the K-means centres of its training images' frozen features."""

    def __init__(self, method: "SPrompts"):
        super().__init__()
        self.method = method

    def after_training_exp(self, strategy, **kwargs):
        autocast = strategy.autocast if hasattr(strategy, "autocast") else nullcontext
        self.method.cluster_experience(strategy.experience, strategy.eval_mb_size, strategy.device, autocast)


# ---- the method ----------------------------------------------------------------------------------------------

class SPrompts(PromptTuning):
    """S-liPrompts on CLIP: per task a text context and image prompts, chosen per image by nearest centre.

    context_length: learned text context vectors per task (ignored when context_init gives the words);
    context_init: words whose embeddings start each task's context (None: N(0, 0.02));
    image_prompt_length: image prompt tokens per task, at the image tower's input;
    clusters: K of the K-means per task; kmeans_seed: scikit-learn's ``random_state``; kmeans_iterations: its
    ``max_iter``; distance: l1 (the reference's) or euclidean, between an image's frozen
    feature and the centres; template: the zero-shot prompt of classes no trained task owns.
    """

    learns_own_prompts = True   # each task's context and image prompts

    def __init__(self, backbone: Backbone, class_names: Sequence[str], context_length: int = 16,
                 context_init: Optional[str] = None, image_prompt_length: int = 10, clusters: int = 5,
                 kmeans_seed: int = 0, kmeans_iterations: int = 300, distance: str = "l1",
                 template: str = "a photo of a {}."):
        check_options(context_length, context_init, image_prompt_length, clusters, kmeans_seed, kmeans_iterations,
                      distance, template)
        tasks = TaskPrompts(context_length, context_init, image_prompt_length, clusters)
        super().__init__(backbone, class_names, ContextSlots(tasks), NameLabels())
        self.cut_class_names = check_cut_names(self.tokenizer, self.class_names, [template], "method.template")
        self.tasks = tasks
        self.kmeans_seed, self.kmeans_iterations = int(kmeans_seed), int(kmeans_iterations)
        self.distance, self.template = distance, template
        self.chosen_tasks: Optional[torch.Tensor] = None

    def plugins(self) -> list:
        return [KMeansPlugin(self)]

    @property
    def frozen_image_side(self) -> bool:
        return False

    def text_is_trained(self) -> bool:
        return any(p.requires_grad for p in self.tasks.contexts)

    # -- K-means after each experience

    def cluster_experience(self, experience, batch_size: int, device, autocast=nullcontext) -> torch.Tensor:
        """Centres of the experience's training images (evaluation transform), stored as its task's.
        autocast: a context factory for the image tower (the strategy's, so centres and test-time queries
        come from the same precision)."""
        loader = DataLoader(experience.dataset.eval(), batch_size=batch_size, shuffle=False, num_workers=0,
                            generator=torch.Generator())   # draws nothing from the run's generators
        features = []
        with torch.no_grad(), autocast():
            for batch in loader:
                features.append(self.clip.encode_image(batch[0].to(device)).float().cpu())
        centres = kmeans(torch.cat(features), self.tasks.clusters, self.kmeans_seed, self.kmeans_iterations)
        self.tasks.set_centroids(int(experience.current_experience), centres)
        return centres

    # -- text side

    def task_text_features(self, row_tasks: Sequence[int], row_classes: Sequence[int]) -> torch.Tensor:
        """Normalized text features [R, d] of (task, class) rows: class c's prompt with task t's context."""
        layout = self._class_set_layout([int(c) for c in row_classes])
        embeddings = layout["embeddings"]
        if self.tasks.context_length > 0:
            tasks = sorted(set(row_tasks))
            stacked = torch.stack([self.tasks.contexts[t] for t in tasks])           # [tasks, M, width]
            slot = torch.tensor([tasks.index(t) for t in row_tasks], device=stacked.device)
            embeddings = embeddings.index_put(layout["context_index"], stacked[slot].to(embeddings.dtype))
        features = self.clip.encode_token_embeddings(embeddings, layout["eot"], length=layout["length"])
        return F.normalize(features, dim=-1)

    def template_text_features(self, class_ids: Sequence[int]) -> torch.Tensor:
        """Normalized zero-shot text features [C, d]: ``template`` with each class name."""
        tokens = self.tokenizer([self.template.format(self.class_names[int(c)]) for c in class_ids])
        return self.clip.encode_text(tokens.to(self.device))

    def class_text_features(self, class_ids: Sequence[int]) -> torch.Tensor:
        """Each class's text feature with the context of the last task owning it, or the template's for a
        class no task owns (what the method scores a class with once its task is chosen)."""
        class_ids = [int(c) for c in class_ids]
        owner = {c: t for t, classes in enumerate(self.tasks.classes) for c in classes}
        owned = [c for c in class_ids if c in owner]
        features = {}
        if owned:
            features.update(zip(owned, self.task_text_features([owner[c] for c in owned], owned)))
        free = [c for c in class_ids if c not in owner]
        if free:
            features.update(zip(free, self.template_text_features(free)))
        return torch.stack([features[c] for c in class_ids])

    def scoring_rows(self, tasks: tuple[int, ...], device) -> dict:
        """Per (candidate set, tasks): the (task, class) rows the tasks score, and row_of [len(tasks),
        len(candidates)] (the row of candidate j for the task in slot s, or R (a -inf column) when that task
        does not own it). Made once per key; plain tensors made outside inference mode."""
        key = (tuple(self.candidate_classes), tasks, str(device))
        cache = self.__dict__.setdefault("_scoring_rows", {})
        if key not in cache:
            row_tasks, row_classes = [], []
            for t in tasks:
                owned = set(self.tasks.classes[t])
                for c in self.candidate_classes:
                    if c in owned:
                        row_tasks.append(t)
                        row_classes.append(c)
            row_of = [[len(row_tasks)] * len(self.candidate_classes) for _ in tasks]
            for r, (t, c) in enumerate(zip(row_tasks, row_classes)):
                row_of[tasks.index(t)][self.candidate_classes.index(c)] = r
            with torch.inference_mode(False):
                cache[key] = {"tasks": row_tasks, "classes": row_classes,
                              "row_of": torch.tensor(row_of, dtype=torch.long, device=device)}
        return cache[key]

    def rows_text_features(self, rows: dict, tasks: tuple[int, ...]) -> torch.Tensor:
        """The rows' text features: recomputed while training, once per evaluation otherwise."""
        if self.training or torch.is_grad_enabled():
            return self.task_text_features(rows["tasks"], rows["classes"])
        key = ("rows", tuple(self.candidate_classes), tasks)
        if key not in self._text_cache:
            self._text_cache[key] = self.task_text_features(rows["tasks"], rows["classes"])
        return self._text_cache[key]

    # -- image side and the forward

    def scoring_tasks(self) -> tuple[int, ...]:
        """The tasks whose prompts may score this forward: the task being trained (training), else the
        trained tasks owning a candidate class (none: zero-shot)."""
        if self.training:
            if self.tasks.current is None:
                raise ClpromptError("S-Prompts is training without a task: the strategy calls adaptation(experience) "
                                    "before training an experience")
            return (self.tasks.current,)
        return tuple(self.tasks.tasks_with(self.candidate_classes))

    def choose_tasks(self, images: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        """Each image's slot in ``tasks`` [B]: 0 with one task; else the task of the nearest centre to the
        image's frozen feature (sets ``chosen_tasks``)."""
        slots = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        if len(tasks) == 1:
            return slots
        missing = [t + 1 for t in tasks if not bool(self.tasks.clustered[t])]
        if missing:
            raise ClpromptError(f"S-Prompts has no K-means centres for task(s) {missing}: they are computed after each "
                                "experience's training (KMeansPlugin, one of the method's plugins)")
        with torch.no_grad():
            query = self.clip.encode_image(images)
        slots = nearest_task(query, self.tasks.centroids[list(tasks)], self.distance)
        self.chosen_tasks = torch.as_tensor(tasks, device=slots.device)[slots]
        return slots

    def prompted_image_features(self, images: torch.Tensor, tasks: tuple[int, ...], slots: torch.Tensor) -> torch.Tensor:
        """Normalized features [B, d], image b encoded with the image prompts of task tasks[slots[b]]."""
        if self.tasks.image_length == 0:
            return self.clip.encode_image(images)
        prompts = torch.stack([self.tasks.image_prompts[t] for t in tasks])[slots]    # [B, P, width]
        return self.clip.encode_image_with_prompts(images, [prompts])

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The features the forward scores (each image with its chosen task's prompts)."""
        tasks = self.scoring_tasks()
        if not tasks:
            return self.clip.encode_image(images)
        return self.prompted_image_features(images, tasks, self.choose_tasks(images, tasks))

    def forward(self, images: torch.Tensor, candidate_classes=None) -> torch.Tensor:
        """Logits [B, n_classes]: the chosen task's classes scored, -inf elsewhere (see the module's doc)."""
        if candidate_classes is not None:
            self.set_candidate_classes(candidate_classes)
        self.chosen_tasks = None
        tasks = self.scoring_tasks()
        if not tasks:   # no trained task owns a candidate: zero-shot, no task chosen
            return super().logits_from_image_features(self.clip.encode_image(images))
        slots = self.choose_tasks(images, tasks)
        image = self.prompted_image_features(images, tasks, slots)
        self.last_image_features = image
        rows = self.scoring_rows(tasks, image.device)
        text = self.rows_text_features(rows, tasks)
        scores = self.clip.logit_scale * image @ text.to(image.dtype).t()                   # [B, R]
        scores = torch.cat([scores, scores.new_full((scores.shape[0], 1), float("-inf"))], dim=1)
        return self.scatter_candidates(scores.gather(1, rows["row_of"][slots]))

    def logits_from_image_features(self, image: torch.Tensor) -> torch.Tensor:
        raise ClpromptError("S-Prompts chooses each image's prompts from the image itself: it scores images, not "
                            "cached features (its frozen_image_side is False)")


def check_options(context_length, context_init, image_prompt_length, clusters, kmeans_seed, kmeans_iterations,
                  distance, template) -> None:
    """Each option in its range, refused where it would make S-Prompts something else: a task with no context
    vectors and no image prompts learns nothing (zero-shot CLIP); one of the two may be 0 (the paper's S-iPrompts
    and S-lPrompts variants)."""
    for name, value, least in (("context_length", context_length, 0), ("image_prompt_length", image_prompt_length, 0),
                               ("clusters", clusters, 1), ("kmeans_iterations", kmeans_iterations, 1)):
        require_int(f"method.{name}", value, least, what="(the reference's: context_length 16, image_prompt_length 10, "
                    "clusters 5, kmeans_iterations 300)", if_zero="no centre to choose a task by" if name == "clusters"
                    else "")
    require_words("method.context_init", context_init)
    if context_init is None and context_length == 0 and image_prompt_length == 0:
        raise ConfigValueError("method.context_length=0 and method.image_prompt_length=0: a task learns no context "
                               "and no image prompts, so the run would be zero-shot CLIP under S-Prompts' name; give "
                               "either (or both) >= 1 (the reference's: 16 and 10)")
    require_int("method.kmeans_seed", kmeans_seed, *SEED_RANGE, what="(scikit-learn's random_state)")
    require_choice("method.distance", distance, DISTANCES)
    require_template("method.template", template)
