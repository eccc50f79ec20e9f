"""A non-editable install runs from any folder: the configs and the mini-CLIP ship inside the package."""

import json
import os
import subprocess
import sys

from helpers import REPO


def test_a_non_editable_install_runs_from_another_folder(tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "clprompt" / "configs" / "config.yaml").is_file()
    assert (target / "clprompt" / "configs" / "method" / "lamm.yaml").is_file()
    # the readers' shipped class names and orders (ImageNet-R, TinyImageNet, ImageNet-100, CORe50, DomainNet)
    assert (target / "scenarios" / "class_names" / "imagenet_clip_names.tsv").is_file()
    assert len(list((target / "scenarios" / "class_names").glob("*.txt"))) >= 5
    # the installed copy, not the checkout: the test venv's other packages, this tree first on the path
    env = dict(os.environ, PYTHONPATH=str(target))
    where = subprocess.run([sys.executable, "-c", "import clprompt; print(clprompt.__file__, clprompt.config_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.split() == [str(target / "clprompt" / "__init__.py"), str(target / "clprompt" / "configs")]
    done = subprocess.run([sys.executable, "-m", "clprompt.run", "scenario=split_shapes", "method=zeroshot",
                           "scenario.n_experiences=2", "progress=false", "hydra.run.dir=run"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((elsewhere / "run" / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["weights"]["pretrained"] == str(target / "clprompt" / "pretrained" / "miniclip-v1.safetensors")
    assert results["versions"]["clprompt"] and results["versions"]["clprompt_commit"] is None   # not a checkout
    pretrain = subprocess.run([sys.executable, "-m", "clprompt.pretrain", "--cfg", "job"], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120)
    assert pretrain.returncode == 0 and "steps" in pretrain.stdout, pretrain.stderr[-2000:]
