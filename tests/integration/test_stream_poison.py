"""The poison corpus through a real broker: the worker stays up and every input gets one envelope.

The payloads (tests/poison_corpus.py: lone surrogates beside big integers, nesting orjson
cannot write, numbers past a double, 100k keys, odd ids and roles...) go in with
kafka-python, mixed with real rows, together with what only Kafka can carry: a tombstone
(value None), an empty value, keys that are not UTF-8, headers, and an accepted example
whose envelope alone is larger than kafka.max_output_bytes.
"""

from __future__ import annotations

import uuid

import orjson
import pytest
from kafka import KafkaProducer

from poison_corpus import poison_payloads
from stream_utils import RECV_TIMEOUT, Names, WorkerProcess, create_topics, read_outputs, slice_lines, wait_for_outputs

pytestmark = pytest.mark.integration

#: What one Kafka message may hold here (the broker's default max.message.bytes is 1,048,588).
KAFKA_MESSAGE_LIMIT = 1_000_000
MAX_OUTPUT_BYTES = 50_000


def inputs() -> list[dict]:
    """Produce-order inputs: ``value``, ``key``, ``headers`` and the expected (decision, reason) or None."""
    rows = slice_lines()
    out = [{"value": r, "key": None, "headers": None, "expected": None} for r in rows[:20]]
    for name, payload, expected in poison_payloads():
        if len(payload) <= KAFKA_MESSAGE_LIMIT:  # the 3 MB one cannot be produced at all
            out.append({"value": payload, "key": name.encode(), "headers": None, "expected": expected})
    long_answer = " ".join(f"w{i}" for i in range(9_000))  # accepted, and its envelope alone is ~60 kB
    out += [
        {"value": None, "key": b"tombstone-key", "headers": None, "expected": ("dead_letter", "invalid_json")},
        {"value": b"", "key": None, "headers": None, "expected": ("dead_letter", "invalid_json")},
        {"value": rows[20], "key": b"\xff\xfe\x00not utf-8", "headers": None, "expected": None},
        {"value": rows[21], "key": b"k", "headers": [("trace", b"\xff\x00"), ("h\u00e9", b"")], "expected": None},
        {"value": orjson.dumps({"id": "too-big-to-publish", "instruction": "Count.", "output": long_answer}),
         "key": None, "headers": None, "expected": ("dead_letter", "too_large")},
    ]
    return out + [{"value": r, "key": None, "headers": None, "expected": None} for r in rows[22:40]]


def test_poison_through_the_broker_leaves_the_worker_up_and_every_input_decided_once(kafka, tmp_path):
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    sent = inputs()
    create_topics(names, kafka.bootstrap)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", max_request_size=1_100_000, linger_ms=5)
    try:
        for item in sent:
            producer.send(f"{names.base}.raw", value=item["value"], key=item["key"], headers=item["headers"])
        producer.flush(timeout=RECV_TIMEOUT)
    finally:
        producer.close()
    env = {**names.env(kafka.bootstrap), "SIEVE_PIPELINE__MAX_MESSAGE_BYTES": str(2 * KAFKA_MESSAGE_LIMIT),
           "SIEVE_KAFKA__MAX_OUTPUT_BYTES": str(MAX_OUTPUT_BYTES)}
    worker = WorkerProcess(env, tmp_path / "worker.log", tmp_path)
    try:
        worker.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, len(sent), worker)
        assert worker.proc.poll() is None, worker.log()[-3000:]  # still up after the whole corpus
        assert worker.http("/healthz")[0] == 200
        rc = worker.terminate()
    finally:
        worker.kill()
    assert rc == 0, worker.log()[-3000:]
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    by_offset: dict[int, dict] = {}
    for o in outputs:
        env_ = o.envelope
        offset = env_["origin"]["offset"]
        assert offset not in by_offset, f"input {offset} decided twice"
        assert o.topic.endswith({"accepted": ".accepted", "rejected": ".rejected",
                                 "dead_letter": ".dead-letter"}[env_["decision"]])
        assert len(o.value) <= MAX_OUTPUT_BYTES
        by_offset[offset] = env_
    assert sorted(by_offset) == list(range(len(sent)))
    for offset, item in enumerate(sent):
        env_ = by_offset[offset]
        if env_["decision"] == "dead_letter":
            assert env_["reasons"] and env_["error"], env_
        if item["expected"] is not None:
            assert (env_["decision"], env_["reasons"][0]) == item["expected"], (item["key"], env_.get("error"))
    keyed = {by_offset[k]["origin"].get("key"): by_offset[k] for k in by_offset}
    assert "\\xff\\xfe\x00not utf-8" in keyed  # a key that is not UTF-8 is kept, its bad bytes escaped
    assert keyed["tombstone-key"]["error"].startswith("empty payload")
    assert sum(e["decision"] == "accepted" for e in by_offset.values()) >= 20  # the real rows still flow
