"""The pictures a run writes, and the task-confusion matrices from the evaluation pass itself."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clprompt.records.outputs import confusion_figure, curves_figure, matrix_figure
from clprompt.run import run
from helpers import compose_config

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("protocol", ["class_incremental", "task_incremental"])
def test_task_confusion_counts_every_test_image_once_and_agrees_with_the_matrix(tmp_path, protocol):
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "method=coop", "train.epochs=2", "progress=false",
                          "cache.dir=null", f"eval.protocol={protocol}"])
    results = run(cfg, tmp_path)
    confusion = np.array(results["task_confusion"])           # [after experience, true task, predicted task]
    matrix = np.array(results["accuracy_matrix"], dtype=float)
    assert confusion.shape == (3, 3, 3)
    assert (confusion.sum(axis=2) == 8).all()                 # tiny_colors: 8 test images per task
    # a correct prediction lies in the true task: accuracy * n <= the diagonal
    assert (np.round(matrix / 100 * 8) <= np.diagonal(confusion, axis1=1, axis2=2)).all()
    for row in range(3):                                      # not-yet-trained tasks: scored over their own classes
        for task in range(row + 1, 3):
            assert confusion[row, task, task] == 8
    if protocol == "task_incremental":                        # each task over its own classes: all diagonal
        assert (confusion.sum(axis=(0, 1)) == np.diagonal(confusion, axis1=1, axis2=2).sum(axis=0)).all()
    for name in ("accuracy_matrix", "accuracy_curves", "task_confusion"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("task_confusion")] == [1, 2, 3]
    assert "accuracy_matrix/curves" in events.Tags()["images"]


@pytest.mark.parametrize("T", [20, 50])
def test_pictures_stay_readable_for_long_streams(T):
    matrix = np.tril(np.full((T, T), 80.0)) + np.triu(np.full((T, T), 30.0), 1)
    heatmap = matrix_figure(matrix, "a title")
    width, height = heatmap.get_size_inches()
    assert width <= 16 and height <= 16
    assert len(heatmap.axes[0].texts) == (T * T if T <= 20 else 0)     # values written up to 20 experiences
    assert len(heatmap.axes[0].get_xticks()) <= 20
    low, high = heatmap.axes[0].images[0].get_clim()
    assert (low, high) == (30.0, 80.0)                                   # the scale spans the matrix's range
    curves = curves_figure(matrix)
    assert curves.get_size_inches()[0] <= 14
    assert (curves.axes[0].get_legend() is None) == (T > 12)             # a colour bar instead of 50 legend rows
    confusion_figure(np.eye(T) * 10, T)
