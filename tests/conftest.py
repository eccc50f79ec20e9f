"""Shared fixtures."""

import pytest
from hydra.utils import instantiate

from helpers import compose_config


@pytest.fixture(scope="session")
def tiny_backbone():
    """The tiny CLIP of configs/model/tiny.yaml, random weights."""
    return instantiate(compose_config(["model=tiny"]).model)


def pytest_configure(config):
    """Runs and subprocesses of the suite keep their image features in a folder of their own."""
    import os
    import tempfile

    os.environ.setdefault("CLPROMPT_CACHE", tempfile.mkdtemp(prefix="clprompt-test-cache-"))
