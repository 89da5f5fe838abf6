"""Round trips through a real local Kafka broker with kafka-python and aiokafka."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

pytestmark = pytest.mark.integration

#: Seconds to wait for the expected messages to arrive.
RECV_TIMEOUT = 20.0
#: Milliseconds the admin client waits for topic creation.
ADMIN_TIMEOUT_MS = 10_000
#: Seconds a CLI command may take (it starts a second broker).
CLI_TIMEOUT = 180.0

MESSAGES = [(f"key-{i}".encode(), json.dumps({"n": i, "text": f"héllo {i}"}).encode()) for i in range(5)]


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)
    try:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}},
                            timeout_ms=ADMIN_TIMEOUT_MS, wait_for_metadata=True)
        assert name in admin.list_topics()
    finally:
        admin.close()


def consume_kafka_python(bootstrap: str, topic: str, group: str, count: int) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    got, deadline = [], time.monotonic() + RECV_TIMEOUT
    try:
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
        consumer.commit()
    finally:
        consumer.close()
    return got


def test_broker_answers_metadata(kafka):
    assert kafka.bootstrap == f"127.0.0.1:{kafka.port}"
    assert kafka.pid and kafka.data_dir.is_dir()
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [(1, "127.0.0.1", kafka.port)]


def test_kafka_python_round_trip(kafka, unique_topic, unique_group):
    create_topic(kafka.bootstrap, unique_topic)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    try:
        for key, value in MESSAGES:
            producer.send(unique_topic, key=key, value=value, headers=[("src", b"kafka-python")])
        producer.flush(timeout=RECV_TIMEOUT)
    finally:
        producer.close()
    got = consume_kafka_python(kafka.bootstrap, unique_topic, unique_group, len(MESSAGES))
    assert [(r.key, r.value) for r in got] == MESSAGES
    assert all(r.headers == [("src", b"kafka-python")] for r in got)
    assert [r.offset for r in got] == list(range(len(MESSAGES)))


def test_aiokafka_round_trip_and_interop(kafka, unique_topic, unique_group):
    create_topic(kafka.bootstrap, unique_topic, partitions=1)

    async def produce_and_consume() -> list:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in MESSAGES:
                await producer.send_and_wait(unique_topic, value=value, key=key)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(unique_topic, bootstrap_servers=kafka.bootstrap, group_id=unique_group,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        got = []
        try:
            async with asyncio.timeout(RECV_TIMEOUT):
                while len(got) < len(MESSAGES):
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        got.extend(records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(produce_and_consume())
    assert [(r.key, r.value) for r in got] == MESSAGES
    # What aiokafka wrote, kafka-python reads back identically (fresh group, from the start).
    again = consume_kafka_python(kafka.bootstrap, unique_topic, unique_group + "-kp", len(MESSAGES))
    assert [(r.key, r.value) for r in again] == MESSAGES


def test_topics_are_not_auto_created(kafka, unique_topic):
    # The consumer's metadata request asks the broker to auto-create; the broker must refuse.
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, allow_auto_create_topics=True)
    try:
        assert not consumer.partitions_for_topic(unique_topic)
    finally:
        consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)
    try:
        assert unique_topic not in admin.list_topics()
    finally:
        admin.close()


def test_cli_detach_status_stop():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    cli = [sys.executable, "-m", "streams.local_kafka"]
    name = ["--name", f"sieve-it-{uuid.uuid4().hex}"]

    def run(*args):
        return subprocess.run(cli + list(args) + name, env=env, capture_output=True, text=True,
                              timeout=CLI_TIMEOUT)

    started = run("start", "--detach")
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    try:
        status = run("status")
        assert status.returncode == 0, status.stdout + status.stderr
        state = json.loads(status.stdout)
        assert state["bootstrap"] == bootstrap and state["answering"] is True
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not os.path.exists(state["data_dir"])
    assert run("status").returncode == 1
