"""Shared pytest setup for the ML tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    # The test machine has 2 cores shared with other work; one intra-op thread keeps runs stable and fair.
    torch.set_num_threads(1)
