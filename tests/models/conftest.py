from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope='module')
def _single_thread() -> Iterator[None]:
    # the models' tests use tiny tensors: one thread avoids OpenMP
    # oversubscription on a shared machine, and is faster at these sizes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
