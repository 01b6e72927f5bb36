"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def one_torch_thread():
    """One torch thread for in-process training of tiny models: fastest at these sizes, and steady when the two
    cores of the CI machine are shared. Modules opt in with `pytestmark = pytest.mark.usefixtures(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
