"""TensorBoard as a user opens it: the Custom Scalars layout (every task's curve in one chart, the continual
metrics, the loss terms) read back from the event files, its regexes against the tags a run logged, the
layout again after a restart's purge, and a heatmap whose cells are large enough to read."""

import io
import re

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata

from clprompt.records.outputs import FIGURE_DPI, RunRecorder, custom_scalars_layout, matrix_figure
from clprompt.run import run
from helpers import compose_config

pytestmark = pytest.mark.filterwarnings("ignore")


def events_of(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    return events


def layout_of(folder) -> layout_pb2.Layout:
    """The Custom Scalars layout as TensorBoard's plugin reads it: the config tensor's first point."""
    points = events_of(folder).Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout()
    layout.ParseFromString(points[0].tensor_proto.string_val[0])
    return layout


def charts(layout: layout_pb2.Layout) -> dict[str, list[str]]:
    """chart title -> its tag regexes (every chart a Multiline chart)."""
    found = {}
    for category in layout.category:
        for chart in category.chart:
            assert chart.WhichOneof("content") == "multiline", chart.title
            found[chart.title] = list(chart.multiline.tag)
    return found


def layout_proto(layout: dict) -> layout_pb2.Layout:
    """A layout dict as the proto ``add_custom_scalars`` writes."""
    from torch.utils.tensorboard.summary import custom_scalars

    proto = layout_pb2.Layout()
    proto.ParseFromString(custom_scalars(layout).value[0].tensor.string_val[0])
    return proto


def matched(regexes: list[str], tags: set[str]) -> set[str]:
    """The tags a chart plots: those a regex matches as the plugin matches them (``re.match``)."""
    return {tag for tag in tags if any(re.match(regex, tag) for regex in regexes)}


@pytest.fixture(scope="module")
def lamm_run(tmp_path_factory):
    """Three tasks with LAMM: a loss of four terms (ce, lamm_wc, lamm_cos, lamm_kd)."""
    run_dir = tmp_path_factory.mktemp("layout")
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "method=lamm", "train.epochs=2", "train.batch_size=4",
                          "progress=false", "cache.dir=null"])
    run(cfg, run_dir)
    return run_dir


def test_the_layout_charts_every_task_the_metrics_and_the_loss_terms_from_the_logged_tags(lamm_run):
    layout = layout_of(lamm_run / "tensorboard")
    assert [c.title for c in layout.category] == ["continual metrics (per experience)",
                                                  "accuracy per task (per experience)", "training (per epoch)"]
    found = charts(layout)
    experience_tags = set(events_of(lamm_run / "tensorboard").Tags()["scalars"])
    epoch_tags = set(events_of(lamm_run / "tensorboard" / "train").Tags()["scalars"])
    logged = experience_tags | epoch_tags
    for title, regexes in found.items():     # every regex compiles and every chart plots something logged
        assert all(re.compile(regex) for regex in regexes)
        assert matched(regexes, logged), title
    assert matched(found["every task's accuracy (%)"], logged) == {f"accuracy/task_{j}" for j in (1, 2, 3)}
    assert matched(found["Last, Avg, MTIL Avg, Transfer (%)"], logged) == {
        "metrics/last", "metrics/avg", "metrics/mtil_avg", "metrics/transfer"}
    assert matched(found["Forgetting, BWT (%)"], logged) == {"metrics/forgetting", "metrics/bwt"}
    assert matched(found["seen tasks' and all tasks' mean (%)"], logged) == {
        "accuracy/seen_tasks_mean", "accuracy/all_tasks_mean"}
    assert matched(found["loss and its terms"], logged) == {
        "train/loss", "train/ce", "train/lamm_wc", "train/lamm_cos", "train/lamm_kd"}
    assert matched(found["training accuracy (%)"], logged) == {"train/accuracy"}
    assert matched(found["learning rate"], logged) == {"train/lr"}
    # the per-epoch charts plot the train run's tags only, the per-experience charts the main run's
    per_epoch = [r for title in ("loss and its terms", "training accuracy (%)", "learning rate") for r in found[title]]
    assert matched(per_epoch, logged) <= epoch_tags
    assert not matched(per_epoch, experience_tags)
    # the heatmap and the curves are there for a stream of several experiences
    assert {"accuracy_matrix/heatmap", "accuracy_matrix/curves"} <= set(events_of(lamm_run / "tensorboard").Tags()["images"])


def test_the_loss_chart_takes_other_losses_terms_and_leaves_the_other_curves_out():
    regexes = charts(layout_proto(custom_scalars_layout()))["loss and its terms"]
    assert matched(regexes, {"train/loss", "train/gce", "train/ce", "train/accuracy", "train/lr",
                             "train/epoch_seconds", "metrics/last"}) == {"train/loss", "train/gce", "train/ce"}


def test_a_resumed_or_restarted_run_writes_the_layout_in_its_own_event_file(tmp_path):
    header = {"stream": {"n_experiences": 3}}
    first = RunRecorder(tmp_path, header)
    first.log_row(np.array([[0.8, 0.5, 0.4], [np.nan] * 3, [np.nan] * 3]), 0)
    first.tensorboard.close()
    first.training_curves.close()
    before = set((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    RunRecorder(tmp_path, header, purge_step=0, training_purge_step=1).tensorboard.close()   # a restart
    (new_file,) = set((tmp_path / "tensorboard").glob("events.out.tfevents.*")) - before
    assert [c.title for c in layout_of(new_file).category][0] == "continual metrics (per experience)"
    assert layout_of(tmp_path / "tensorboard").category                    # the folder has its layout


def test_a_one_experience_stream_gets_the_training_charts_only(tmp_path):
    recorder = RunRecorder(tmp_path, {"stream": {"n_experiences": 1}})
    recorder.tensorboard.close()
    assert [c.title for c in layout_of(tmp_path / "tensorboard").category] == ["training (per epoch)"]


def test_the_heatmap_of_20_tasks_has_cells_of_at_least_40_pixels_with_their_values(tmp_path):
    T = 20
    matrix = np.tril(np.full((T, T), 0.8)) + np.triu(np.full((T, T), 0.3), 1)
    recorder = RunRecorder(tmp_path, {"stream": {"n_experiences": T}})
    recorder.finish(matrix)
    image = events_of(tmp_path / "tensorboard").Images("accuracy_matrix/heatmap")[-1]
    decoded = Image.open(io.BytesIO(image.encoded_image_string))
    assert decoded.size == (image.width, image.height)
    figure = matrix_figure(100 * matrix)                      # the figure finish drew, laid out in inches
    assert figure.dpi == FIGURE_DPI
    assert figure.get_size_inches() * FIGURE_DPI == pytest.approx([image.width, image.height], abs=1)
    box = figure.axes[0].get_position()                       # the matrix's axes, in fractions of the figure
    cell_width, cell_height = box.width * image.width / T, box.height * image.height / T
    assert cell_width >= 40 and cell_height >= 40, (cell_width, cell_height)
    texts = figure.axes[0].texts
    assert len(texts) == T * T and {t.get_text() for t in texts} == {"80.0", "30.0"}
    font_pixels = texts[0].get_fontsize() * FIGURE_DPI / 72
    assert font_pixels >= 12                                  # the values are written at a readable size
    rendered = max(t.get_window_extent(figure.canvas.get_renderer()).width for t in texts)
    assert rendered < cell_width                              # and fit in their cells
    # the pixels agree: the matrix's cells are the viridis colours of 80 and 30 where the layout says
    pixels = np.asarray(decoded.convert("RGB"), dtype=int)
    left, top = box.x0 * image.width, (1 - box.y1) * image.height
    inside = pixels[int(top + 0.2 * cell_height), int(left + 0.2 * cell_width)]     # cell (1, 1): 80, yellow
    above = pixels[int(top + 0.2 * cell_height), int(left + T * cell_width - 0.2 * cell_width)]   # (1, 20): 30
    assert inside[0] > 200 and inside[1] > 200 and above[2] > above[0]
