"""Slow: on a shifted sandbox task at 16 shots, every trained method beats zero-shot with its defaults.

    python -m pytest -m slow tests/test_sandbox_methods.py -s

The mini-CLIP on `shapes_palette` (hues turned 30 degrees, 100 classes), 16 training images per class,
each method's own recipe from configs/method/ (MaPLe's depth is capped at the mini-CLIP's 3 text
blocks). Prints one line per method; the README's table comes from this run.
"""

import pytest

from clprompt.run import run
from helpers import compose_config

SCENARIO = ["scenario=shapes_palette", "scenario.train_per_class=16", "model=miniclip", "progress=false"]
METHODS = ["coop", "cocoop", "vpt_shallow", "vpt_deep", "maple", "lamm", "coop_lamm", "maple_lamm",
           "cls_tuning", "full_prompt_tuning", "linear_probe", "tenc_ft"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zeroshot_accuracy(tmp_path_factory):
    results = run(compose_config(["method=zeroshot", *SCENARIO]), tmp_path_factory.mktemp("zeroshot"))
    print(f"\nSANDBOX zeroshot {results['accuracy_matrix'][0][0]:.2f}")
    return results["accuracy_matrix"][0][0]


@pytest.mark.parametrize("method", METHODS)
def test_trained_method_beats_zeroshot_on_a_shifted_task(method, zeroshot_accuracy, tmp_path):
    depth = ["method.depth=3"] if method.startswith("maple") else []
    results = run(compose_config([f"method={method}", *SCENARIO, *depth]), tmp_path)
    accuracy = results["accuracy_matrix"][0][0]
    print(f"\nSANDBOX {method} {accuracy:.2f} (zero-shot {zeroshot_accuracy:.2f}, {results['wall_time_s']:.0f} s)")
    assert accuracy > zeroshot_accuracy
