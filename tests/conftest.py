"""Shared fixtures."""

import pytest
from hydra.utils import instantiate

from helpers import compose_config


@pytest.fixture(scope="session")
def tiny_backbone():
    """The tiny CLIP of configs/model/tiny.yaml, random weights."""
    return instantiate(compose_config(["model=tiny"]).model)
