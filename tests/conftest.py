"""Shared test configuration."""

import matplotlib
import pytest
import torch


@pytest.fixture(autouse=True, scope='session')
def _matplotlib_agg() -> None:
    matplotlib.use('agg')


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
