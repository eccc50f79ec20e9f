"""The protocols' pure cores: K-shot draws, label noise, pseudo-label selection, base-to-new, metrics."""

import numpy as np
import pytest

from clprompt.records.metrics import base_to_new, harmonic_mean
from scenarios.protocols import few_shot, label_noise, pseudo_labels
from scenarios.protocols.base_to_new import base_and_new_classes
from scenarios.protocols.relabeled import RelabeledSubset
from scenarios.array_dataset import ArrayImageDataset

LABELS = np.repeat(np.arange(5), 20)  # 5 classes x 20 samples
np.random.default_rng(0).shuffle(LABELS)


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_few_shot_draws_k_per_class_deterministically(shots):
    first = few_shot.sample_per_class(LABELS, 5, shots, seed=1)
    assert np.array_equal(first, few_shot.sample_per_class(LABELS, 5, shots, seed=1))
    assert np.bincount(LABELS[first], minlength=5).tolist() == [shots] * 5
    assert len(set(first.tolist())) == len(first) and np.all(np.diff(first) > 0)


def test_few_shot_seeds_differ_and_short_classes_keep_all():
    assert not np.array_equal(few_shot.sample_per_class(LABELS, 5, 4, 1), few_shot.sample_per_class(LABELS, 5, 4, 2))
    labels = np.array([0] * 10 + [1] * 3)
    drawn = few_shot.sample_per_class(labels, 2, 5, seed=3)
    assert np.bincount(labels[drawn]).tolist() == [5, 3]
    assert few_shot.shortfall(labels, 2, 5) == {1: 3}
    with pytest.raises(ValueError, match="at least 1"):
        few_shot.sample_per_class(labels, 2, 0, seed=3)


@pytest.mark.parametrize("rate, per_class", [(0.125, 2), (0.25, 4), (0.5, 8)])
def test_symmetric_noise_rate_is_exact_per_class(rate, per_class):
    labels = np.repeat(np.arange(10), 16)
    noisy_labels, noisy = label_noise.symmetric_noise(labels, 10, rate, seed=0)
    assert noisy.mean() == rate  # realised rate exact: PTNL's 2, 4, 8 of 16
    assert np.bincount(labels[noisy], minlength=10).tolist() == [per_class] * 10
    assert np.all(noisy_labels[noisy] != labels[noisy]) and np.array_equal(noisy_labels[~noisy], labels[~noisy])
    again, _ = label_noise.symmetric_noise(labels, 10, rate, seed=0)
    assert np.array_equal(again, noisy_labels)


def test_symmetric_noise_draws_wrong_labels_uniformly():
    labels = np.zeros(30000, dtype=int)
    noisy_labels, _ = label_noise.symmetric_noise(labels, 4, 1.0, seed=0)
    counts = np.bincount(noisy_labels, minlength=4)
    assert counts[0] == 0 and np.allclose(counts[1:] / 30000, 1 / 3, atol=0.01)


def test_confusing_noise_picks_the_most_preferred_wrong_class():
    labels = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array([  # hand-made zero-shot preferences, the true class often on top
        [9.0, 1.0, 5.0],
        [9.0, 7.0, 5.0],
        [3.0, 8.0, 4.0],
        [0.0, 8.0, 9.0],
        [6.0, 2.0, 9.0],
        [1.0, 4.0, 9.0],
    ])
    noisy_labels, noisy = label_noise.confusing_noise(labels, scores, 1.0, seed=0)
    assert noisy.all() and noisy_labels.tolist() == [2, 1, 2, 2, 0, 1]
    half_labels, half = label_noise.confusing_noise(labels, scores, 0.5, seed=0)
    assert np.bincount(labels[half]).tolist() == [1, 1, 1]
    expected = np.array([2, 1, 2, 2, 0, 1])
    assert np.array_equal(half_labels[half], expected[half]) and np.array_equal(half_labels[~half], labels[~half])


def test_noise_kind_and_rate_are_checked():
    with pytest.raises(ValueError, match="choose one of none, symmetric, confusing"):
        label_noise.make_noisy("pairflip", LABELS, 5, 0.2, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_noise.make_noisy("symmetric", LABELS, 5, 1.5, 0)
    with pytest.raises(ValueError, match="zero-shot scores"):
        label_noise.make_noisy("confusing", LABELS, 5, 0.2, 0)
    same, noisy = label_noise.make_noisy("none", LABELS, 5, 0.0, 0)
    assert np.array_equal(same, LABELS) and not noisy.any()


def test_top_k_keeps_the_most_confident_per_predicted_class():
    predictions = np.array([0, 0, 0, 1, 1, 2, 0])
    confidences = np.array([0.5, 0.9, 0.7, 0.2, 0.8, 0.3, 0.9])
    chosen = pseudo_labels.select_top_k(predictions, confidences, 2)
    assert chosen.tolist() == [1, 3, 4, 5, 6]  # class 0: 0.9 (1), 0.9 (6); class 1: both; class 2: its one
    assert pseudo_labels.select_top_k(predictions, confidences, 1).tolist() == [1, 4, 5]  # tie -> lower index


def test_random_selection_draws_k_per_predicted_class_from_a_seed():
    predictions = np.repeat(np.arange(4), 10)
    chosen = pseudo_labels.select_random(predictions, 3, seed=5)
    assert np.bincount(predictions[chosen]).tolist() == [3, 3, 3, 3]
    assert np.array_equal(chosen, pseudo_labels.select_random(predictions, 3, seed=5))
    assert not np.array_equal(chosen, pseudo_labels.select_random(predictions, 3, seed=6))
    confidences = np.tile(np.arange(10), 4)  # top-K would always take the last three of each class
    assert not np.array_equal(chosen, pseudo_labels.select_top_k(predictions, confidences, 3))
    with pytest.raises(ValueError, match="top_k"):
        pseudo_labels.select("best", predictions, confidences, 3, 0)


def test_base_to_new_split_and_harmonic_mean():
    assert base_and_new_classes(5) == ([0, 1, 2], [3, 4])
    assert base_and_new_classes(4) == ([0, 1], [2, 3])
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    result = base_to_new(np.array([[0.9, 0.6], [np.nan, np.nan]]))
    assert result == pytest.approx({"base": 0.9, "new": 0.6, "hm": 0.72})
    with pytest.raises(ValueError, match="2 x 2"):
        base_to_new(np.zeros((3, 3)))


def test_relabeled_subset_serves_chosen_samples_with_given_labels():
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    data = ArrayImageDataset(images, [0, 1, 2, 3])
    view = RelabeledSubset(data, [3, 1], [0, 0])
    assert len(view) == 2 and view.targets == [0, 0] and view.true_targets == [3, 1]
    image, label = view[0]
    assert label == 0 and np.array_equal(np.asarray(image), images[3])
    tensors = view.with_transform(lambda im: np.asarray(im).sum())
    assert tensors[1] == (int(images[1].astype(int).sum()), 0)
