"""LAMM's hierarchical loss terms, added to the classification loss of a method with learned labels.

L = wc_weight * L_WC + cos_weight * L_COS + kd_weight * L_KD, where
- L_WC (parameter space): sum of squared differences between the trainable label embeddings and their
  initial values (the names' word embeddings). LAMM weights it by 1 / shots: set wc_weight accordingly.
- L_COS (feature space): mean over the batch of 1 - cos(f_t(learned label of y), f_t(name of y)),
  the name side detached. Each label in the batch is paired with its own name, so a batch in which a
  label occurs once (or a batch of one label) still gets this term; LAMM's reference code pairs the
  batch's samples with one another instead, which gives 0 for a single-label batch.
- L_KD (logit space): KL(p_names || p_learned) at temperature T, times T^2, over the candidate classes.
  clprompt takes the zero-shot (names) distribution as the teacher; LAMM's reference code uses the
  learned distribution as the target instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clprompt.config_check import require_number
from clprompt.errors import ConfigValueError


class LabelAlignmentLoss(torch.nn.Module):
    """The weights are finite and >= 0, not all 0 (an alignment of weight 0 adds nothing: the method would be
    its plain label tuning under LAMM's name); the temperature is finite and > 0."""

    def __init__(self, wc_weight: float = 1.0, cos_weight: float = 1.0, kd_weight: float = 0.05,
                 kd_temperature: float = 2.0):
        super().__init__()
        weights = {key: require_number(f"method.alignment.{key}", value)
                   for key, value in (("wc_weight", wc_weight), ("cos_weight", cos_weight), ("kd_weight", kd_weight))}
        if not any(weights.values()):
            raise ConfigValueError("method.alignment: wc_weight, cos_weight and kd_weight are all 0, so LAMM's "
                                   "alignment adds nothing (the labels are tuned by the classification loss alone, "
                                   "as method=cls_tuning); give a weight > 0, or drop the alignment with "
                                   "~method.alignment")
        self.wc_weight, self.cos_weight = weights["wc_weight"], weights["cos_weight"]
        self.kd_weight = weights["kd_weight"]
        self.kd_temperature = require_number("method.alignment.kd_temperature", kd_temperature, 0, strict=True,
                                             if_zero="logits divided by a temperature of 0 are not finite")

    def weight_consolidation(self, method) -> torch.Tensor:
        terms = [(parameter - self._initial(method, int(c))).pow(2).sum()
                 for c, parameter in method.labels.embeddings.items() if parameter.requires_grad]
        return torch.stack(terms).sum() if terms else torch.zeros((), device=method.device)

    def _initial(self, method, class_id: int) -> torch.Tensor:
        """A class's initial label embeddings (its name's word embeddings: frozen, so computed once)."""
        initial = self.__dict__.setdefault("_initial_vectors", {})
        if class_id not in initial:
            with torch.inference_mode(False), torch.no_grad():
                initial[class_id] = method.labels.initial_vectors(class_id).detach()
        return initial[class_id]

    def _name_features(self, method, candidates) -> torch.Tensor:
        """The candidates' text features with their names in place of the learned labels. Constant when the
        context is not trained (LAMM): then computed once per class set; else every step (CoOp+LAMM)."""
        context_trained = any(p.requires_grad for p in method.context.parameters())
        if context_trained:
            with torch.no_grad():
                return method.class_text_features(candidates, learned_labels=False)
        cache = self.__dict__.setdefault("_names", {})
        key = tuple(candidates)
        if key not in cache:
            with torch.inference_mode(False), torch.no_grad():
                cache[key] = method.class_text_features(candidates, learned_labels=False)
        return cache[key]

    def forward(self, method, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        candidates = method.candidate_classes
        learned = method.last_text_features.float()   # bf16 under CPU autocast (CUDA's keeps normalize in fp32)
        names = self._name_features(method, candidates).float()
        rows = method.candidate_rows(targets)
        loss_cos = (1 - (learned[rows] * names[rows]).sum(dim=1)).mean()
        image = method.last_image_features.float()
        scale = method.clip.logit_scale
        student = scale * image @ learned.t() / self.kd_temperature
        teacher = scale * image @ names.t() / self.kd_temperature
        loss_kd = F.kl_div(F.log_softmax(student, dim=1), F.log_softmax(teacher, dim=1), log_target=True,
                           reduction="batchmean") * self.kd_temperature ** 2
        loss_wc = self.weight_consolidation(method)
        self.last_terms = {"lamm_wc": loss_wc.detach(), "lamm_cos": loss_cos.detach(), "lamm_kd": loss_kd.detach()}
        return self.wc_weight * loss_wc + self.cos_weight * loss_cos + self.kd_weight * loss_kd
