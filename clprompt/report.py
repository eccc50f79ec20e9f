"""``python -m clprompt.report <multirun dir>``: the runs of a sweep as paper-style tables.

Every ``results.json`` under the directory is one run. Runs are flattened to records (``run_record``),
grouped by (dataset, row, column) and summarised as mean, sample std, n and seeds (``aggregate``), then
written as markdown tables (stdout and ``report.md``) and a long CSV (``report.csv``). Rows are the
method labels; columns are the experiment setting that varies across the runs (shots, noise or protocol)
unless ``--columns`` names one. With more than one dataset an "average over datasets" block follows, as
in CoOp's 11-dataset tables. Values are in percent, as in results.json.

The core (``run_record`` to ``build_report``) is pure; ``find_runs``, ``collect_runs``/``load_runs``,
``write_report`` and ``main`` read and write files and stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from clprompt.config_check import NEUTRAL_KEYS, SEED_KEYS, flatten_config, under
from clprompt.records.markdown import markdown_table

METRICS = ("last", "avg", "mtil_avg", "forgetting", "bwt", "transfer", "base", "new", "hm")
BASE_TO_NEW_METRICS = ("base", "new", "hm")
PSEUDO_LABEL_ACCURACY = "pseudo_label_accuracy"  # percent, from experiment.pseudo_labels.accuracy
REALISED_NOISE_RATE = "realised_noise_rate"      # percent, from experiment.noise.realised_rate
COLUMN_AXES = ("shots", "noise", "protocol", "dataset", "metric")
# Settings that, when they differ between the runs of one cell, are added to the row label.
SETTINGS = ("shots", "noise", "protocol", "ensemble", "model", "eval", "train_classes")
# Runs share a cell only when every config value but the seed and neutral keys is equal
# (clprompt.config_check.SEED_KEYS, NEUTRAL_KEYS).
# The config keys each setting stands for (a setting already in the label or the columns names them).
SETTING_KEYS = {"shots": ("protocol.shots",), "noise": ("protocol.noise.",), "protocol": ("protocol.",),
                "ensemble": ("protocol.ensemble",), "model": ("model.",), "eval": ("eval.protocol",),
                "train_classes": ("train.classes",)}
# Named by the method label itself: the method (its _target_) and the loss (' + GCE').
LABELLED_KEYS = ("method._target_", "loss._target_")
# The continual-learning table (--columns metric): one column per metric, a run's value under METRIC_VALUE.
CONTINUAL_METRICS = ("last", "avg", "mtil_avg", "forgetting", "bwt", "transfer", "task_id")
# task_id: a task-choosing method's task (on a domain stream: domain) identification after the last
# experience, percent of the trained tasks' test images given their own task's prompts (mean over the tasks)
TASK_ID = "task_id"
METRIC = "metric"
METRIC_VALUE = "metric_value"
EVAL_LABELS = {"class_incremental": "class-IL", "task_incremental": "task-IL", "domain_incremental": "domain-IL"}
PROTOCOL_ORDER = ("standard", "few_shot", "noisy", "upl", "robust_upl", "base_to_new")
PSEUDO_LABEL_PROTOCOLS = {"upl": "UPL", "robust_upl": "Robust UPL"}
PROTOCOL_LOSS = {"robust_upl": "gce"}  # the loss a protocol implies (configs/protocol); others: ce
NOISE_KIND_ORDER = ("none", "symmetric", "confusing")
AVERAGE = "average"
# CoCoOp's base-to-new table: one table, the columns base, new and H, a run's value under BASE_TO_NEW.
BASE_TO_NEW = "base_to_new_accuracy"
CLASSES = "classes"
CLASS_LABELS = {"base": "base", "new": "new", "hm": "H"}
AXIS_NAMES = {"row": "method"}  # the row labels are method labels, maybe with a setting appended
TITLES = {
    "last": "last accuracy", "avg": "average incremental accuracy", "mtil_avg": "MTIL average (ZSCL's Avg.)",
    "forgetting": "forgetting", TASK_ID: "task (domain) identification",
    "bwt": "backward transfer", "transfer": "transfer", "base": "base", "new": "new",
    "hm": "harmonic mean (H)", PSEUDO_LABEL_ACCURACY: "pseudo-label accuracy",
    METRIC_VALUE: "continual-learning metrics",
    REALISED_NOISE_RATE: "realised noise rate", BASE_TO_NEW: "base-to-new accuracy",
}


# --- runs -> records ------------------------------------------------------------------------------

def noise_label(kind: str, rate: Optional[float]) -> str:
    """'none', or the kind and the rate in percent: 'symmetric 25%', 'confusing 12.5%'."""
    if kind == "none" or not rate:  # a 0% rate is no noise
        return "none"
    return f"{kind} {100 * rate:g}%"


def method_label(method: str, loss: Optional[str], protocol: str) -> str:
    """'coop', 'coop + GCE', 'coop (UPL)', 'coop + GCE (UPL)', 'coop (Robust UPL)'. The loss is named when
    it is not the protocol's own: Robust UPL trains with GCE by definition ('coop + CE (Robust UPL)')."""
    label = method
    loss = loss or "ce"
    if loss != PROTOCOL_LOSS.get(protocol, "ce"):
        label += f" + {loss.upper()}"
    if protocol in PSEUDO_LABEL_PROTOCOLS:
        label += f" ({PSEUDO_LABEL_PROTOCOLS[protocol]})"
    return label


def _percent(fraction: Optional[float]) -> Optional[float]:
    return None if fraction is None else 100 * fraction


def is_base_to_new(results: dict) -> bool:
    experiment = results.get("experiment") or {}
    return bool(experiment.get("base_to_new")) or experiment.get("name") == "base_to_new"


def run_record(results: dict) -> dict:
    """One run flattened to the fields the report groups and averages by.

    Older results.json without "experiment" count as the standard protocol (all images, no noise, one
    prompt), without "loss" as cross-entropy. ``seed`` is the K-shot draw's seed when shots are set
    (CoOp's seeds 1-3), else the training seed. Metric values are in percent, None where not computed.
    """
    experiment = results.get("experiment") or {}
    protocol = experiment.get("name") or "standard"
    shots = experiment.get("shots")
    noise = experiment.get("noise") or {}
    kind = noise.get("kind") or "none"
    rate = noise.get("rate") or 0.0
    noisy = kind != "none" and rate > 0
    pseudo = experiment.get("pseudo_labels") or {}
    config = results.get("config") or {}
    method = results.get("method") or (config.get("method") or {}).get("name") or "unknown"
    seed = experiment.get("shots_seed") if shots is not None else None
    metrics = results.get("metrics") or {}
    record = {
        "dataset": results.get("scenario") or (results.get("stream") or {}).get("name") or "unknown",
        "method": method_label(method, results.get("loss"), protocol),
        "method_name": method,
        "shots": shots,
        "noise": noise_label(kind, rate),
        "noise_kind": kind if noisy else "none",
        "noise_rate": rate if noisy else 0.0,
        "protocol": protocol,
        "ensemble": experiment.get("ensemble") or 1,
        "model": (config.get("model") or {}).get("arch") or (results.get("weights") or {}).get("arch"),
        "seed": seed if seed is not None else results.get("seed"),
        "training_seed": results.get("seed"),
        "base_to_new": is_base_to_new(results),
        "eval": EVAL_LABELS.get(results.get("protocol") or "class_incremental", results.get("protocol")),
        "train_classes": (config.get("train") or {}).get("classes") or "experience",
    }
    record["settings"] = result_settings(config)
    record["experiences"] = len(results.get("accuracy_matrix") or [])
    record.update({name: metrics.get(name) for name in METRICS})
    if record["mtil_avg"] is None and results.get("accuracy_matrix") and not is_base_to_new(results):
        record["mtil_avg"] = _mean_of_all(results["accuracy_matrix"])  # results.json from before mtil_avg
    identified = (results.get("task_identification") or {}).get("mean_over_trained") or []
    record[TASK_ID] = identified[-1] if identified else None
    record[PSEUDO_LABEL_ACCURACY] = pseudo.get("accuracy") if pseudo.get("selection", "none") != "none" else None
    record[REALISED_NOISE_RATE] = _percent(noise.get("realised_rate")) if noisy else None
    return record


def result_settings(config: dict) -> dict:
    """The config values that define what a run computed: every key but the seed and neutral keys."""
    return {key: value for key, value in flatten_config(config or {}).items()
            if not under(key, SEED_KEYS + NEUTRAL_KEYS)}


def differing_keys(group: list[dict]) -> list[str]:
    """The config keys whose values differ between the records of one cell (a key a run lacks differs)."""
    keys = sorted({key for record in group for key in record.get("settings", {})})
    missing = object()
    return [key for key in keys if len({repr(record.get("settings", {}).get(key, missing)) for record in group}) > 1]


def _mean_of_all(matrix) -> Optional[float]:
    """The mean of every entry of a complete square accuracy matrix (percent), else None."""
    rows = [[v for v in row] for row in matrix]
    if not rows or any(len(row) != len(rows) for row in rows) or any(v is None for row in rows for v in row):
        return None
    return statistics.fmean(v for row in rows for v in row)


def axis_label(axis: str, record: dict) -> str:
    """A record's value on an axis as the table shows it ('16', 'all', 'symmetric 25%', ...)."""
    value = record[axis]
    if axis == "shots":
        return "all" if value is None else str(value)
    return str(value)


def axis_sort_key(axis: str, record: dict) -> tuple:
    """Order of an axis' values: shots numerically ('all' last), noise by kind then rate, protocols in
    config order, rows with zero-shot first; ties (datasets, methods) keep the order of first appearance."""
    if axis == "shots":
        return (1, 0) if record["shots"] is None else (0, record["shots"])
    if axis == "noise":
        kind = record["noise_kind"]
        rank = NOISE_KIND_ORDER.index(kind) if kind in NOISE_KIND_ORDER else len(NOISE_KIND_ORDER)
        return (rank, kind, record["noise_rate"])
    if axis == "protocol":
        name = record["protocol"]
        return (PROTOCOL_ORDER.index(name), "") if name in PROTOCOL_ORDER else (len(PROTOCOL_ORDER), name)
    if axis in ("row", "method"):
        return (0 if record["method_name"] == "zeroshot" else 1,)
    if axis == CLASSES:
        return (list(CLASS_LABELS.values()).index(record[CLASSES]),)
    if axis == METRIC:
        return (CONTINUAL_METRICS.index(record[METRIC]),)
    if axis == "eval":
        return (list(EVAL_LABELS.values()).index(record["eval"]) if record["eval"] in EVAL_LABELS.values() else 9,)
    return ()


def ordered_labels(records: list[dict], axis: str) -> list[str]:
    """The distinct labels of an axis, sorted by ``axis_sort_key``, stable on first appearance."""
    first: dict[str, dict] = {}
    for record in records:
        first.setdefault(axis_label(axis, record), record)
    return sorted(first, key=lambda label: axis_sort_key(axis, first[label]))


def varies(records: list[dict], axis: str) -> bool:
    return len({axis_label(axis, record) for record in records}) > 1


def choose_columns(records: list[dict], requested: str = "auto") -> str:
    """``requested``, or for 'auto': the continual-learning metrics when every run has several
    experiences (and none is base-to-new); else the first of shots, noise, protocol that varies across
    the runs; 'dataset' when none does and there are several datasets, else 'protocol' (one column)."""
    if requested != "auto":
        return requested
    if records and all(record.get("experiences", 1) > 1 and not record["base_to_new"] for record in records):
        return METRIC  # continual runs: Last, Avg, Forgetting, Transfer ... side by side
    for axis in ("shots", "noise", "protocol"):
        if varies(records, axis):
            return axis
    return "dataset" if varies(records, "dataset") else "protocol"


def choose_metrics(records: list[dict], requested: str = "auto") -> list[str]:
    """``[requested]``, or for 'auto' base, new and hm when base-to-new runs are present, else last."""
    if requested != "auto":
        return [requested]
    if any(record["base_to_new"] or record["hm"] is not None for record in records):
        return list(BASE_TO_NEW_METRICS)
    return ["last"]


def base_to_new_records(records: list[dict]) -> list[dict]:
    """One copy per run and measure (base, new, H) with "classes" the measure and its value under
    BASE_TO_NEW, so that ``aggregate(..., columns=CLASSES, metric=BASE_TO_NEW)`` gives CoCoOp's layout."""
    return [dict(record, **{CLASSES: CLASS_LABELS[name], BASE_TO_NEW: record[name]})
            for record in records for name in BASE_TO_NEW_METRICS if record[name] is not None]


def metric_records(records: list[dict]) -> list[dict]:
    """Each record once per continual-learning metric it has, with "metric" and the value under
    METRIC_VALUE, so that ``aggregate(..., columns=METRIC, metric=METRIC_VALUE)`` gives the CL table."""
    return [dict(record, **{METRIC: name, METRIC_VALUE: record[name]})
            for record in records for name in CONTINUAL_METRICS if record.get(name) is not None]


def with_row_labels(records: list[dict], columns: str) -> list[dict]:
    """Copies of the records with "row": the method label, plus every setting and every config key that
    differs between the runs of one (dataset, method, column) cell, so that runs share a cell only when
    they differ in seeds alone (e.g. 'coop [shots 16]' when shots vary but the columns are noise;
    'coop [train.epochs=3, train.optimizer.lr=0.2]')."""
    cells = defaultdict(list)
    for record in records:
        cells[(record["dataset"], record["method"], axis_label(columns, record))].append(record)
    mixed = [axis for axis in SETTINGS if axis != columns
             and any(varies(group, axis) for group in cells.values())]
    covered = LABELLED_KEYS + tuple(key for axis in (*mixed, columns) for key in SETTING_KEYS.get(axis, ()))
    keys = sorted({key for group in cells.values() for key in differing_keys(group) if not under(key, covered)})
    labelled = []
    for record in records:
        parts = [f"{axis} {axis_label(axis, record)}" for axis in mixed]
        parts += [f"{key}={_config_value(record.get('settings', {}).get(key))}" for key in keys]
        suffix = ", ".join(parts)
        labelled.append(dict(record, row=record["method"] + (f" [{suffix}]" if suffix else "")))
    return labelled


def _config_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, tuple):
        return "[" + ",".join(_config_value(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- records -> tables ----------------------------------------------------------------------------

@dataclass
class Cell:
    """Mean, sample std (ddof=1; 0 for one run) and the seeds of the runs of one table cell.
    For the average over datasets: the mean of the datasets' means, std None, n = datasets."""
    mean: float
    std: Optional[float]
    n: int
    seeds: list = field(default_factory=list)
    repeated: int = 0  # runs with the same seed and training seed as another run of the cell


@dataclass
class Table:
    """One metric summarised per (dataset, row, column), with the average over datasets."""
    metric: str
    rows: str
    columns: str
    datasets: list[str]
    row_labels: list[str]
    column_labels: list[str]
    cells: dict          # (dataset, row, column) -> Cell
    average: dict        # (row, column) -> Cell; column is AVERAGE when the columns are datasets
    left_out: list       # (row, column, [datasets lacking it]) not averaged
    missing: int = 0     # runs without a value for the metric


def _seed_key(seed) -> tuple:
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def summarise(values: list[float], seeds: list, training_seeds: Optional[list] = None) -> Cell:
    """Mean, sample std and the sorted seeds of one cell's values; ``repeated`` counts the runs whose
    (seed, training seed) another run of the cell already has."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    pairs = list(zip(seeds, training_seeds or seeds))
    return Cell(mean=statistics.fmean(values), std=std, n=len(values), seeds=sorted(seeds, key=_seed_key),
                repeated=len(pairs) - len(set(pairs)))


def aggregate(records: list[dict], rows: str = "method", columns: str = "shots", metric: str = "last") -> Table:
    """Group the records by (dataset, row, column) and summarise ``metric`` in each cell.

    With more than one dataset, ``average`` holds the mean over datasets of the per-dataset means for
    every (row, column) present in every dataset; the others are listed in ``left_out``. When the
    columns are the datasets themselves, the average is one extra column per row.
    """
    valued = [record for record in records if record.get(metric) is not None]
    groups = defaultdict(lambda: ([], [], []))
    for record in valued:
        values, seeds, training_seeds = groups[(record["dataset"], axis_label(rows, record),
                                                axis_label(columns, record))]
        values.append(float(record[metric]))
        seeds.append(record["seed"])
        training_seeds.append(record.get("training_seed", record["seed"]))
    cells = {key: summarise(*lists) for key, lists in groups.items()}
    datasets = ordered_labels(valued, "dataset")
    average, left_out = average_over_datasets(cells, datasets, columns)
    return Table(metric=metric, rows=rows, columns=columns, datasets=datasets,
                 row_labels=ordered_labels(valued, rows), column_labels=ordered_labels(valued, columns),
                 cells=cells, average=average, left_out=left_out, missing=len(records) - len(valued))


def average_over_datasets(cells: dict, datasets: list[str], columns: str) -> tuple[dict, list]:
    """(row, column) -> Cell of the mean over datasets, for keys every dataset has; and the left-out keys
    with the datasets that lack them. Empty for one dataset."""
    if len(datasets) < 2:
        return {}, []
    by_key = defaultdict(dict)
    for (dataset, row, column), cell in cells.items():
        by_key[(row, AVERAGE if columns == "dataset" else column)][dataset] = cell.mean
    average, left_out = {}, []
    for key, means in by_key.items():
        lacking = [dataset for dataset in datasets if dataset not in means]
        if lacking:
            left_out.append((*key, lacking))
        else:
            average[key] = Cell(mean=statistics.fmean(means[d] for d in datasets), std=None, n=len(datasets))
    return average, left_out


# --- tables -> markdown and CSV -------------------------------------------------------------------

def format_cell(cell: Optional[Cell], usual_n: int) -> str:
    """'mean ± std', with ' (n=k)' when the cell's run count is not the table's usual one; an average
    over datasets is its mean alone; '-' for no run."""
    if cell is None:
        return "-"
    if cell.std is None:
        return f"{cell.mean:.2f}"
    text = f"{cell.mean:.2f}" if cell.n == 1 else f"{cell.mean:.2f} ± {cell.std:.2f}"  # one run: no spread
    return text if cell.n == usual_n else f"{text} (n={cell.n})"


def usual_n(table: Table) -> int:
    """The most common number of runs per cell (the larger on a tie)."""
    counts = Counter(cell.n for cell in table.cells.values())
    return max(counts, key=lambda n: (counts[n], n)) if counts else 0


def table_markdown(table: Table) -> str:
    """The table as markdown: a heading, the cells (per-dataset blocks, then the average) and footnotes."""
    if not table.cells:
        return f"### {TITLES.get(table.metric, table.metric)} (%)\n\nNo run has a {table.metric} value."
    n = usual_n(table)
    by_dataset = table.columns == "dataset"
    title = (f"### {TITLES.get(table.metric, table.metric)} (%): "
             f"{AXIS_NAMES.get(table.rows, table.rows)} × {table.columns}")
    if len(table.datasets) == 1 and not by_dataset:
        title += f" — {table.datasets[0]}"
    corner = f"{AXIS_NAMES.get(table.rows, table.rows)} \\ {table.columns}"
    if by_dataset:
        columns = table.column_labels + ([AVERAGE] if table.average else [])
        body = []
        for row in table.row_labels:
            cells = [format_cell(table.cells.get((column, row, column)), n) for column in table.column_labels]
            if table.average:
                cells.append(format_cell(table.average.get((row, AVERAGE)), n))
            body.append([row] + cells)
        markdown = markdown_table([corner] + columns, body)
    else:
        blocks = len(table.datasets) > 1
        body = []
        for dataset in table.datasets:
            present = [row for row in table.row_labels
                       if any((dataset, row, column) in table.cells for column in table.column_labels)]
            for i, row in enumerate(present):
                cells = [format_cell(table.cells.get((dataset, row, column)), n)
                         for column in table.column_labels]
                body.append(([dataset if i == 0 else ""] if blocks else []) + [row] + cells)
        averaged = [row for row in table.row_labels
                    if any((row, column) in table.average for column in table.column_labels)]
        for i, row in enumerate(averaged):
            cells = [format_cell(table.average.get((row, column)), n) for column in table.column_labels]
            body.append([f"**{AVERAGE}**" if i == 0 else "", row] + cells)
        markdown = markdown_table((["dataset"] if blocks else []) + [corner] + table.column_labels, body)
    return "\n".join([title, "", markdown, ""] + table_footnotes(table))


def table_footnotes(table: Table) -> list[str]:
    n = usual_n(table)
    note = f"mean ± sample std over n={n} run{'' if n == 1 else 's'} per cell"
    if len({cell.n for cell in table.cells.values()}) > 1:
        note += " (other counts marked in the cell)"
    seeds = {tuple(cell.seeds) for cell in table.cells.values()}
    if len(seeds) == 1:
        note += "; seeds " + ", ".join(str(seed) for seed in seeds.pop())
    notes = [f"- {note}; '-': no run."]
    if table.average:
        notes.append(f"- {AVERAGE}: mean over the {len(table.datasets)} datasets of their means.")
    for row, column, lacking in table.left_out:
        where = row if column == AVERAGE else f"{row} @ {column}"
        notes.append(f"- not averaged: {where} (no run on {', '.join(lacking)}).")
    seen = set()
    for (dataset, row, column), cell in table.cells.items():
        where = f"{dataset} / {row}" if table.columns == METRIC else f"{dataset} / {row} / {column}"
        seeds = ", ".join(str(seed) for seed in cell.seeds)
        if where in seen:  # the metrics of one run set: one note per row
            continue
        if cell.repeated:
            notes.append(f"- {where}: {cell.repeated} run(s) repeat another's seeds "
                         f"({seeds}); the std may understate the spread.")
            seen.add(where)
        elif len(set(cell.seeds)) < len(cell.seeds):
            notes.append(f"- {where}: the shots seed repeats ({seeds}); the runs differ in training seed.")
            seen.add(where)
    if table.metric in ("hm", BASE_TO_NEW):
        notes.append("- H: the mean of the runs' harmonic means of base and new (CoCoOp's tables take the "
                     "harmonic mean of the mean base and new; the two differ slightly).")
    if table.missing and table.metric in METRICS:
        notes.append(f"- {table.missing} run(s) without a {table.metric} value left out.")
    return notes


def csv_rows(table: Table) -> list[list]:
    """Long-format rows dataset,row,column,metric,mean,std,n,seeds; the averages with dataset 'average'."""
    rows = []
    for (dataset, row, column), cell in table.cells.items():
        rows.append([dataset, row, column, table.metric, round(cell.mean, 6), round(cell.std, 6), cell.n,
                     ";".join(str(seed) for seed in cell.seeds)])
    for (row, column), cell in table.average.items():
        rows.append([AVERAGE, row, column, table.metric, round(cell.mean, 6), "", cell.n, ""])
    return rows


@dataclass
class Report:
    """What ``main`` prints and writes: the markdown document and the CSV rows (without the header)."""
    markdown: str
    csv_rows: list


def build_report(records: list[dict], columns: str = "auto", metric: str = "auto",
                 title: str = "", skipped: tuple = ()) -> Report:
    """The shown tables as markdown; the CSV covers every metric that any run has, the pseudo-label
    accuracy and the realised noise rate."""
    axis = choose_columns(records, columns)
    if axis == METRIC:  # the continual-learning table: Last, Avg, Forgetting, BWT, Transfer as columns
        labelled = with_row_labels(metric_records(records), METRIC)
        table = aggregate(labelled, "row", METRIC, METRIC_VALUE)
        parts = [f"# {title or 'report'}", "", f"{len(records)} complete run(s); rows: method (with the "
                 "settings that differ), columns: the continual-learning metrics.", *skipped_lines(skipped),
                 "", table_markdown(table)]
        return Report(markdown="\n".join(parts).rstrip() + "\n", csv_rows=csv_rows(table))
    labelled = with_row_labels(records, axis)
    shown = choose_metrics(records, metric)
    # Base-to-new runs with no other setting varying: one table with base, new and H as its columns.
    combined = (metric == "auto" and columns == "auto" and shown == list(BASE_TO_NEW_METRICS)
                and not any(varies(records, setting) for setting in ("shots", "noise", "protocol")))
    tables = ([aggregate(base_to_new_records(labelled), "row", CLASSES, BASE_TO_NEW)] if combined
              else [aggregate(labelled, "row", axis, name) for name in shown])
    if any(record[PSEUDO_LABEL_ACCURACY] is not None for record in records):
        tables.append(aggregate(labelled, "row", axis, PSEUDO_LABEL_ACCURACY))
    parts = [f"# {title or 'report'}", "", f"{len(records)} complete run(s); rows: method, columns: "
             + (", ".join(CLASS_LABELS.values()) if combined else axis) + "."]
    parts += skipped_lines(skipped)
    parts.append("")
    for table in tables:
        parts += [table_markdown(table), ""]
    in_csv = [name for name in (*METRICS, PSEUDO_LABEL_ACCURACY, REALISED_NOISE_RATE)
              if any(record[name] is not None for record in records)]
    rows = [row for name in in_csv for row in csv_rows(aggregate(labelled, "row", axis, name))]
    return Report(markdown="\n".join(parts).rstrip() + "\n", csv_rows=rows)


def skipped_lines(skipped) -> list[str]:
    """The report's line on the runs left out: how many, which, and why."""
    if not skipped:
        return []
    return [f"{len(skipped)} run(s) skipped (not complete, or results.json unusable): "
            + "; ".join(f"{path} ({status})" for path, status in skipped) + "."]


# --- a results.json checked before it is read -----------------------------------------------------------

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matrix(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(row, list) and all(entry is None or _number(entry) for entry in row) for row in value)


# What each field ``run_record`` reads must hold (any may be null or absent): a check and its description.
TEXT = (lambda value: isinstance(value, str), "a text")
INTEGER = (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer")
NUMBER = (_number, "a finite number")
FLAG = (lambda value: isinstance(value, bool), "true or false")
RECORD = (lambda value: isinstance(value, dict), "an object")
NUMBERS = (lambda value: isinstance(value, list) and all(v is None or _number(v) for v in value),
           "a list of numbers (null where not computed)")
MATRIX = (_matrix, "a list of rows of numbers (null where not computed)")
RESULTS_FIELDS = {
    "status": TEXT, "scenario": TEXT, "method": TEXT, "loss": TEXT, "protocol": TEXT, "seed": INTEGER,
    "stream": RECORD, "stream.name": TEXT, "weights": RECORD, "weights.arch": TEXT,
    "config": RECORD, "config.model": RECORD, "config.model.arch": TEXT, "config.method": RECORD,
    "config.method.name": TEXT, "config.train": RECORD, "config.train.classes": TEXT,
    "experiment": RECORD, "experiment.name": TEXT, "experiment.shots": INTEGER, "experiment.shots_seed": INTEGER,
    "experiment.ensemble": INTEGER, "experiment.base_to_new": FLAG, "experiment.noise": RECORD,
    "experiment.noise.kind": TEXT, "experiment.noise.rate": NUMBER, "experiment.noise.realised_rate": NUMBER,
    "experiment.pseudo_labels": RECORD, "experiment.pseudo_labels.selection": TEXT,
    "experiment.pseudo_labels.accuracy": NUMBER,
    "metrics": RECORD, **{f"metrics.{name}": NUMBER for name in METRICS},
    "accuracy_matrix": MATRIX, "task_identification": RECORD, "task_identification.mean_over_trained": NUMBERS,
}


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def results_problem(results) -> Optional[str]:
    """Why a parsed results.json cannot be tabulated (the first field that is not what the report reads it
    as, e.g. "metrics.last is "abc", not a finite number"), or None. Fields are checked parents first, so a
    field under one that is not an object is not reached."""
    if not isinstance(results, dict):
        return f"it holds {_shown(results)}, not an object of a run's results"
    for key, (check, allowed) in RESULTS_FIELDS.items():
        parent, _, name = key.rpartition(".")
        node = results
        for part in parent.split(".") if parent else ():
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(name) if isinstance(node, dict) else None
        if value is not None and not check(value):
            return f"{key} is {_shown(value)}, not {allowed}"
    return None


def read_results(path: Path) -> dict:
    """A results.json parsed, or ``{"status": "unreadable: <why>"}`` when it is empty, cut short, not JSON,
    not UTF-8 text or cannot be read; ``{"status": "unusable: <why>"}`` when it is not an object or a complete
    run's field holds the wrong type (``results_problem``)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        return {"status": f"unreadable: not UTF-8 text ({error.reason} at byte {error.start})"}
    except OSError as error:
        return {"status": f"unreadable: {error.strerror or error}"}
    if not text.strip():
        return {"status": "unreadable: the file is empty"}
    try:
        results = json.loads(text)
    except ValueError as error:
        return {"status": f"unreadable: not valid JSON, cut short or edited ({error})"}
    if isinstance(results, dict) and results.get("status") != "complete":
        return results   # skipped for its status (running, failed, ...), which says more than a field would
    problem = results_problem(results)
    return {"status": f"unusable: {problem}"} if problem else results


# --- files ----------------------------------------------------------------------------------------

def _natural_key(path: Path) -> list:
    """'2_x' before '10_x' (Hydra's job numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_runs(directory) -> list[tuple[Path, dict]]:
    """(path relative to ``directory``, parsed results.json) for every results.json below it, in job
    order. SystemExit with a message when the directory is missing or holds none. A file that cannot be
    read, or holds a field of the wrong type, counts as a run with status 'unreadable: ...' or
    'unusable: ...' (``read_results``)."""
    root = Path(directory)
    try:
        is_folder = root.is_dir()
        paths = sorted(root.rglob("results.json"), key=lambda p: _natural_key(p.relative_to(root))) if is_folder else []
    except OSError as error:
        raise SystemExit(f"clprompt.report: {root} cannot be read ({error.strerror or error}): give a multirun "
                         "directory, e.g. multirun/2026-01-01_12-00-00")
    if not is_folder:
        raise SystemExit(f"clprompt.report: {root} is not a directory (give a multirun directory, "
                         "e.g. multirun/2026-01-01_12-00-00)")
    if not paths:
        raise SystemExit(f"clprompt.report: no results.json under {root}; is it a run or multirun directory?")
    return [(path.relative_to(root), read_results(path)) for path in paths]


def partition_runs(runs: list[tuple[Path, dict]]) -> tuple[list[dict], list[tuple[str, str]]]:
    """(complete results, [(path, status)] of the others: running, failed, unreadable, unusable)."""
    complete, skipped = [], []
    for path, results in runs:
        status = results.get("status", "no status")
        if status == "complete":
            complete.append(results)
        else:
            skipped.append((str(path.parent.as_posix()), str(status)))
    return complete, skipped


def warn_skipped(skipped: list[tuple[str, str]], stream=None) -> None:
    stream = stream or sys.stderr
    if skipped:
        print(f"clprompt.report: skipping {len(skipped)} run(s) that did not complete or whose results.json "
              "cannot be used:", file=stream)
        for path, status in skipped:
            print(f"  {path}: {status}", file=stream)


def collect_runs(directory) -> tuple[list[dict], list[tuple[str, str]]]:
    """(complete runs' results, [(path, status)] of the skipped ones) under ``directory``; the skipped
    are listed on stderr. SystemExit when there is no results.json, or no complete run."""
    complete, skipped = partition_runs(find_runs(directory))
    warn_skipped(skipped)
    if not complete:
        raise SystemExit(f"clprompt.report: none of the {len(skipped)} run(s) under {directory} is complete "
                         "and readable (listed above): nothing to tabulate")
    return complete, skipped


def load_runs(directory) -> list[dict]:
    """The complete runs' results under ``directory`` (see ``collect_runs``)."""
    return collect_runs(directory)[0]


def write_report(report: Report, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    markdown, table = out / "report.md", out / "report.csv"
    markdown.write_text(report.markdown, encoding="utf-8")
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "row", "column", "metric", "mean", "std", "n", "seeds"])
        writer.writerows(report.csv_rows)
    return markdown, table


def main(argv: Optional[list[str]] = None) -> Report:
    parser = argparse.ArgumentParser(
        prog="python -m clprompt.report",
        description="Tables (mean ± std over seeds) of the runs under a multirun directory; writes "
                    "report.md and report.csv there (or in --out).")
    parser.add_argument("directory", type=Path, help="a multirun (or run) directory holding results.json files")
    parser.add_argument("--columns", choices=("auto", *COLUMN_AXES), default="auto",
                        help="table columns; auto: the setting that varies (shots, then noise, then protocol); "
                             "metric: the continual-learning table (last, avg, forgetting, bwt, transfer)")
    parser.add_argument("--metric", choices=("auto", *METRICS), default="auto",
                        help="auto: base, new and hm for base-to-new runs, else last")
    parser.add_argument("--out", type=Path, default=None, help="where to write report.md and report.csv")
    args = parser.parse_args(argv)
    complete, skipped = collect_runs(args.directory)
    report = build_report([run_record(results) for results in complete], args.columns, args.metric,
                          title=f"report: {args.directory}", skipped=tuple(skipped))
    print(report.markdown, end="")
    out = args.out or args.directory
    try:
        paths = write_report(report, out)
    except OSError as error:   # the tables are on stdout already
        raise SystemExit(f"clprompt.report: report.md and report.csv cannot be written in {out} "
                         f"({error.strerror or error}): give --out <a writable folder>")
    print(f"clprompt.report: wrote {paths[0]} and {paths[1]}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
