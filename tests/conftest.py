"""Shared test helpers: paths to the bundled test data."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def mit_sample() -> Path:
    return DATA / "mit_sample.jsonl"
