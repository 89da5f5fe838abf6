"""Fixtures for integration tests that talk to a real, local Apache Kafka broker.

One broker (``streams.local_kafka.LocalKafka``) is started per test session on a
free loopback port with its own temporary data directory.  If it cannot start,
the tests depending on it FAIL with the reason; they are never skipped, so a
broken broker setup can not hide as a green run.
"""
from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from streams.local_kafka import LocalKafka

#: Seconds the session broker may take to come up (first start on a cold JVM).
BROKER_START_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    """A running single-node Kafka broker shared by the whole session; use ``kafka.bootstrap``."""
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
