"""The faust app of the stream worker, built from one settings object.

Only the raw input topic is a faust topic: it is read as raw bytes (no
``faust.Record``: faust would ack and merely log a payload it cannot decode, and
such a payload must become a dead letter). Outputs go through the worker's own
idempotent (or transactional) producer (:mod:`streams.worker.publish`), because faust enables
idempotence only in its exactly-once mode.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from streams.config import KafkaSettings, Settings
from streams.topics import ssl_context


def broker_credentials(kafka: KafkaSettings) -> Any:
    """faust credentials for the configured security protocol, or None for PLAINTEXT."""
    import faust

    protocol = kafka.security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(kafka))
    if not kafka.sasl_mechanism:
        raise ValueError(f"kafka.sasl_mechanism is required with security_protocol={protocol}")
    return faust.SASLCredentials(username=kafka.sasl_username, password=kafka.sasl_password,
                                 mechanism=kafka.sasl_mechanism, ssl_context=ssl_context(kafka))


def build_app(settings: Settings, *, datadir: str | Path | None = None, kafka: KafkaSettings | None = None) -> Any:
    """A faust app whose consumer group is ``kafka.group_id``, and the raw topic.

    ``kafka`` replaces ``settings.kafka`` (a role's settings, with the role's group).

    Faust writes nothing the worker needs to keep (no tables), so its data
    directory is a temporary one unless ``datadir`` is given.

    Returns:
        ``(app, raw_topic)``.
    """
    import faust

    kafka = kafka or settings.kafka
    if kafka.batch_max < 1:
        raise ValueError(f"kafka.batch_max must be >= 1, got {kafka.batch_max}")
    if kafka.batch_within_s <= 0:
        raise ValueError(f"kafka.batch_within_s must be > 0, got {kafka.batch_within_s}")
    if kafka.session_timeout_s < 6:
        raise ValueError(f"kafka.session_timeout_s must be >= 6 (the broker's group.min.session.timeout.ms), "
                         f"got {kafka.session_timeout_s}")
    if kafka.commit_interval_s <= 0:
        raise ValueError(f"kafka.commit_interval_s must be > 0, got {kafka.commit_interval_s}")
    app = faust.App(
        kafka.group_id,  # faust's app id is the consumer group id
        broker=[f"kafka://{b.strip()}" for b in kafka.brokers.split(",") if b.strip()],
        broker_credentials=broker_credentials(kafka),
        value_serializer="raw",
        key_serializer="raw",
        # no tables, no leader election, no topic declaration: the worker creates its
        # topics itself (streams/topics.py) with the configured partitions
        topic_disable_leader=True,
        topic_allow_declare=False,
        # no tables, so no standbys: faust then assigns partitions with aiokafka's round robin.
        # faust's own assignor asserts on a topic that metadata shows with 0 partitions, which a
        # raw topic being recreated does for a moment (measured: the worker crashed)
        table_standby_replicas=0,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=kafka.commit_interval_s,
        # a restarted worker waits for its killed predecessor's membership to expire
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=min(3.0, kafka.session_timeout_s / 3),
        # fetch whole messages up to the broker's max (1 MiB by default) and then some,
        # so an oversized payload reaches the pipeline and becomes a too_large dead letter
        consumer_max_fetch_size=kafka.max_fetch_bytes,
        producer_acks=-1,
        producer_max_request_size=kafka.max_output_bytes,
        datadir=str(datadir or tempfile.mkdtemp(prefix="sieve-faust-")),
    )
    raw_topic = app.topic(kafka.raw_topic, value_serializer="raw", key_serializer="raw")
    return app, raw_topic
