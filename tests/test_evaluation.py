"""The evaluation protocol and a whole run, in process, on the tiny generated stream."""

import json

import numpy as np
import pytest

from clprompt.errors import ConfigValueError
from clprompt.records.evaluation import candidate_classes
from clprompt.methods.base import PromptMethod
from clprompt.run import run
from helpers import compose_config

CLASSES = [[0, 1], [2, 3], [4, 5]]


def test_class_incremental_scores_trained_tasks_over_all_seen_classes():
    assert candidate_classes("class_incremental", 0, 2, CLASSES) == [0, 1, 2, 3]
    assert candidate_classes("class_incremental", 1, 2, CLASSES) == [0, 1, 2, 3]


def test_future_tasks_are_scored_over_their_own_classes():
    assert candidate_classes("class_incremental", 2, 2, CLASSES) == [4, 5]
    assert candidate_classes("class_incremental", 0, 0, CLASSES) == [0, 1]


def test_task_incremental_scores_each_task_over_its_own_classes():
    assert [candidate_classes("task_incremental", t, 3, CLASSES) for t in range(3)] == CLASSES


def test_unknown_protocol_is_refused():
    with pytest.raises(ConfigValueError, match="eval.protocol"):
        candidate_classes("open_set", 0, 1, CLASSES)


def tiny_run(tmp_path, *overrides):
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "progress=false", *overrides])
    return run(cfg, tmp_path)


def test_a_run_fills_the_whole_matrix_with_the_protocols_candidate_sets(tmp_path, monkeypatch):
    seen = []
    original = PromptMethod.set_candidate_classes

    def spy(self, class_ids):
        if not self.training:  # the evaluation's candidate sets (training sets its experience's classes)
            seen.append(sorted(class_ids))
        original(self, class_ids)

    monkeypatch.setattr(PromptMethod, "set_candidate_classes", spy)
    results = tiny_run(tmp_path)
    matrix = np.array(results["accuracy_matrix"])
    assert matrix.shape == (3, 3) and not np.isnan(matrix).any()
    assert ((0 <= matrix) & (matrix <= 100)).all()
    assert seen == [[0, 1], [2, 3], [4, 5],
                    [0, 1, 2, 3], [0, 1, 2, 3], [4, 5],
                    [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]
    # zero-shot does not train: a task scored over the same classes gets the same accuracy
    assert matrix[0, 2] == matrix[1, 2]
    assert results["status"] == "complete" and results["completed_experiences"] == 3
    assert results["weights"]["source"] == "random"
    assert results["stream"]["experience_classes"] == CLASSES


def test_task_incremental_rows_of_zeroshot_are_identical(tmp_path):
    matrix = np.array(tiny_run(tmp_path, "eval.protocol=task_incremental")["accuracy_matrix"])
    assert (matrix == matrix[0]).all()


def test_a_crash_keeps_the_experiences_already_finished(tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_run(tmp_path, "method._target_=helpers.failing_zeroshot_on_second_evaluation")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["completed_experiences"] == 1
    assert results["status"].startswith("failed: RuntimeError")
    first_row = results["accuracy_matrix"][0]
    assert all(v is not None for v in first_row)
    assert results["accuracy_matrix"][1] == [None, None, None]
    assert (tmp_path / "accuracy_matrix.csv").read_text().count("\n") == 4
