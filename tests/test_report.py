"""``python -m clprompt.report``: tables of a sweep's results.json files, written by hand here."""

import csv
import json

import pytest

from clprompt import report
import warm_python
from helpers import REPO


def results(scenario="shapes_palette", method="coop", seed=1, last=60.0, *, loss="ce", status="complete",
            protocol="few_shot", shots=16, noise="none", rate=0.0, realised=None, pseudo_accuracy=None,
            base_new=None, experiment=True, **metrics):
    """A results.json dict with the fields the report reads; ``seed`` is the shots seed when shots are
    set. ``base_new=(base, new, hm)`` makes a base-to-new run."""
    values = {"last": last, "avg": last, "forgetting": 0.0, "bwt": 0.0, "transfer": None, **metrics}
    if base_new:
        values.update(zip(("base", "new", "hm"), base_new))
    out = {"scenario": scenario, "method": method, "loss": loss, "seed": 0 if shots else seed,
           "status": status, "metrics": values, "config": {"model": {"arch": "tiny"}},
           "accuracy_matrix": [[last]], "wall_time_s": 1.0}
    if experiment:
        out["experiment"] = {
            "name": "base_to_new" if base_new else protocol, "shots": shots, "shots_seed": seed if shots else None,
            "noise": {"kind": noise, "rate": rate, "realised_rate": realised if realised is not None else rate},
            "pseudo_labels": {"selection": "top_k" if pseudo_accuracy is not None else "none",
                              "per_class": 16, "accuracy": pseudo_accuracy},
            "base_to_new": bool(base_new), "ensemble": 1,
        }
    return out


def write_runs(directory, runs):
    """Each run in a Hydra-multirun-style job folder <num>_<scenario>_<method>/results.json."""
    for num, run in enumerate(runs):
        job = directory / f"{num}_{run['scenario']}_{run['method']}"
        job.mkdir(parents=True)
        (job / "results.json").write_text(json.dumps(run))
    return directory


def records(runs):
    return [report.run_record(run) for run in runs]


def table_lines(markdown, heading):
    """The markdown table lines below the heading line that contains ``heading``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("###") and heading in line)
    table = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def cells(line):
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_mean_and_sample_std_over_three_seeds():
    runs = records([results(seed=s, last=v) for s, v in [(1, 60.0), (2, 62.0), (3, 64.0)]])
    table = report.aggregate(runs, "method", "shots", "last")
    cell = table.cells[("shapes_palette", "coop", "16")]
    assert (cell.mean, cell.std, cell.n, cell.seeds) == (62.0, 2.0, 3, [1, 2, 3])
    markdown = report.table_markdown(table)
    assert "62.00 ± 2.00" in markdown and "n=3 runs per cell; seeds 1, 2, 3;" in markdown
    one = report.aggregate(runs[:1], "method", "shots", "last").cells[("shapes_palette", "coop", "16")]
    assert (one.mean, one.std, one.n) == (60.0, 0.0, 1)
    twice = report.aggregate(runs + runs[:1], "method", "shots", "last")
    assert "coop / 16: 1 run(s) repeat another's seeds (1, 1, 2, 3)" in report.table_markdown(twice)
    by_training_seed = [dict(run, training_seed=s) for run, s in zip(records([results(seed=1)] * 3), (0, 1, 2))]
    cell = report.aggregate(by_training_seed, "method", "shots", "last").cells[("shapes_palette", "coop", "16")]
    assert (cell.seeds, cell.repeated) == ([1, 1, 1], 0)


def test_methods_by_shots_sorted_numerically_zeroshot_first():
    runs = [results(method=m, shots=k, seed=s, last=10.0 * i + k)
            for i, m in enumerate(["coop", "cocoop", "zeroshot"]) for k in (16, 2, 8, 1, 4) for s in (1, 2)]
    built = report.build_report(records(runs))
    table = table_lines(built.markdown, "last accuracy")
    assert cells(table[0]) == ["method \\ shots", "1", "2", "4", "8", "16"]
    assert [cells(line)[0] for line in table[2:]] == ["zeroshot", "coop", "cocoop"]
    assert cells(table[3])[1:] == ["1.00 ± 0.00", "2.00 ± 0.00", "4.00 ± 0.00", "8.00 ± 0.00", "16.00 ± 0.00"]
    assert cells(table[2])[-1] == "36.00 ± 0.00"


def test_methods_by_noise_with_ce_and_gce_rows_and_realised_rate_in_csv():
    runs = []
    for loss, offset in (("ce", 0.0), ("gce", 5.0)):
        for kind, rate in (("confusing", 0.25), ("symmetric", 0.5), ("none", 0.0), ("symmetric", 0.25)):
            for seed in (1, 2, 3):
                runs.append(results(loss=loss, protocol="noisy", noise=kind, rate=rate, seed=seed,
                                    realised=rate - 0.01 * seed if rate else 0.0,
                                    last=70.0 - 40 * rate + offset + seed))
    built = report.build_report(records(runs))
    table = table_lines(built.markdown, "last accuracy")
    assert cells(table[0]) == ["method \\ noise", "none", "symmetric 25%", "symmetric 50%", "confusing 25%"]
    assert cells(table[2]) == ["coop", "72.00 ± 1.00", "62.00 ± 1.00", "52.00 ± 1.00", "62.00 ± 1.00"]
    assert cells(table[3])[0] == "coop + GCE" and cells(table[3])[1] == "77.00 ± 1.00"
    realised = {(row[1], row[2]): float(row[4]) for row in built.csv_rows if row[3] == "realised_noise_rate"}
    assert realised[("coop + GCE", "symmetric 25%")] == pytest.approx(23.0)
    assert ("coop", "none") not in realised


def test_average_over_datasets_leaves_out_cells_missing_somewhere():
    runs = [results(scenario="caltech", method="zeroshot", shots=k, last=60.0) for k in (1, 16)]
    runs += [results(scenario="caltech", method="coop", shots=k, seed=s, last=70.0 + k + s)
             for k in (1, 16) for s in (1, 2, 3)]
    runs += [results(scenario="pets", method="zeroshot", shots=k, last=80.0) for k in (1, 16)]
    runs += [results(scenario="pets", method="coop", shots=16, seed=s, last=90.0 + s) for s in (1, 2, 3)]
    table = report.aggregate(records(runs), "method", "shots", "last")
    assert table.datasets == ["caltech", "pets"]
    assert table.average[("zeroshot", "1")].mean == pytest.approx(70.0)
    assert table.average[("coop", "16")].mean == pytest.approx((88.0 + 92.0) / 2)
    assert ("coop", "1") not in table.average
    assert table.left_out == [("coop", "1", ["pets"])]
    markdown = report.table_markdown(table)
    lines = table_lines(markdown, "last accuracy")
    assert cells(lines[0]) == ["dataset", "method \\ shots", "1", "16"]
    assert cells(lines[2])[0] == "caltech" and cells(lines[4]) == ["pets", "zeroshot", "80.00", "80.00"]  # one run: no ±
    assert cells(lines[5]) == ["", "coop", "-", "92.00 ± 1.00 (n=3)"]
    assert cells(lines[6]) == ["**average**", "zeroshot", "70.00", "70.00"]
    assert cells(lines[7]) == ["", "coop", "-", "90.00"]
    assert "not averaged: coop @ 1 (no run on pets)" in markdown
    assert "n=1 run per cell (other counts marked in the cell)" in markdown


def test_base_to_new_shows_base_new_and_h_as_in_cocoop():
    runs = [results(scenario=d, method=m, shots=16, seed=s, base_new=(b + s, n + s, h + s))
            for d in ("caltech", "pets") for m, (b, n, h) in (("coop", (80, 60, 68)), ("cocoop", (78, 70, 74)))
            for s in (1, 2, 3)]
    assert report.choose_metrics(records(runs)) == ["base", "new", "hm"]
    built = report.build_report(records(runs))
    table = table_lines(built.markdown, "base-to-new accuracy")
    assert cells(table[0]) == ["dataset", "method \\ classes", "base", "new", "H"]
    assert cells(table[2]) == ["caltech", "coop", "82.00 ± 1.00", "62.00 ± 1.00", "70.00 ± 1.00"]
    assert cells(table[6]) == ["**average**", "coop", "82.00", "62.00", "70.00"]
    assert "last accuracy" not in built.markdown
    hm = {(row[0], row[1]): float(row[4]) for row in built.csv_rows if row[3] == "hm"}
    assert hm[("pets", "cocoop")] == pytest.approx(76.0) and hm[("average", "cocoop")] == pytest.approx(76.0)
    # Columns named: one table per measure.
    by_dataset = report.build_report(records(runs), columns="dataset")
    for heading in ("### base (%)", "### new (%)", "### harmonic mean (H) (%)"):
        assert heading in by_dataset.markdown
    hm_table = table_lines(by_dataset.markdown, "harmonic mean")
    assert cells(hm_table[0]) == ["method \\ dataset", "caltech", "pets", "average"]
    assert cells(hm_table[2]) == ["coop", "70.00 ± 1.00", "70.00 ± 1.00", "70.00"]
    only_last = report.build_report(records(runs), metric="last")
    assert "### last accuracy" in only_last.markdown and "### base" not in only_last.markdown
    no_hm = report.build_report(records([results()]), metric="hm")
    assert "No run has a hm value." in no_hm.markdown


def test_upl_runs_get_their_label_and_a_pseudo_label_accuracy_table():
    runs = [results(method="zeroshot", protocol="standard", shots=None, seed=0, last=50.0)]
    runs += [results(protocol=p, loss=loss, shots=None, seed=s, last=55.0 + s, pseudo_accuracy=acc + s)
             for p, loss, acc in (("upl", "ce", 60.0), ("robust_upl", "gce", 62.0)) for s in (1, 2)]
    runs += [results(protocol=p, loss=loss, shots=None, seed=1, last=58.0, pseudo_accuracy=63.0)
             for p, loss in (("upl", "gce"), ("robust_upl", "ce"))]
    built = report.build_report(records(runs), columns="dataset")
    result = table_lines(built.markdown, "last accuracy")
    labels = ["coop (UPL)", "coop (Robust UPL)", "coop + GCE (UPL)", "coop + CE (Robust UPL)"]
    assert [cells(line)[0] for line in result[2:]] == ["zeroshot"] + labels
    pseudo = table_lines(built.markdown, "pseudo-label accuracy")
    assert [cells(line)[0] for line in pseudo[2:]] == labels
    assert cells(pseudo[2])[1].startswith("61.50 ± 0.71")


def test_settings_mixed_in_a_cell_split_the_rows():
    runs = [results(noise=kind, rate=rate, protocol="noisy", shots=k, seed=1, last=50.0 + k)
            for k in (4, 16) for kind, rate in (("none", 0.0), ("symmetric", 0.5))]
    built = report.build_report(records(runs), columns="noise")
    rows = [cells(line)[0] for line in table_lines(built.markdown, "last accuracy")[2:]]
    assert rows == ["coop [shots 4]", "coop [shots 16]"]


def test_results_without_experiment_or_loss_count_as_standard():
    old = results(seed=3, experiment=False, shots=None)
    del old["loss"]
    record = report.run_record(old)
    assert (record["method"], record["protocol"], record["shots"], record["noise"], record["seed"]) == \
        ("coop", "standard", None, "none", 3)
    assert report.axis_label("shots", record) == "all"


def test_incomplete_runs_are_skipped_and_listed(tmp_path, capsys):
    write_runs(tmp_path, [results(seed=1), results(seed=2, status="failed: RuntimeError: CUDA out of memory"),
                          results(seed=3, status="running")])
    (tmp_path / "9_broken").mkdir()
    (tmp_path / "9_broken" / "results.json").write_text("{not json")
    runs = report.load_runs(tmp_path)
    assert [run["experiment"]["shots_seed"] for run in runs] == [1]
    err = capsys.readouterr().err
    assert "skipping 3 run(s)" in err and "1_shapes_palette_coop: failed: RuntimeError" in err
    assert "2_shapes_palette_coop: running" in err and "9_broken: unreadable" in err


def test_missing_empty_or_all_failed_directories_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="is not a directory"):
        report.main([str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="no results.json under"):
        report.main([str(tmp_path)])
    write_runs(tmp_path / "failed", [results(status="failed: ValueError: x")])
    with pytest.raises(SystemExit, match="none of the 1 run"):
        report.load_runs(tmp_path / "failed")


def test_main_prints_and_writes_report_md_and_csv(tmp_path, capsys):
    runs = [results(method=m, shots=k, seed=s, last=base + k / 4 + s)
            for m, base in (("zeroshot", 50.0), ("coop", 60.0)) for k in (1, 16) for s in (1, 2, 3)]
    runs.append(results(shots=4, seed=1, status="failed: KeyboardInterrupt: "))
    sweep = write_runs(tmp_path / "multirun" / "2026-01-01_00-00-00", runs)
    built = report.main([str(sweep), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert captured.out == built.markdown == (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| coop | 62.25 ± 1.00 | 66.00 ± 1.00 |" in captured.out
    assert "1 run(s) skipped" in captured.out and "skipping 1 run(s)" in captured.err
    with open(tmp_path / "out" / "report.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["dataset", "row", "column", "metric", "mean", "std", "n", "seeds"]
    last = {(r["row"], r["column"]): r for r in rows if r["metric"] == "last"}
    assert float(last[("coop", "16")]["mean"]) == pytest.approx(66.0)
    assert float(last[("coop", "16")]["std"]) == pytest.approx(1.0)
    assert (last[("coop", "1")]["n"], last[("coop", "1")]["seeds"]) == ("3", "1;2;3")
    assert {r["metric"] for r in rows} == {"last", "avg", "mtil_avg", "forgetting", "bwt"}
    assert not (sweep / "report.md").exists()


def test_cli_as_a_module(tmp_path):
    sweep = write_runs(tmp_path, [results(seed=s, last=v) for s, v in [(1, 60.0), (2, 62.0), (3, 64.0)]])
    done = warm_python.run(["-m", "clprompt.report", str(sweep), "--metric", "last"], cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| coop | 62.00 ± 2.00 |" in done.stdout
    assert (sweep / "report.md").exists() and (sweep / "report.csv").exists()
    bad = warm_python.run(["-m", "clprompt.report", str(tmp_path / "missing")], cwd=REPO, timeout=60)
    assert bad.returncode == 1 and "is not a directory" in bad.stderr


def continual_run(method, seed, eval_protocol, last, forgetting, transfer, scenario="split_shapes_palette"):
    run = results(scenario, method, seed, last, protocol="standard", shots=None, forgetting=forgetting,
                  bwt=-forgetting, transfer=transfer, avg=last + 5)
    run["protocol"] = eval_protocol
    return run


def test_continual_table_has_the_metrics_as_columns_and_one_row_per_eval_protocol():
    runs = [continual_run("coop", s, "class_incremental", 60 + s, 20.0, 40.0) for s in (0, 1, 2)]
    runs += [continual_run("coop", s, "task_incremental", 95.0, 1.0 + s, 40.0) for s in (0, 1, 2)]
    runs += [continual_run("lamm", s, "class_incremental", 45.0, 40.0, 41.0) for s in (0, 1, 2)]
    built = report.build_report(records(runs), columns="metric")
    lines = table_lines(built.markdown, "continual-learning metrics")
    assert cells(lines[0]) == ["method \\ metric", "last", "avg", "mtil_avg", "forgetting", "bwt", "transfer"]
    body = {cells(line)[0]: cells(line)[1:] for line in lines[2:]}
    # mtil_avg, absent from these results.json, is the mean of their 1x1 matrices [[last]]
    assert body["coop [eval class-IL]"] == ["61.00 ± 1.00", "66.00 ± 1.00", "61.00 ± 1.00", "20.00 ± 0.00",
                                           "-20.00 ± 0.00", "40.00 ± 0.00"]
    assert body["coop [eval task-IL]"][3] == "2.00 ± 1.00"
    assert body["lamm [eval class-IL]"][0] == "45.00 ± 0.00"
    assert any(row[2] == "forgetting" for row in built.csv_rows)


def configured_run(seed, epochs, lr, eval_protocol="class_incremental", last=50.0, method="coop"):
    """A 2-experience run with the config keys a real results.json records (seed keys, a cache folder)."""
    run = results("split_shapes_palette", method, seed, last, protocol="standard", shots=None)
    run["seed"] = seed
    run["protocol"] = eval_protocol
    run["accuracy_matrix"] = [[last, 10.0], [last, last]]
    run["metrics"]["transfer"] = 10.0
    run["config"] = {"seed": seed, "model": {"arch": "tiny"}, "cache": {"dir": f"/tmp/cache_{seed}"},
                     "eval": {"protocol": eval_protocol, "batch_size": 256},
                     "train": {"epochs": epochs, "augmentation_seed": seed, "optimizer": {"lr": lr, "momentum": 0.9}},
                     "scenario": {"n_experiences": 2, "class_order": [1, 0]}, "protocol": {"shots_seed": seed}}
    return run


def test_runs_differing_in_more_than_seeds_never_share_a_cell():
    # the case: epochs 1 and 3, lr 0.002 and 0.2 once averaged to one cell "20.83 ± 8.33"
    runs = [configured_run(seed, epochs, lr, last=10.0 * epochs + 100 * lr + seed)
            for epochs in (1, 3) for lr in (0.002, 0.2) for seed in (1, 2)]
    built = report.build_report(records(runs), columns="metric")
    body = {cells(line)[0]: cells(line)[1:] for line in table_lines(built.markdown, "continual-learning")[2:]}
    assert sorted(body) == ["coop [train.epochs=1, train.optimizer.lr=0.002]", "coop [train.epochs=1, train.optimizer.lr=0.2]",
                            "coop [train.epochs=3, train.optimizer.lr=0.002]", "coop [train.epochs=3, train.optimizer.lr=0.2]"]
    # seeds (seed, train.augmentation_seed, protocol.shots_seed) and the cache folder do not split cells
    assert body["coop [train.epochs=3, train.optimizer.lr=0.2]"][0] == "51.50 ± 0.71"
    assert "mean ± sample std over n=2 runs per cell; seeds 1, 2" in built.markdown


def test_eval_protocols_split_into_labelled_rows_and_a_single_run_has_no_spread():
    runs = [configured_run(seed, 2, 0.002, "class_incremental", 40.0 + seed) for seed in (1, 2, 3)]
    runs.append(configured_run(1, 2, 0.002, "task_incremental", 90.0))
    built = report.build_report(records(runs), columns="metric")
    body = {cells(line)[0]: cells(line)[1:] for line in table_lines(built.markdown, "continual-learning")[2:]}
    assert sorted(body) == ["coop [eval class-IL]", "coop [eval task-IL]"]   # not also 'eval.protocol=...'
    assert body["coop [eval class-IL]"][0] == "42.00 ± 1.00"
    assert body["coop [eval task-IL]"][0] == "90.00 (n=1)"


def test_continual_runs_get_the_metrics_table_by_default():
    runs = [configured_run(seed, 2, 0.002, last=40.0 + seed) for seed in (1, 2)]
    built = report.build_report(records(runs))
    header = cells(table_lines(built.markdown, "continual-learning")[0])
    assert header[:2] == ["method \\ metric", "last"] and "forgetting" in header and "transfer" in header
    single = [results(seed=s, last=60.0 + s) for s in (1, 2)]   # one-experience runs: the shots table
    assert "last accuracy" in report.build_report(records(single)).markdown
