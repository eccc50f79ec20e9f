"""The sandbox world: determinism, held-out structure, rendering, styles, and the sandbox streams."""

import re

import numpy as np
import pytest

from scenarios.sandbox.pretraining import CaptionedScenes, captioned_batch
from scenarios.sandbox.render import STYLES, apply_style, render
from scenarios.sandbox.tasks import TASKS, colour_shape_task, render_split, sandbox_stream
from scenarios.sandbox.world import (
    ATTRIBUTES, COLOUR_RGB, COLOURS, HELD_OUT, HELD_OUT_PAIRS, NOVEL_COLOUR_NAMES, SHAPES, caption_matches,
    sample_scenes,
)


def test_pretraining_batches_are_deterministic():
    first, second = captioned_batch(7, 3, 64), captioned_batch(7, 3, 64)
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]
    assert np.array_equal(first[2], second[2]) and np.array_equal(first[3], second[3])
    other = captioned_batch(7, 4, 64)
    assert not np.array_equal(first[0], other[0])


def test_corpus_yields_the_same_batches_in_order_with_workers():
    import torch

    corpus = CaptionedScenes(seed=1, n_batches=4, batch_size=8)
    alone = [b[1] for b in corpus]
    with_workers = [b[1] for b in torch.utils.data.DataLoader(corpus, batch_size=None, num_workers=2)]
    assert alone == with_workers == [captioned_batch(1, i, 8)[1] for i in range(4)]


def test_held_out_compositions_and_novel_words_never_reach_pretraining():
    for index in range(5):
        _, texts, named, attributes = captioned_batch(0, index, 256)
        pairs = {(int(c), int(s)) for c, s in attributes[:, :2]}
        assert not pairs & HELD_OUT_PAIRS
        words = {w.strip(".") for text in texts for w in text.split()}
        assert not words & set(NOVEL_COLOUR_NAMES)
        assert not any(re.search(rf"\b{c} {s}\b", text) for text in texts for c, s in HELD_OUT)


def test_captions_name_only_true_attributes():
    _, texts, named, attributes = captioned_batch(2, 0, 128)
    said = named >= 0
    assert (named[said] == attributes[said]).all()
    for text, row, attrs in zip(texts, named, attributes):
        if row[0] >= 0:
            assert COLOURS[attrs[0]] in text
        if row[1] >= 0:
            assert SHAPES[attrs[1]] in text


def test_caption_matches_on_hand_made_rows():
    # attributes: colour, shape, pattern, size, position, background
    scenes = np.array([[0, 3, 0, 1, 0, 0], [0, 3, 1, 0, 2, 1], [2, 3, 0, 1, 0, 0]])
    named = np.array([[0, 3, -1, -1, -1, -1],   # "red star": scenes 0, 1
                      [-1, 3, -1, 1, -1, -1],   # "large star": scenes 0, 2
                      [0, 3, 1, -1, -1, -1]])   # "red striped star": scene 1
    assert len(ATTRIBUTES) == scenes.shape[1]
    expected = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=bool)
    assert np.array_equal(caption_matches(named, scenes), expected)


def test_render_draws_the_object_in_its_colour_on_its_background():
    rng = np.random.default_rng(0)
    scenes = sample_scenes(rng, 2, colour=[0, 2], shape=[0, 1], pattern=[0, 0], size=[1, 1], backgrounds=(0,))
    scenes.center[:] = 16.0
    images = render(scenes, rng, colour_jitter=0)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images[0, 16, 16], COLOUR_RGB[0].astype(np.uint8))
    assert np.array_equal(images[1, 16, 16], COLOUR_RGB[2].astype(np.uint8))
    assert (images[:, 0, 0] == 255).all()


@pytest.mark.parametrize("style", [s for s in STYLES if s != "clean"])
def test_styles_change_the_look(style):
    rng = np.random.default_rng(0)
    images = render(sample_scenes(rng, 8), rng)
    shifted = apply_style(images, style, np.random.default_rng(1))
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    assert np.abs(shifted.astype(int) - images).mean() > 2


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        apply_style(np.zeros((1, 4, 4, 3), np.uint8), "sepia", np.random.default_rng(0))


def test_splits_are_balanced_disjoint_and_deterministic():
    task = colour_shape_task()
    train, train_labels = render_split(task, 5, seed=0)
    test, test_labels = render_split(task, 3, seed=2)
    assert np.bincount(train_labels).tolist() == [5] * 100 and np.bincount(test_labels).tolist() == [3] * 100
    train_hashes = {image.tobytes() for image in train}
    assert not any(image.tobytes() in train_hashes for image in test)
    again, _ = render_split(task, 3, seed=2)
    assert np.array_equal(test, again)


def test_split_shapes_stream_shape():
    stream = sandbox_stream("split_shapes", n_experiences=10, train_per_class=2, valid_per_class=1,
                            test_per_class=1, class_order_seed=1993)
    assert stream.n_experiences == 10 and len(stream.class_names) == 100
    assert [len(e.dataset) for e in stream.benchmark.train_stream] == [20] * 10
    assert [len(e.dataset) for e in stream.benchmark.valid_stream] == [10] * 10
    assert [len(e.dataset) for e in stream.benchmark.test_stream] == [10] * 10
    assert len(stream.description["held_out_classes"]) == len(HELD_OUT)
    assert stream.class_names[0] == "red circle"


@pytest.mark.parametrize("task, n_classes", [("shapes_lowcontrast", 100), ("shapes_textured", 100), ("shapes_palette", 100),
                                             ("shapes_fine", 40), ("shapes_novel", 30)])
def test_single_task_streams_have_one_experience_and_three_splits(task, n_classes):
    stream = sandbox_stream(task, train_per_class=3, valid_per_class=1, test_per_class=2)
    assert stream.n_experiences == 1 and len(stream.class_names) == n_classes
    assert len(stream.benchmark.train_stream[0].dataset) == 3 * n_classes
    assert len(stream.benchmark.valid_stream[0].dataset) == n_classes
    assert len(stream.benchmark.test_stream[0].dataset) == 2 * n_classes


def test_novel_task_names_use_only_novel_colour_words():
    names = TASKS["shapes_novel"]().class_names
    assert {n.split()[0] for n in names} == set(NOVEL_COLOUR_NAMES)


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        sandbox_stream("shapes_nope")
