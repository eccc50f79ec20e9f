"""bench/reference_speed.py without the reference checkouts: its --help, its clprompt command (which the CLI must
accept: checked with --cfg job), and the one-line refusal of a missing checkout."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "reference_speed.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reference_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_speed"] = module   # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def run(args, **kwargs):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60, **kwargs)


def test_help():
    done = run([sys.executable, str(SCRIPT), "--help"])
    assert done.returncode == 0, done.stderr
    for option in ("--coop", "--dassl", "--lamm", "--repeats", "--quick", "--only", "--clprompt-tree", "--json",
                   "--max-classes", "--memory-limit-gb"):
        assert option in done.stdout


@pytest.mark.parametrize("method", ["coop", "lamm"])
def test_clprompt_command_is_accepted(method, tmp_path):
    bench = load_script()
    command = bench.clprompt_command(method, bench.FULL, tmp_path / "data", tmp_path / "weights.pt", 2,
                                     tmp_path / "run", tmp_path / "cache")
    assert command[:3] == [sys.executable, "-m", "clprompt.run"]
    # the sweep's shots_seed follows the seed: the interpolation the study's multirun passes
    done = run([*command, "protocol.shots_seed=${seed}", "--cfg", "job", "--resolve"])
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    method_key = "length: 16" if method == "coop" else "LearnedLabels"
    for expected in (f"pretrained: {tmp_path / 'weights.pt'}", "quick_gelu: true", "name: few_shot", "shots: 16",
                     "shots_seed: 2", "epochs: 2", "batch_size: 32", "augmentation: coop", "precision: fp32",
                     "num_workers: 0", "lr: 0.002", "warmup_epochs: 1", "schedule: cosine", method_key):
        assert expected in out, expected
    assert "arch: ViT-B-32" in out


def test_sweep_command_differs_only_in_the_swept_keys(tmp_path):
    bench = load_script()
    single = bench.clprompt_command("coop", bench.FULL, tmp_path / "d", tmp_path / "w.pt", 1, tmp_path / "r",
                                    tmp_path / "c")
    sweep = bench.clprompt_sweep_command(["coop", "lamm"], bench.FULL, tmp_path / "d", tmp_path / "w.pt", (1, 2, 3),
                                         tmp_path / "s", tmp_path / "c")
    assert sweep[3] == "-m"
    swept = {"method=coop,lamm", "seed=1,2,3", "protocol.shots_seed=${seed}", f"hydra.sweep.dir={tmp_path / 's'}",
             "hydra.sweep.subdir=${hydra.job.num}"}
    assert set(sweep[4:]) - set(single[3:]) == swept
    assert set(single[3:]) - set(sweep[4:]) == {"method=coop", "seed=1", "protocol.shots_seed=1",
                                                f"hydra.run.dir={tmp_path / 'r'}"}


@pytest.mark.parametrize("coop", [None, "/nonexistent/CoOp"])
def test_missing_coop_is_one_line_naming_the_flag(coop, tmp_path):
    args = [sys.executable, str(SCRIPT), "--dassl", str(tmp_path), "--quick"]
    if coop:
        args += ["--coop", coop]
    done = run(args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --coop") and "github.com/KaiyangZhou/CoOp" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_the_study_sweeps_shot_counts_on_data_with_more_images_than_shots(tmp_path):
    """The study's sweep adds protocol.shots over its shot counts; its data holds more training images per class
    than the largest count, so that draws of different counts overlap only by chance, as on a real data set."""
    bench = load_script()
    sweep = bench.clprompt_sweep_command(["coop", "lamm"], bench.FULL, tmp_path / "d", tmp_path / "w.pt", (1, 2, 3),
                                         tmp_path / "s", tmp_path / "c", shots=(4, 16))
    assert "protocol.shots=4,16" in sweep and not any(o.startswith("protocol.shots=16") for o in sweep)
    for workload in (bench.FULL, bench.QUICK):
        assert workload.study_train_per_class > max(workload.study_shots)
    options = bench.reference_options("coop", bench.FULL, tmp_path, tmp_path / "d", tmp_path / "o", 1, shots=4)
    assert options["opts"][options["opts"].index("DATASET.NUM_SHOTS") + 1] == "4"
    split = bench.write_dataset(tmp_path / "data", bench.QUICK, bench.QUICK.study_train_per_class)
    train = json.loads(split.read_text())["train"]
    assert len(train) == bench.QUICK.classes * bench.QUICK.study_train_per_class


def test_study_shots_beyond_the_data_are_refused_in_one_line(tmp_path):
    done = run([sys.executable, str(SCRIPT), "--coop", str(tmp_path), "--dassl", str(tmp_path), "--study-shots",
                "4,64"])
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: --study-shots 4,64: each shot count must be 1 to 40 (the study's training images per "
                     "class)"], done.stderr
