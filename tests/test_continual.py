"""Continual runs as a user makes them: which classes training ranks against (train.classes), and a task
sequence scored per task and over the union."""

import numpy as np
import pytest
import torch

from clprompt.errors import ConfigValueError
from clprompt.methods.base import PromptMethod
from clprompt.run import run
from clprompt.training.strategy import PromptStrategy
from helpers import compose_config


def candidate_trace(tmp_path, monkeypatch, overrides):
    """Run in-process; returns (the candidate classes of each training step's experience, results)."""
    seen = []
    original = PromptStrategy.criterion

    def recording(self):
        if self.is_training:
            step = (self.experience.current_experience, tuple(self.model.candidate_classes))
            if not seen or seen[-1] != step:
                seen.append(step)
        return original(self)
    monkeypatch.setattr(PromptStrategy, "criterion", recording)
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "progress=false", "train.epochs=2",
                          "train.warmup_epochs=0", "train.batch_size=4", f"cache.dir={tmp_path / 'cache'}",
                          *overrides])
    results = run(cfg, tmp_path / "run")
    monkeypatch.setattr(PromptStrategy, "criterion", original)
    return seen, results


def test_training_ranks_the_experience_classes_by_default(tmp_path, monkeypatch):
    trace, results = candidate_trace(tmp_path, monkeypatch, ["method=lamm"])
    groups = results["stream"]["experience_classes"]
    assert trace == [(i, tuple(sorted(g))) for i, g in enumerate(groups)]
    assert results["config"]["train"]["classes"] == "experience"


def test_seen_ranks_every_class_so_far_and_old_labels_stay_frozen(tmp_path, monkeypatch):
    trace, results = candidate_trace(tmp_path, monkeypatch, ["method=lamm", "train.classes=seen"])
    groups = results["stream"]["experience_classes"]
    assert trace == [(i, tuple(sorted(c for g in groups[:i + 1] for c in g))) for i in range(len(groups))]
    assert results["config"]["train"]["classes"] == "seen"
    # LAMM freezes a task's labels once it is learned: they compete in later experiences but do not move
    first = torch.load(tmp_path / "run" / "adapted_state" / "experience_1.pt")
    second = torch.load(tmp_path / "run" / "adapted_state" / "experience_2.pt")
    old = [name for name in first if name in second]
    assert old and all(torch.equal(first[name], second[name]) for name in old)
    assert len(second) > len(first)


def test_seen_changes_what_is_learned(tmp_path, monkeypatch):
    _, own = candidate_trace(tmp_path / "a", monkeypatch, ["method=coop"])
    _, seen = candidate_trace(tmp_path / "b", monkeypatch, ["method=coop", "train.classes=seen"])
    assert own["accuracy_matrix"][0] == seen["accuracy_matrix"][0]  # the first experience has no old classes
    assert own["accuracy_matrix"][1:] != seen["accuracy_matrix"][1:]


def test_unknown_train_classes_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigValueError, match="train.classes='all' is not allowed: give experience .* or seen"):
        candidate_trace(tmp_path, monkeypatch, ["method=coop", "train.classes=all"])


def small_sequence(protocol):
    return ["scenario=shapes_sequence", f"eval.protocol={protocol}", "method=zeroshot"] + [
        f"scenario.tasks.{task}.{split}_per_class={n}" for task in ("palette", "fine", "novel")
        for split, n in (("train", 1), ("valid", 1), ("test", 2))]


def test_a_sequence_is_scored_per_task_and_over_the_union(tmp_path, monkeypatch):
    _, task_il = candidate_trace(tmp_path / "t", monkeypatch, small_sequence("task_incremental"))
    _, class_il = candidate_trace(tmp_path / "c", monkeypatch, small_sequence("class_incremental"))
    R, C = np.array(task_il["accuracy_matrix"]), np.array(class_il["accuracy_matrix"])
    assert R.shape == C.shape == (3, 3)
    assert task_il["stream"]["tasks"] == ["palette", "fine", "novel"]
    # zero-shot learns nothing: a task's own-classes accuracy is the same after every experience
    assert np.allclose(R, R[0][None, :])
    # over the union a task competes with more classes than its own (never better), the last row over all 170
    assert np.all(C[-1] <= R[-1] + 1e-9)
    assert np.allclose(np.diag(C)[0], R[0, 0]) and np.allclose(C[0], R[0])  # after task 1: nothing else seen
    assert set(task_il["metrics"]) == {"last", "avg", "mtil_avg", "forgetting", "bwt", "transfer"}
