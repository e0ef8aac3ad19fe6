"""Fixtures shared by the unit tests."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored afterwards: tiny models gain nothing from threads,
    and on shared cores a second thread makes each forward ~100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
