"""Shared test helpers: paths to the bundled test data, and the one cheap pipeline (no model stages)."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def mit_sample() -> Path:
    return DATA / "mit_sample.jsonl"


def _cheap_pipeline(**overrides):
    from quality.config import PipelineSettings, load
    from streams.assemble import build_pipeline

    settings = load(PipelineSettings, env={},
                    overrides={"scoring.enabled": False, "semantic_dedup.enabled": False, **overrides})
    return build_pipeline(settings)


@pytest.fixture
def cheap_pipeline():
    """Builds pipelines without the model stages (no encoder; scoring and semantic dedup off),
    for tests about everything else. Keyword arguments are dotted setting overrides:
    ``cheap_pipeline(**{"pii.policy": "reject"})``. Each call gives a fresh pipeline."""
    return _cheap_pipeline
