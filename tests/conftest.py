"""Shared fixtures: real MNIST (verified once per session) and a private MLflow store."""

import pytest

from mnist_exp.config import DatasetConfig
from mnist_exp.data import fetch_mnist


@pytest.fixture(scope="session")
def mnist_raw():
    """The four verified uint8 arrays from the default cache (fetched if missing)."""
    return fetch_mnist(DatasetConfig())


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
