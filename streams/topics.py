"""Kafka topics of a Sieve deployment, and the client settings every Kafka client here shares.

The worker creates the topics it needs when they are missing (``ensure_topics``),
with the partition count and replication factor of :class:`streams.config.KafkaSettings`.
An existing topic is left as it is: changing partitions or replication is an
operator's decision, not a side effect of starting a worker.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from streams.config import KafkaSettings

log = logging.getLogger(__name__)

#: Milliseconds an admin request may take (topic creation waits for metadata too).
ADMIN_TIMEOUT_MS = 30_000


def quiet_client_logs() -> None:
    """Keep kafka-python's and aiokafka's connection chatter (INFO) out of the log; warnings stay."""
    level = max(logging.WARNING, logging.getLogger().level)
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(level)


def output_topics(kafka: KafkaSettings) -> dict[str, str]:
    """Decision -> topic name: where the worker writes each kind of envelope."""
    return {"accepted": kafka.accepted_topic, "rejected": kafka.rejected_topic,
            "dead_letter": kafka.dead_letter_topic}


def worker_topics(kafka: KafkaSettings, role: str = "all") -> list[str]:
    """Every topic a worker of ``role`` reads or writes: ``all`` the raw input and the three
    outputs, ``score`` the raw input and the scored topic, ``decide`` the scored topic, the
    outputs and the raw topic (whose id recovery confirms)."""
    if role == "score":
        return [kafka.raw_topic, kafka.scored_topic]
    if role == "decide":
        return [kafka.scored_topic, kafka.raw_topic, *output_topics(kafka).values()]
    return [kafka.raw_topic, *output_topics(kafka).values()]


def topic_spec(kafka: KafkaSettings, topic: str) -> dict[str, Any]:
    """How a missing topic is created: ``kafka.partitions`` partitions, except the scored
    topic (``kafka.scored_partitions``, and room for a scored record's features)."""
    spec: dict[str, Any] = {"num_partitions": kafka.partitions, "replication_factor": kafka.replication_factor}
    if topic == kafka.scored_topic:
        from streams.roles.scored import SCORED_EXTRA_BYTES

        spec["num_partitions"] = kafka.scored_partitions
        spec["configs"] = {"max.message.bytes": str(kafka.max_output_bytes + SCORED_EXTRA_BYTES + 1024)}
    return spec


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """An SSL context for SSL and SASL_SSL, from ``ssl_cafile``/``ssl_certfile``/``ssl_keyfile``."""
    if "SSL" not in kafka.security_protocol.upper():
        return None
    ctx = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.ssl_certfile:
        ctx.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    return ctx


def client_kwargs(kafka: KafkaSettings, *, aio: bool = False) -> dict[str, Any]:
    """Connection settings for kafka-python (``aio=False``) or aiokafka (``aio=True``) clients.

    Raises:
        ValueError: a SASL protocol without ``sasl_mechanism``, naming the setting.
    """
    protocol = kafka.security_protocol.upper()
    known = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
    if protocol not in known:
        raise ValueError(f"kafka.security_protocol must be one of {known}, got {kafka.security_protocol!r}")
    out: dict[str, Any] = {"bootstrap_servers": kafka.brokers.split(","), "security_protocol": protocol}
    if protocol.startswith("SASL"):
        if not kafka.sasl_mechanism:
            raise ValueError(f"kafka.sasl_mechanism is required with security_protocol={protocol} "
                             "(e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
        out.update(sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                   sasl_plain_password=kafka.sasl_password)
    if "SSL" in protocol:
        if aio:
            out["ssl_context"] = ssl_context(kafka)
        else:
            out.update(ssl_cafile=kafka.ssl_cafile, ssl_certfile=kafka.ssl_certfile, ssl_keyfile=kafka.ssl_keyfile)
    return out


def ensure_topics(kafka: KafkaSettings, topics: list[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the names that were created.

    Args:
        kafka: brokers, credentials, ``partitions`` and ``replication_factor``.
        topics: names to ensure (default: :func:`worker_topics`).

    Raises:
        ValueError: ``partitions`` or ``replication_factor`` below 1.
        KafkaUnreachable: no broker answered (the message says what to check).
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    if kafka.partitions < 1:
        raise ValueError(f"kafka.partitions must be >= 1, got {kafka.partitions}")
    if kafka.replication_factor < 1:
        raise ValueError(f"kafka.replication_factor must be >= 1, got {kafka.replication_factor}")
    if kafka.scored_partitions < 1:
        raise ValueError(f"kafka.scored_partitions must be >= 1, got {kafka.scored_partitions}")
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    from streams.exit_codes import KafkaUnreachable

    wanted = topics if topics is not None else worker_topics(kafka)
    try:
        admin = KafkaAdminClient(request_timeout_ms=ADMIN_TIMEOUT_MS, client_id="sieve-admin",
                                 **client_kwargs(kafka))
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        # kafka-python does not name authentication failures: say what to check
        raise KafkaUnreachable(
            f"cannot reach Kafka at kafka.brokers={kafka.brokers!r} with "
            f"kafka.security_protocol={kafka.security_protocol!r}"
            f"{f', kafka.sasl_mechanism={kafka.sasl_mechanism!r}' if kafka.sasl_mechanism else ''} "
            f"({type(exc).__name__}: {exc}). Check the address, that the broker is up, and the "
            "SASL/SSL settings (a wrong password or an untrusted certificate looks like this too)") from exc
    try:
        missing = [t for t in dict.fromkeys(wanted) if t not in set(admin.list_topics())]
        if missing:
            try:
                admin.create_topics({t: topic_spec(kafka, t) for t in missing}, timeout_ms=ADMIN_TIMEOUT_MS,
                                    wait_for_metadata=True)
            except TopicAlreadyExistsError:  # another worker created it between list and create
                pass
            log.info("created topics %s (%s partitions, replication %d)", missing,
                     ", ".join(str(topic_spec(kafka, t)["num_partitions"]) for t in missing), kafka.replication_factor)
        return missing
    finally:
        admin.close()
