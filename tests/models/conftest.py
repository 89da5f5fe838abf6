"""One real all-MiniLM-L6-v2 per test session, on CPU (the weights load in seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def encoder():
    from models.stage import shared_encoder

    return shared_encoder(None, "cpu", 256, 16, "auto")
