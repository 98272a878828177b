"""Shared fixtures of the unit tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation (slow on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
