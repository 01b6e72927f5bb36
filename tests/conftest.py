"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for in-process training of tiny models: fastest at these sizes (two threads on a busy
    2-core box spin, measured up to 200x slower), and steady when the CI machine's cores are shared. Modules opt
    in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`; restored when the module ends."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
