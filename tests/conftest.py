"""Fixtures for every test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every test starts from the same global generator state, whatever ran before it (peft's LoRA
    initialisation, dropout and sampling draw from it), so a test's outcome cannot depend on order or luck."""
    torch.manual_seed(0)
    yield
