"""Shared test helpers: paths to the bundled test data, the one cheap pipeline (no model stages),
and the session's real Kafka broker.

One broker (``streams.local_kafka.LocalKafka``) is started per test session, on first use, on
a free loopback port with its own temporary data directory; the integration tests
(tests/integration) and the image tests (tests/container, whose containers reach it on the
host network) share it. If it cannot start, the tests depending on it FAIL with the reason;
they are never skipped, so a broken broker setup can not hide as a green run.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:  # imported when a test asks for the broker, so unit tests do not load it
    from streams.local_kafka import LocalKafka

DATA = Path(__file__).parent / "data"
#: Seconds the session broker may take to come up (first start on a cold JVM).
BROKER_START_TIMEOUT = 120.0


@pytest.fixture
def mit_sample() -> Path:
    return DATA / "mit_sample.jsonl"


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    """A running single-node Kafka broker shared by the whole session; use ``kafka.bootstrap``."""
    from streams.local_kafka import LocalKafka

    broker = LocalKafka(num_partitions=1, start_timeout=BROKER_START_TIMEOUT)
    try:
        broker.start()
    except Exception as exc:  # a missing java/mvn or a broker crash must fail, not skip
        broker.stop()
        pytest.fail(f"Could not start the local Kafka broker: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique_topic() -> str:
    """A topic name no other test (or earlier run) uses: ``sieve-it-<hex>``."""
    return f"sieve-it-{uuid.uuid4().hex}"


@pytest.fixture
def unique_group() -> str:
    """A consumer group id no other test uses: ``sieve-it-group-<hex>``."""
    return f"sieve-it-group-{uuid.uuid4().hex}"


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
