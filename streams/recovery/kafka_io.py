"""What recovery reads from Kafka: committed offsets, end offsets, and output topics scanned to their end.

Plain kafka-python consumers without a group (manual assignment): nothing here commits.
They read ``read_committed``: end offsets are the last stable offsets, and records of
aborted transactions are never seen.
"""

from __future__ import annotations

import time
from typing import Iterator

from streams.config import KafkaSettings
from streams.exit_codes import KafkaUnreachable
from streams.topics import client_kwargs, output_topics

#: Milliseconds one poll of the output scan waits for records.
SCAN_POLL_MS = 500
#: Seconds the scan may go without progress before it gives up (broker down, ACLs...).
SCAN_STALL_S = 60.0


def committed_offsets(kafka: KafkaSettings, group_id: str | None = None) -> dict[int, int]:
    """Partition -> the offset the group will consume next from the raw topic.

    A partition without a committed offset starts at its earliest available offset
    (the worker's ``auto_offset_reset`` is ``earliest``), so that is what it gets here.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(group_id=group_id or kafka.group_id, enable_auto_commit=False,
                             client_id="sieve-recovery", **client_kwargs(kafka))
    try:
        parts = consumer.partitions_for_topic(kafka.raw_topic)
        if not parts:
            raise ValueError(f"kafka.raw_topic {kafka.raw_topic!r} does not exist on {kafka.brokers}; "
                             "create it (the worker does on start) or fix the name")
        tps = [TopicPartition(kafka.raw_topic, p) for p in sorted(parts)]
        earliest = consumer.beginning_offsets(tps)
        out = {}
        for tp in tps:
            offset = consumer.committed(tp)
            out[tp.partition] = earliest[tp] if offset is None else max(offset, earliest[tp])
        return out
    finally:
        consumer.close()


def topic_ids(kafka: KafkaSettings) -> dict[str, str | None]:
    """Topic -> Kafka id now, for the raw topic and the output topics (None: the broker gives
    none, Kafka before 2.8), in one request.

    Raises:
        ValueError: the raw topic does not exist (the worker creates it on start).
        KafkaUnreachable: the broker does not answer.
    """
    from streams.worker.topic_identity import TopicCheckFailed, describe_once

    topics = [kafka.raw_topic, *output_topics(kafka).values()]
    try:
        states = describe_once(kafka, topics)
    except TopicCheckFailed as exc:
        raise KafkaUnreachable(f"cannot read the metadata of {topics} from kafka.brokers={kafka.brokers!r} "
                               f"({exc}); check that the broker is up and reachable") from exc
    if not states[kafka.raw_topic].exists:
        raise ValueError(f"kafka.raw_topic {kafka.raw_topic!r} does not exist on {kafka.brokers}; "
                         "create it (the worker does on start) or fix the name")
    return {t: state.topic_id for t, state in states.items()}


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """Partition -> the offset the next record of ``topic`` will get."""
    return topics_end_offsets(kafka, [topic])[topic]


def topics_end_offsets(kafka: KafkaSettings, topics: list[str]) -> dict[str, dict[int, int]]:
    """Topic -> partition -> the offset its next record will get, asked over one connection."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, client_id="sieve-recovery-ends",
                             isolation_level="read_committed", **client_kwargs(kafka))
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        out: dict[str, dict[int, int]] = {t: {} for t in topics}
        for tp, off in (consumer.end_offsets(tps) if tps else {}).items():
            out[tp.topic][tp.partition] = off
        return out
    finally:
        consumer.close()


def scan_topic(kafka: KafkaSettings, topic: str, *, start: dict[int, int] | None = None,
               max_fetch_bytes: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """``(partition, offset, value)`` of every record of ``topic``, from ``start`` to its end as of the call.

    ``start`` maps partition to the first offset to read (default: the beginning; an
    offset the retention already deleted reads from the earliest record kept).

    Uses no consumer group (manual assignment), so it commits nothing.

    Raises:
        KafkaUnreachable: no progress for ``SCAN_STALL_S`` seconds (broker down, ACLs...).
    """
    from kafka import KafkaConsumer, TopicPartition

    # check_crcs=False: kafka-python checks CRC32C in pure Python (without the optional crc32c
    # extension), which was 56% of recovery time; the broker validated every batch on write
    # read_committed: outputs are written in transactions (--role all and decide); an aborted
    # one (a fenced owner's, a crash's) never counts as decided
    consumer = KafkaConsumer(enable_auto_commit=False, client_id="sieve-recovery-scan", check_crcs=False,
                             isolation_level="read_committed",
                             max_partition_fetch_bytes=max_fetch_bytes or kafka.max_fetch_bytes,
                             **client_kwargs(kafka))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return
        end = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        if start:
            earliest = consumer.beginning_offsets(tps)
            for tp in tps:
                if start.get(tp.partition, 0) > earliest[tp]:
                    consumer.seek(tp, min(start[tp.partition], end[tp]))
        todo = {tp for tp in tps if consumer.position(tp) < end[tp]}
        last_progress = time.monotonic()
        while todo:
            batch = consumer.poll(timeout_ms=SCAN_POLL_MS)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset < end[tp]:
                        yield rec.partition, rec.offset, rec.value
            for tp in list(todo):
                if consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > SCAN_STALL_S:
                raise KafkaUnreachable(f"recovery: reading {topic!r} made no progress for {SCAN_STALL_S:.0f}s "
                                       f"(partitions left: {sorted(tp.partition for tp in todo)}); check that "
                                       "the broker is up and that this client may read the output topics")
    finally:
        consumer.close()
