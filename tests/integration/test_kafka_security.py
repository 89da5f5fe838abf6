"""SASL/SSL settings reach every Kafka client of `sieve run`: a real SASL_SSL broker, end to end.

The broker (tests/integration/secure_broker.py) accepts clients only over TLS with a
self-signed certificate and SASL/PLAIN. The worker gets nothing but ``SIEVE_KAFKA__*``
variables, and must create its topics (kafka-python admin), run recovery (kafka-python
consumers), consume (faust/aiokafka) and publish (aiokafka producer) through it. A
control test shows the broker really refuses a wrong password, an untrusted
certificate and plaintext, so the end-to-end run cannot pass by accident.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import pytest
from secure_broker import SecureKafka
from stream_utils import Names, WorkerProcess, slice_lines

from streams.config import KafkaSettings
from streams.topics import client_kwargs

pytestmark = pytest.mark.integration

USERNAME = "sieve"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # distinctive, so the log can be searched for it
#: Seconds for every output to land on the output topics.
OUTPUT_TIMEOUT = 60.0
#: Milliseconds an aiokafka request may take in the control test.
CLIENT_TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory):
    broker = SecureKafka(tmp_path_factory.mktemp("secure-kafka"), USERNAME, PASSWORD)
    try:
        broker.start()
    except Exception as exc:  # a broker that cannot start must fail the tests, never skip them
        broker.stop()
        pytest.fail(f"could not start the SASL_SSL Kafka broker: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


def secure(broker: SecureKafka, names: Names | None = None) -> KafkaSettings:
    base = names.kafka(broker.bootstrap) if names else KafkaSettings(brokers=broker.bootstrap)
    return dataclasses.replace(base, security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username=USERNAME,
                               sasl_password=PASSWORD, ssl_cafile=str(broker.cafile))


async def producer_starts(kafka: KafkaSettings) -> str:
    """Start and stop an aiokafka producer; ``"ok"`` or the error's class name."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(request_timeout_ms=CLIENT_TIMEOUT_MS, **client_kwargs(kafka, aio=True))
    try:
        await producer.start()
    except Exception as exc:  # noqa: BLE001 - the class name is the answer
        return type(exc).__name__
    finally:
        await producer.stop()
    return "ok"


def test_the_broker_refuses_wrong_credentials_untrusted_certificates_and_plaintext(secure_kafka):
    good = secure(secure_kafka)
    results = {label: asyncio.run(producer_starts(k)) for label, k in [
        ("right", good),
        ("wrong password", dataclasses.replace(good, sasl_password="not-the-password")),
        ("system CA store", dataclasses.replace(good, ssl_cafile=None)),
        ("plaintext", dataclasses.replace(good, security_protocol="PLAINTEXT")),
    ]}
    assert results == {"right": "ok", "wrong password": "KafkaConnectionError",
                       "system CA store": "KafkaConnectionError", "plaintext": "KafkaConnectionError"}


def output_count(kafka: KafkaSettings) -> int:
    """Committed records on the output topics (read_committed: the worker writes in transactions,
    so end offsets would count commit markers too)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, isolation_level="read_committed", **client_kwargs(kafka))
    try:
        topics = [kafka.accepted_topic, kafka.rejected_topic, kafka.dead_letter_topic]
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return 0
        end = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        n, deadline = 0, time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                n += sum(1 for r in records if r.offset < end[tp])
        return n
    finally:
        consumer.close()


def test_worker_runs_end_to_end_over_sasl_ssl_from_settings_alone(secure_kafka, tmp_path):
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    kafka = secure(secure_kafka, names)
    payloads = slice_lines()[:20] + [b'{"id": "sec-bad", "instruction": "unterminated']
    env = {**names.env(secure_kafka.bootstrap), "SIEVE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
           "SIEVE_KAFKA__SASL_MECHANISM": "PLAIN", "SIEVE_KAFKA__SASL_USERNAME": USERNAME,
           "SIEVE_KAFKA__SASL_PASSWORD": PASSWORD, "SIEVE_KAFKA__SSL_CAFILE": str(secure_kafka.cafile)}
    worker = WorkerProcess(env, tmp_path / "worker.log", tmp_path)
    try:
        worker.wait_ready()  # topics created, recovery read and group joined over SASL_SSL
        from kafka import KafkaProducer

        producer = KafkaProducer(acks="all", **client_kwargs(kafka))
        try:
            for p in payloads:
                producer.send(kafka.raw_topic, value=p)
            producer.flush(timeout=OUTPUT_TIMEOUT)
        finally:
            producer.close()
        deadline = time.monotonic() + OUTPUT_TIMEOUT
        n = output_count(kafka)
        while n < len(payloads) and time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.log()[-3000:]
            time.sleep(0.2)
            n = output_count(kafka)
        assert n == len(payloads), f"{n} of {len(payloads)} outputs after {OUTPUT_TIMEOUT}s:\n{worker.log()[-3000:]}"
        rc = worker.terminate()
    finally:
        worker.kill()
    log = worker.log()
    assert rc == 0, log[-3000:]
    assert PASSWORD not in log
    assert "created" in log and names.base in log  # the worker made its topics through the secure listener
