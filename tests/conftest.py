"""Shared test configuration."""

import os

import matplotlib
import pytest
import torch


@pytest.fixture(autouse=True, scope='session')
def _matplotlib_agg() -> None:
    matplotlib.use('agg')


@pytest.fixture(autouse=True, scope='session')
def _share_the_cores() -> None:
    # under pytest-xdist (``make test``), each worker and the processes its
    # tests start take their share of the cores, so that OpenMP threads do not
    # oversubscribe them
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault('OMP_NUM_THREADS', str(threads))


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
