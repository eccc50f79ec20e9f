"""Continual-learning metrics against values computed by hand."""

import math

import numpy as np
import pytest

from clprompt.records import metrics

# R[i, j]: accuracy on task j after training through task i (upper triangle = not yet trained).
R = np.array([
    [0.9, 0.3, 0.2],
    [0.6, 0.8, 0.4],
    [0.5, 0.7, 0.9],
])


def test_last_is_the_mean_of_the_final_row():
    assert metrics.last_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_avg_is_the_mean_of_accuracies_over_tasks_seen_so_far():
    a1, a2, a3 = 0.9, (0.6 + 0.8) / 2, (0.5 + 0.7 + 0.9) / 3
    assert metrics.incremental_accuracies(R) == pytest.approx([a1, a2, a3])
    assert metrics.average_incremental_accuracy(R) == pytest.approx((a1 + a2 + a3) / 3)


def test_forgetting_is_max_based_not_first_minus_last():
    # task 1: max(0.9, 0.6) - 0.5 = 0.4; task 2: max(0.3, 0.8) - 0.7 = 0.1
    assert metrics.forgetting(R) == pytest.approx((0.4 + 0.1) / 2)
    # Here the max is not the diagonal: task 2 peaks before it is trained (row 1, zero-shot 0.85).
    R2 = np.array([[0.9, 0.85], [0.5, 0.7]])
    assert metrics.forgetting(R2) == pytest.approx(0.9 - 0.5)
    R3 = np.array([[0.5, 0.2, 0.1], [0.9, 0.8, 0.1], [0.6, 0.6, 0.9]])
    # first-minus-last (Avalanche) would give task 1: 0.5 - 0.6 < 0; Chaudhry: 0.9 - 0.6 = 0.3
    assert metrics.forgetting(R3) == pytest.approx((0.3 + 0.2) / 2)


def test_bwt_compares_the_final_row_with_the_diagonal():
    assert metrics.backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_transfer_averages_accuracy_on_tasks_not_trained_yet():
    # task 2: mean(R[0,1]) = 0.3; task 3: mean(R[0,2], R[1,2]) = 0.3
    assert metrics.transfer(R) == pytest.approx((0.3 + 0.3) / 2)


def test_mtil_avg_is_zscls_column_means_averaged():
    # ZSCL's notebook: avg = arr.mean(axis=0) (each task over all 3 evaluations), then the mean over tasks
    columns = [(0.9 + 0.6 + 0.5) / 3, (0.3 + 0.8 + 0.7) / 3, (0.2 + 0.4 + 0.9) / 3]
    assert metrics.mtil_average(R) == pytest.approx(sum(columns) / 3)
    assert metrics.summarize(R)["mtil_avg"] == pytest.approx(sum(columns) / 3)


def test_single_task_stream():
    one = np.array([[0.7]])
    summary = metrics.summarize(one)
    assert summary["last"] == pytest.approx(0.7)
    assert summary["avg"] == pytest.approx(0.7)
    assert summary["forgetting"] == 0.0
    assert summary["bwt"] == 0.0
    assert math.isnan(summary["transfer"])


@pytest.mark.parametrize("bad", [np.zeros((0, 0)), np.zeros(3)])
def test_empty_or_flat_matrices_are_refused(bad):
    with pytest.raises(ValueError, match="square"):
        metrics.summarize(bad)


@pytest.mark.parametrize("function", [metrics.forgetting, metrics.backward_transfer, metrics.transfer])
def test_task_metrics_refuse_a_matrix_over_held_out_domains(function):
    with pytest.raises(ValueError, match="square"):
        function(np.zeros((2, 3)))
