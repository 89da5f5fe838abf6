"""Stream mode for the review: a bounded tail of the output topics, the batches topic and the
control topic; overrides published on the control topic, where ``sieve batcher`` honours them.

Each topic is read from ``max(start, end - bound)`` to the end offsets taken when the
read begins (``bound`` = ``max_records`` split evenly over the topic's partitions), with
``isolation_level="read_committed"``: a decider that writes its outputs in Kafka
transactions never shows the review an aborted envelope. The review reads with no
consumer group (``assign``), so it commits nothing and takes no partition from anyone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson

from quality.overrides import OVERRIDE_TYPE, parse_override

log = logging.getLogger(__name__)

#: Seconds the producer waits for the broker to acknowledge an override.
PUBLISH_TIMEOUT_S = 30.0
#: Seconds a tail read may take before it gives up on the rest of a topic.
READ_TIMEOUT_S = 60.0


def read_tail(consumer: Any, topic: str, limit: int, timeout_s: float = READ_TIMEOUT_S) -> tuple[list[Any], int]:
    """The last records of ``topic`` (at most ``limit`` over all partitions) and how many older ones were left out."""
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic)
    if not parts:
        return [], 0
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    per_partition = max(1, -(-limit // len(tps)))
    left_out = 0
    todo = {}
    for tp in tps:
        start = max(begin[tp], end[tp] - per_partition)
        left_out += start - begin[tp]
        if end[tp] > start:
            consumer.seek(tp, start)
            todo[tp] = end[tp]
        else:
            consumer.pause(tp)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while todo and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            for rec in records:
                if tp in todo and rec.offset < todo[tp]:
                    out.append(rec)
            if tp in todo and consumer.position(tp) >= todo[tp]:
                del todo[tp]
                consumer.pause(tp)
    if todo:
        log.warning("reading %s: gave up after %.0fs with %d partitions unfinished", topic, timeout_s, len(todo))
    return out, left_out


def _json(rec: Any) -> Any:
    try:
        return orjson.loads(rec.value) if rec.value is not None else None
    except orjson.JSONDecodeError:
        return None


class KafkaSource:
    """Reads the output topics for the review and publishes overrides on the control topic.

    Args:
        settings: the one settings object (``kafka.*`` topics and credentials).
        max_records: the most records read per topic (the newest).
        batches_dir: where batch directories are mounted here, when the manifests' own
            ``location.dir`` is not readable from this machine.
    """

    mode = "stream"

    def __init__(self, settings: Any, *, max_records: int = 20_000, batches_dir: Path | None = None) -> None:
        if max_records <= 0:
            raise ValueError(f"--max-records must be > 0, got {max_records}")
        self.settings, self.kafka, self.max_records, self.batches_dir = settings, settings.kafka, max_records, \
            batches_dir
        self._producer: Any = None

    def describe(self) -> str:
        return f"stream mode: {self.kafka.brokers} (the newest {self.max_records} records per topic)"

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer

        from streams.topics import client_kwargs

        return KafkaConsumer(group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                             client_id="sieve-review", max_partition_fetch_bytes=self.kafka.max_fetch_bytes,
                             **client_kwargs(self.kafka))

    def load(self) -> dict[str, Any]:
        k = self.kafka
        consumer = self._consumer()
        envelopes, truncated, manifests, overrides = [], {}, [], []
        try:
            for decision, topic in (("accepted", k.accepted_topic), ("rejected", k.rejected_topic),
                                    ("dead_letter", k.dead_letter_topic)):
                records, left_out = read_tail(consumer, topic, self.max_records)
                for rec in records:
                    env = _json(rec)
                    if isinstance(env, dict):
                        env.setdefault("decision", decision)
                        envelopes.append(env)
                if left_out:
                    truncated[decision] = left_out
            records, _ = read_tail(consumer, k.batches_topic, self.max_records)
            seen = {}
            for rec in records:  # at least once: the same batch may be announced twice
                m = _json(rec)
                if isinstance(m, dict) and "batch_id" in m:
                    seen[m["batch_id"]] = m
            manifests = sorted(seen.values(), key=lambda m: (m.get("seq", 0), m["batch_id"]))
            records, _ = read_tail(consumer, k.control_topic, self.max_records)
            for rec in records:
                msg = _json(rec)
                if isinstance(msg, dict) and msg.get("type") == OVERRIDE_TYPE:
                    overrides.append(msg)
        finally:
            consumer.close()
        return {"envelopes": envelopes, "truncated": truncated, "summary": None, "overrides": overrides,
                "batches": manifests}

    def version(self) -> None:
        return None  # the store reloads on its refresh interval

    def find_accepted(self, ex_id: str) -> dict[str, Any] | None:
        return None  # beyond the bound: not looked up record by record

    def write_override(self, record: dict[str, Any]) -> str:
        """Publishes the record on the control topic and waits for the acknowledgement; returns where it went."""
        parse_override(record)
        if self._producer is None:
            from kafka import KafkaProducer

            from streams.topics import client_kwargs, ensure_topics

            ensure_topics(self.kafka, [self.kafka.control_topic])
            self._producer = KafkaProducer(acks="all", client_id="sieve-review",
                                           max_request_size=self.kafka.max_output_bytes, **client_kwargs(self.kafka))
        md = self._producer.send(self.kafka.control_topic, key=record["id"].encode("utf-8", "surrogatepass"),
                                 value=orjson.dumps(record)).get(timeout=PUBLISH_TIMEOUT_S)
        return f"{self.kafka.control_topic} partition {md.partition} offset {md.offset}"

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
