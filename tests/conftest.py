"""Shared fixtures."""

import pytest
import torch
from hydra.utils import instantiate

from helpers import compose_config


@pytest.fixture(scope="session")
def tiny_backbone():
    """The tiny CLIP of configs/model/tiny.yaml, random weights drawn from seed 0.

    Seeded here (and the global generator left as it was) so its weights do not depend on which tests
    happened to run, and draw random numbers, before the first one that asks for it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return instantiate(compose_config(["model=tiny"]).model)


MAX_WORKERS = 4   # each worker holds torch, Avalanche and open_clip (about 1-2 GB): -n auto stops here


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the default, pyproject.toml): one worker per core, at most MAX_WORKERS."""
    import os

    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def pytest_configure(config):
    """Runs and subprocesses of the suite keep their image features in a folder of their own. Under
    pytest-xdist the cores are shared out: each worker (and the runs it starts) computes on its share, so
    that two workers on two cores do not each start two threads."""
    import os
    import tempfile

    if "CLPROMPT_CACHE" not in os.environ:
        config._clprompt_test_cache = tempfile.mkdtemp(prefix="clprompt-test-cache-")
        os.environ["CLPROMPT_CACHE"] = config._clprompt_test_cache
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_unconfigure(config):
    """The feature folder this process made for the suite goes with it (pytest-xdist's workers inherit the
    controller's, which removes it once they are done)."""
    import shutil

    folder = getattr(config, "_clprompt_test_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _shared_backbone_back_in_eval_mode(request):
    """A test that trains a method on the shared tiny backbone (``method.train()`` reaches its modules)
    leaves it in evaluation mode for the next test, as it was built."""
    yield
    if "tiny_backbone" in request.fixturenames:
        request.getfixturevalue("tiny_backbone").model.eval()
