"""What a run writes: results.json, the accuracy matrix as CSV and PNG, and TensorBoard events.

Matrices arrive as fractions in [0, 1] (NaN for rows not computed yet) and are written in percent.
``RunRecorder.write`` is called after every experience, so a run that stops early keeps its rows;
``finish`` draws the pictures when the run ends, however it ends.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from clprompt.records import metrics  # noqa: E402
from clprompt.records.markdown import markdown_table  # noqa: E402
from scenarios.atomic_write import write_json_atomic  # noqa: E402


def to_percent(matrix: np.ndarray) -> np.ndarray:
    return 100.0 * np.asarray(matrix, dtype=np.float64)


def completed_prefix(matrix: np.ndarray) -> np.ndarray:
    """The square top-left block of fully computed rows: R[:t, :t] for t finished experiences (a matrix over
    held-out test domains, not square: its first t rows)."""
    done = 0
    while done < len(matrix) and not np.isnan(matrix[done]).any():
        done += 1
    return matrix[:done, :done] if matrix.shape[0] == matrix.shape[1] else matrix[:done]


def matrix_markdown(matrix_percent: np.ndarray) -> str:
    """R as a markdown table: rows 'after experience i', columns 'task j', NaN as '-'."""
    header = ["after \\ task"] + [str(j + 1) for j in range(matrix_percent.shape[1])]
    rows = [[str(i + 1)] + ["-" if math.isnan(v) else f"{v:.2f}" for v in row] for i, row in enumerate(matrix_percent)]
    return markdown_table(header, rows)


def write_matrix_csv(path: Path, matrix_percent: np.ndarray, columns: Optional[list] = None) -> None:
    """Row i: after experience i + 1; columns task_1 .. task_T, or a domain stream's test domains by name
    (task_1_clean, ...)."""
    T = matrix_percent.shape[1]
    names = [f"task_{j + 1}" + (f"_{columns[j]}" if columns and len(columns) == T else "") for j in range(T)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["after_experience"] + names)
        for i, row in enumerate(matrix_percent):
            writer.writerow([i + 1] + ["" if math.isnan(v) else f"{v:.4f}" for v in row])


def _value_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 100.0
    low, high = float(np.floor(finite.min())), float(np.ceil(finite.max()))
    return (low - 1, high + 1) if low == high else (low, high)


def _ticks(n: int) -> list[int]:
    step = 1 if n <= 20 else 5 if n <= 60 else 10
    return [i for i in range(n) if i == 0 or (i + 1) % step == 0]


# The heatmap: each cell HEATMAP_CELL_INCHES wide up to 20 tasks (the square side grows with the task count
# between HEATMAP_MIN_SIDE and HEATMAP_MAX_SIDE), drawn at FIGURE_DPI in TensorBoard: >= 55 px per cell up to
# 20 tasks, the values in the cells at a font of about a third of the cell (four characters: 95.8, 100)
# so that they stay legible when TensorBoard's Images tab scales the picture down to its card.
HEATMAP_CELL_INCHES = 0.6
HEATMAP_MIN_SIDE, HEATMAP_MAX_SIDE = 4.0, 11.0
FIGURE_DPI = 100
CELL_VALUES_UP_TO = 20
CELL_FONT_FRACTION = 0.33


def cell_label(value: float) -> str:
    """A heatmap cell's text: one decimal, '100' for 100 (four characters at most)."""
    return "100" if value >= 99.95 else f"{value:.1f}"


def heatmap_side(T: int) -> float:
    """The heatmap's square side in inches for T tasks."""
    return min(HEATMAP_MAX_SIDE, max(HEATMAP_MIN_SIDE, HEATMAP_CELL_INCHES * T))


def matrix_figure(matrix_percent: np.ndarray, title: str = "accuracy (%)"):
    """A heatmap of R: the colour scale spans the matrix's own range; the diagonal (each task right after
    its training) is outlined and a line separates trained tasks (left) from those not trained yet
    (right); values are written in the cells up to 20 experiences.

    The axes are placed in inches (not by tight_layout), so a cell's size is known: the square side is
    ``heatmap_side(T)``, >= 0.55 in a cell up to 20 tasks (55 px at the figure's 100 dpi, which is what
    TensorBoard's ``add_figure`` renders at), the numbers' font scaled to the cell."""
    rows, T = matrix_percent.shape
    side = heatmap_side(T)
    left, right, bottom, top = 0.95, 1.25, 0.85, 0.6      # inches: y label, colour bar, x label, title
    width, height = left + side + right, bottom + side + top
    figure = plt.figure(figsize=(width, height), dpi=FIGURE_DPI)
    axes = figure.add_axes([left / width, bottom / height, side / width, side / height])
    colour_bar = figure.add_axes([(left + side + 0.2) / width, bottom / height, 0.25 / width, side / height])
    shown = np.ma.masked_invalid(matrix_percent)
    low, high = _value_range(matrix_percent)
    image = axes.imshow(shown, vmin=low, vmax=high, cmap="viridis", aspect="auto")
    if T <= CELL_VALUES_UP_TO:
        cell_points = side * 72 / max(rows, T)
        fontsize = min(16.0, max(6.0, CELL_FONT_FRACTION * cell_points))
        middle = (low + high) / 2
        for i in range(rows):
            for j in range(T):
                value = matrix_percent[i, j]
                if not math.isnan(value):
                    axes.text(j, i, cell_label(value), ha="center", va="center", fontsize=fontsize,
                              color="white" if value < middle else "black")
    held_out = rows != T   # columns are test domains never trained (CORe50): no diagonal, no staircase
    for i in range(0 if held_out else min(rows, T)):  # the diagonal: task i right after training it
        axes.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    xs, ys = [], []
    for i in range(0 if held_out else rows):  # staircase between trained (j <= i) and not yet trained (j > i) tasks
        xs += [i + 0.5, i + 0.5]
        ys += [i - 0.5, i + 0.5]
    if xs:
        axes.plot(xs, ys, color="white", linewidth=1.5, linestyle="--")
    axes.set_xticks(_ticks(T), [str(j + 1) for j in _ticks(T)], fontsize=10)
    axes.set_yticks(_ticks(rows), [str(i + 1) for i in _ticks(rows)], fontsize=10)
    axes.set_xlim(-0.5, T - 0.5)
    axes.set_ylim(rows - 0.5, -0.5)
    axes.set_xlabel("held-out test domain" if held_out else "evaluated task (right of the dashed line: not trained yet)",
                    fontsize=10)
    axes.set_ylabel("after training experience", fontsize=10)
    axes.set_title(title, fontsize=11)
    figure.colorbar(image, cax=colour_bar)
    return figure


def curves_figure(matrix_percent: np.ndarray, title: str = "accuracy of each task over experiences (%)"):
    """One line per task: its accuracy after each experience, solid from its own training on (the
    forgetting curve), dotted before (zero-shot transfer to a task not trained yet)."""
    rows, T = matrix_percent.shape
    figure, axes = plt.subplots(figsize=(min(14.0, max(6.0, 0.25 * rows + 5)), 4.5))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.95, max(T, 1)))
    steps = np.arange(1, rows + 1)
    for j in range(T):
        column = matrix_percent[:, j]
        trained = steps >= j + 1
        label = f"task {j + 1}" if T <= 12 else None
        axes.plot(steps[trained], column[trained], color=colours[j], marker="o" if rows <= 20 else None,
                  markersize=3, label=label)
        before = steps <= j + 1
        if before.sum() > 1:
            axes.plot(steps[before], column[before], color=colours[j], linestyle=":", linewidth=0.8)
    axes.set_xlabel("after training experience")
    axes.set_ylabel("accuracy (%)")
    axes.set_xticks([i + 1 for i in _ticks(rows)])
    axes.set_title(title, fontsize=10)
    if T <= 12:
        axes.legend(fontsize=7, ncol=2 if T > 6 else 1, loc="best")
    else:
        mappable = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(1, T))
        figure.colorbar(mappable, ax=axes, label="task")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def confusion_figure(confusion: np.ndarray, after: int, title: str = ""):
    """Task confusion after an experience: row = the test image's true task, column = the task of the
    predicted class, in percent of the row (recency bias: mass in the newest trained column)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    percent = np.divide(100 * confusion, totals, out=np.full_like(confusion, np.nan), where=totals > 0)
    T = len(confusion)
    size = min(16.0, max(4.0, 0.5 * T + 2.0))
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    image = axes.imshow(np.ma.masked_invalid(percent), vmin=0, vmax=100, cmap="magma")
    if T <= 20:
        for i in range(T):
            for j in range(T):
                if not math.isnan(percent[i, j]) and percent[i, j] >= 0.05:
                    axes.text(j, i, f"{percent[i, j]:.0f}", ha="center", va="center", fontsize=7,
                              color="white" if percent[i, j] < 50 else "black")
    axes.set_xticks(_ticks(T), [str(j + 1) for j in _ticks(T)])
    axes.set_yticks(_ticks(T), [str(i + 1) for i in _ticks(T)])
    axes.set_xlabel("task of the predicted class")
    axes.set_ylabel("true task of the test image")
    axes.set_title(f"{title}task confusion after experience {after} (% of each row)", fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return figure


def _finite_or_none(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else float(value)


# TensorBoard tags of tensorboard/ (step = experiences trained)
TASK_TAG = "accuracy/task_{}"                 # task j's accuracy after each experience
SEEN_MEAN_TAG = "accuracy/seen_tasks_mean"
ALL_MEAN_TAG = "accuracy/all_tasks_mean"
METRIC_TAG = "metrics/{}"                     # metrics.summarize's keys; a one-experience stream: accuracy
SINGLE_TASK_METRIC = "accuracy"


def is_single_task(matrix: np.ndarray) -> bool:
    """A one-experience stream (a 1 x 1 matrix): one accuracy, no forgetting, no transfer, no curves."""
    return tuple(np.shape(matrix)) == (1, 1)


def pooled_last(prefix: np.ndarray, test_sizes: Optional[list]) -> Optional[float]:
    """A domain stream's last row weighted by each test domain's image count: the accuracy over all test
    images pooled, as S-Prompts reports DomainNet and CORe50 (Last is the mean over the domains). None
    without the sizes or a completed row."""
    if not test_sizes or not len(prefix) or len(test_sizes) != prefix.shape[1]:
        return None
    weights = np.asarray(test_sizes, dtype=np.float64)
    return float((prefix[-1] * weights).sum() / weights.sum())


def run_metrics(matrix: np.ndarray) -> dict[str, float]:
    """The metrics a run reports (fractions) over its completed rows: ``metrics.summarize`` for a stream of
    several experiences; for a one-experience stream its ``accuracy`` and ``last`` (the same value, the
    key clprompt.report's tables read); empty while no row is complete."""
    prefix = completed_prefix(matrix)
    if not len(prefix):
        return {}
    if is_single_task(matrix):
        return {SINGLE_TASK_METRIC: float(prefix[0, 0]), "last": float(prefix[0, 0])}
    return metrics.summarize(prefix)


def custom_scalars_layout(single_task: bool = False) -> dict:
    """TensorBoard's Custom Scalars tab: every task's accuracy in one chart, the continual metrics on two
    charts (accuracies; forgetting and BWT on their own scale, near 0), the loss and its terms. Each chart
    lists regexes (Python ``re.match``) over the tags logged (``TASK_TAG``, ``METRIC_TAG``, training_log's
    tags in tensorboard/train); the tab plots every run whose tags match. A one-experience stream has one
    accuracy point: only the training charts."""
    from clprompt.records import training_log

    training = {
        "loss and its terms": ["Multiline", [training_log.LOSS_TAGS_REGEX]],
        "training accuracy (%)": ["Multiline", [re.escape(training_log.ACCURACY_TAG) + "$"]],
        "learning rate": ["Multiline", [re.escape(training_log.LR_TAG) + "$"]],
    }
    if single_task:
        return {"training (per epoch)": training}
    metric = METRIC_TAG.format
    return {
        "continual metrics (per experience)": {
            "Last, Avg, MTIL Avg, Transfer (%)": ["Multiline", [metric("(last|avg|mtil_avg|transfer)") + "$"]],
            "Forgetting, BWT (%)": ["Multiline", [metric("(forgetting|bwt)") + "$"]],
        },
        "accuracy per task (per experience)": {
            "every task's accuracy (%)": ["Multiline", [TASK_TAG.format(r"\d+") + "$"]],
            "seen tasks' and all tasks' mean (%)": ["Multiline", [re.escape(SEEN_MEAN_TAG) + "$",
                                                                  re.escape(ALL_MEAN_TAG) + "$"]],
        },
        "training (per epoch)": training,
    }


class SilentWriter:
    """A SummaryWriter that writes nothing (a torchrun process other than the main one)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class RunRecorder:
    """Writes a run's outputs into its directory, refreshed after every experience.

    enabled=False (the other processes of a torchrun run) computes the results and writes nothing.
    A one-experience stream (``is_single_task``) records its accuracy alone: ``metrics/accuracy``, no
    heatmap, curves or task confusion."""

    def __init__(self, run_dir: Path, header: dict, purge_step: Optional[int] = None,
                 training_purge_step: Optional[int] = None, enabled: bool = True):
        """purge_step / training_purge_step: hide the events an earlier, interrupted process logged at this
        step and later, in the per-experience curves / the per-epoch training curves (a resumed run logs
        them again). The Custom Scalars layout (``custom_scalars_layout``) is written here, at step 0, by
        every process that records, a resumed one too (in its own event file: the folder keeps a layout
        whatever the purge hides)."""
        self.run_dir = Path(run_dir)
        self.header, self.enabled = header, enabled
        self._confusion: list = []   # the task-confusion counts as last written, for the pictures
        if not enabled:
            self.tensorboard = self.training_curves = SilentWriter()
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tensorboard = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge_step)
        # per-epoch curves in a folder of their own: their steps are epochs, the others' experiences
        self.training_curves = SummaryWriter(log_dir=str(self.run_dir / "tensorboard" / "train"),
                                             purge_step=training_purge_step)
        stream = header.get("stream") or {}
        experiment = header.get("experiment") or {}
        self.tensorboard.add_custom_scalars(custom_scalars_layout(
            single_task=stream.get("n_experiences") == 1 or bool(experiment.get("base_to_new"))))
        self.tensorboard.flush()

    def log_row(self, matrix: np.ndarray, row: int) -> None:
        """TensorBoard scalars for the evaluation after experience ``row`` (0-based) at step row + 1."""
        step = row + 1
        percent = to_percent(matrix)
        if is_single_task(matrix):
            if not math.isnan(percent[row, 0]):
                self.tensorboard.add_scalar(METRIC_TAG.format(SINGLE_TASK_METRIC), percent[row, 0], step)
            self.tensorboard.flush()
            return
        for task, value in enumerate(percent[row]):
            self.tensorboard.add_scalar(TASK_TAG.format(task + 1), value, step)
        prefix = completed_prefix(matrix)
        if len(prefix) == step:
            seen = (metrics.incremental_accuracies(prefix)[-1] if prefix.shape[0] == prefix.shape[1]
                    else prefix[-1].mean())   # held-out test domains: all of them
            self.tensorboard.add_scalar(SEEN_MEAN_TAG, 100 * seen, step)
            self.tensorboard.add_scalar(ALL_MEAN_TAG, float(np.mean(percent[row])), step)
            for name, value in metrics.summarize(prefix).items():
                if not math.isnan(value):
                    self.tensorboard.add_scalar(METRIC_TAG.format(name), 100 * value, step)
        self.tensorboard.flush()

    def write(self, matrix: np.ndarray, status: str, wall_time_s: float, extra: Optional[dict] = None) -> dict:
        """results.json and accuracy_matrix.csv from the matrix as it stands."""
        percent = to_percent(matrix)
        prefix = completed_prefix(matrix)
        summary = {k: _finite_or_none(100 * v) for k, v in run_metrics(matrix).items()}
        pooled = pooled_last(prefix, ((self.header.get("stream") or {}).get("domain_sizes") or {}).get("test"))
        if pooled is not None:
            summary["last_pooled"] = _finite_or_none(100 * pooled)
        results = dict(self.header)
        results.update(
            status=status,
            completed_experiences=len(prefix),
            accuracy_matrix=[[_finite_or_none(v) for v in row] for row in percent],
            metrics=summary,
            wall_time_s=round(wall_time_s, 3),
            units="accuracy in percent; accuracy_matrix[i][j] = task j+1 after experience i+1",
        )
        if extra:
            extra = dict(extra)
            summary.update(extra.pop("metrics", {}))
            results.update(extra)
        self._confusion = results.get("task_confusion") or []
        if self.enabled:
            write_json_atomic(self.run_dir / "results.json", results)
            write_matrix_csv(self.run_dir / "accuracy_matrix.csv", percent,
                             (self.header.get("stream") or {}).get("test_domains"))
        return results

    def title(self) -> str:
        """'lamm on split_shapes_palette (miniclip): ' from the run's header."""
        parts = [self.header.get("method"), self.header.get("scenario")]
        model = ((self.header.get("config") or {}).get("model") or {}).get("arch")
        if not any(parts):
            return ""
        return f"{parts[0] or '?'} on {parts[1] or '?'}" + (f" ({model})" if model else "") + ": "

    def figures(self, percent: np.ndarray, confusion: list) -> dict:
        """The pictures of a stream of several experiences (none for one experience)."""
        if is_single_task(percent):
            return {}
        figures = {"accuracy_matrix": matrix_figure(percent, f"{self.title()}accuracy (%)"),
                   "accuracy_curves": curves_figure(percent, f"{self.title()}accuracy of each task (%)")}
        if confusion:
            figures["task_confusion"] = confusion_figure(np.array(confusion[-1]), len(confusion), self.title())
        return figures

    def log_confusion(self, confusion: np.ndarray, row: int) -> None:
        """The task-confusion picture after experience ``row`` (0-based) in TensorBoard (none for a
        one-experience stream: one task is never confused)."""
        if not self.enabled or len(confusion) <= 1:
            return
        figure = confusion_figure(confusion, row + 1, self.title())
        self.tensorboard.add_figure("task_confusion", figure, global_step=row + 1)
        plt.close(figure)

    def finish(self, matrix: np.ndarray, base_to_new: Optional[dict] = None, hparams: Optional[dict] = None) -> None:
        """When the run ends (complete, failed or interrupted): the pictures as PNG files and in
        TensorBoard with the markdown table (and base / new / hm scalars); the run's key settings in
        TensorBoard's HParams tab, against its final metrics. A one-experience stream: its accuracy in
        the text, no pictures."""
        if not self.enabled:
            return
        percent = to_percent(matrix)
        pictures = self.figures(percent, self._confusion)
        for name, figure in pictures.items():
            figure.savefig(self.run_dir / f"{name}.png", dpi=120)
            plt.close(figure)
        for name, value in (base_to_new or {}).items():
            if name in ("base", "new", "hm") and value is not None:
                self.tensorboard.add_scalar(f"base_to_new/{name}", value, 1)
        if pictures:
            for tag, figure in (("accuracy_matrix/heatmap", matrix_figure(percent, f"{self.title()}accuracy (%)")),
                                ("accuracy_matrix/curves",
                                 curves_figure(percent, f"{self.title()}accuracy of each task (%)"))):
                self.tensorboard.add_figure(tag, figure, global_step=len(percent))
                plt.close(figure)
        summary = run_metrics(matrix)
        if is_single_task(matrix):
            summary = {SINGLE_TASK_METRIC: summary[SINGLE_TASK_METRIC]} if summary else {}
            table = ""
        else:
            table = matrix_markdown(percent) + "\n\n"
        table += "\n".join(f"- **{k}**: {'n/a' if math.isnan(v) else f'{100 * v:.2f}'}" for k, v in summary.items())
        self.tensorboard.add_text("accuracy_matrix/table", table or "- **accuracy**: n/a", global_step=len(percent))
        if hparams:
            write_hparams(self.tensorboard, hparams, {METRIC_TAG.format(k): 100 * v for k, v in summary.items()
                                                      if not math.isnan(v)})
        self.tensorboard.close()
        self.training_curves.close()


def write_hparams(writer: SummaryWriter, settings: dict, final_metrics: dict) -> None:
    """The HParams plugin's records in the run's own event file (``add_hparams`` would make a new run
    folder): the settings, and the metric tags (already logged as scalars) they are compared on."""
    from torch.utils.tensorboard.summary import hparams

    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in settings.items()}
    for summary in hparams(clean, final_metrics):
        writer.file_writer.add_summary(summary)


def format_summary(matrix: np.ndarray) -> str:
    """The matrix and metrics as console text; a one-experience stream: ``accuracy: xx.xx`` alone."""
    percent = to_percent(matrix)
    if is_single_task(matrix):
        value = percent[0, 0] if len(percent) else math.nan
        return f"accuracy: {'n/a' if math.isnan(value) else f'{value:.2f}'}\n"
    out = io.StringIO()
    out.write("accuracy matrix (%), row i = after experience i, column j = task j\n")
    for i, row in enumerate(percent):
        out.write(f"  {i + 1:>3} " + " ".join("    -" if math.isnan(v) else f"{v:6.2f}" for v in row) + "\n")
    prefix = completed_prefix(matrix)
    if len(prefix):
        for name, value in metrics.summarize(prefix).items():
            out.write(f"{name:>10}: {'n/a' if math.isnan(value) else f'{100 * value:.2f}'}\n")
    return out.getvalue()
