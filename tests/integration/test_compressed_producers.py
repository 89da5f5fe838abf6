"""Compressed producer batches (gzip, snappy, lz4, zstd) through a real broker.

The producer is the Apache Kafka Java client (`java_producer.py`), which batches and
compresses as production producers do. One `sieve run` worker consumes a raw topic with one
partition per codec (partition 0 uncompressed, as the control), fed one codec at a time, so
a codec that stops the worker names itself and the codecs before it are still checked. The
kafka-python consumer (recovery, the batcher, trainers) and both Python producers are checked
on every codec too.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.record import MemoryRecords

from java_producer import produce_java
from stream_utils import (RECV_TIMEOUT, Names, WorkerProcess, bad_payloads, create_topics, read_outputs,
                          slice_lines, wait_for_outputs)

pytestmark = pytest.mark.integration

#: Every codec Kafka defines; partition i of the raw topic carries CODECS[i]. "none" is the control.
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
COMPRESSED = CODECS[1:]
#: Kafka's record-batch attribute code of each codec (the low 3 bits of the batch attributes).
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def codec_inputs(codec: str) -> tuple[list[tuple[bytes, bytes]], dict[int, str]]:
    """(key, value) records: the real slice, then every poison payload; index -> expected dead-letter reason."""
    records = [(f"{codec}-{i}".encode(), p) for i, p in enumerate(slice_lines())]
    expected = {}
    for payload, reason in bad_payloads():
        expected[len(records)] = reason
        records.append((f"{codec}-{len(records)}".encode(), payload))
    return records, expected


def stored_batches(kafka, topic: str, partition: int) -> list[tuple[int, int]]:
    """(codec id, record count) of every batch the broker stored for the partition, read from its log segments."""
    out = []
    for segment in sorted((kafka.data_dir / "kraft" / f"{topic}-{partition}").glob("*.log")):
        records = MemoryRecords(segment.read_bytes())
        while (batch := records.next_batch()) is not None:
            out.append((batch.compression_type, batch.records_count))
    return out


@pytest.fixture(scope="module")
def codec_run(kafka, tmp_path_factory):
    """One worker; each codec's records produced by the Java client into its partition, one codec at a time."""
    tmp = tmp_path_factory.mktemp("codecs")
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    create_topics(names, kafka.bootstrap, partitions=len(CODECS))
    raw = f"{names.base}.raw"
    worker = WorkerProcess(names.env(kafka.bootstrap, partitions=len(CODECS)), tmp / "worker.log", tmp)
    runs, total, started = {}, 0, time.monotonic()
    try:
        worker.wait_ready()
        for partition, codec in enumerate(CODECS):
            records, expected = codec_inputs(codec)
            result = produce_java(kafka.bootstrap, raw, records, codec, partition=partition)
            total += len(records)
            run = runs[codec] = {"records": records, "expected": expected, "offsets": result.offsets,
                                 "metrics": result.metrics, "error": None}
            if worker.proc.poll() is not None:  # an earlier codec stopped it: still produce, for the consumer test
                run["error"] = f"the worker had already exited with {worker.proc.returncode}"
                continue
            try:
                wait_for_outputs(kafka.bootstrap, names.outputs, total, worker)
            except AssertionError as exc:
                run["error"] = str(exc)
        alive = worker.proc.poll() is None
        rc = worker.terminate()
    finally:
        worker.kill()
    return {"names": names, "raw": raw, "runs": runs, "alive": alive, "rc": rc, "log": worker.log(),
            "seconds": time.monotonic() - started, "outputs": read_outputs(kafka.bootstrap, names.outputs)}


def outputs_of(codec_run, codec: str) -> dict[int, object]:
    """The envelopes of one codec's partition, by input offset; fails on an input decided twice."""
    partition = CODECS.index(codec)
    out = {}
    for o in codec_run["outputs"]:
        origin = o.envelope["origin"]
        if origin["partition"] == partition:
            assert origin["offset"] not in out, f"{codec}: input offset {origin['offset']} decided twice"
            out[origin["offset"]] = o
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_java_producer_wrote_multi_record_batches_in_the_codec(kafka, codec_run, codec):
    batches = stored_batches(kafka, codec_run["raw"], CODECS.index(codec))
    assert {c for c, _ in batches} == {CODEC_IDS[codec]}, f"{codec}: stored batch codecs {batches}"
    assert max(n for _, n in batches) > 1, f"{codec}: no multi-record batch: {batches}"
    assert sum(n for _, n in batches) == len(codec_run["runs"][codec]["records"])


@pytest.mark.parametrize("codec", CODECS)
def test_worker_decides_every_record_of_the_codec_once(codec_run, codec):
    run = codec_run["runs"][codec]
    assert run["error"] is None, f"{codec}: {run['error']}\n{codec_run['log'][-3000:]}"
    decided = outputs_of(codec_run, codec)
    assert sorted(decided) == sorted(off for _, off in run["offsets"]), f"{codec}: not one envelope per input"
    control = outputs_of(codec_run, "none")
    control_offsets = [off for _, off in codec_run["runs"]["none"]["offsets"]]
    for i, ((key, value), (_, offset)) in enumerate(zip(run["records"], run["offsets"])):
        env = decided[offset].envelope
        assert env["origin"]["key"] == key.decode(), f"{codec}: key of record {i}"
        if i in run["expected"]:
            assert (env["decision"], env["reasons"]) == ("dead_letter", [run["expected"][i]]), (codec, i)
            # the payload arrived byte for byte: its sha256 (a dead letter drops bytes it cannot redact)
            assert env["raw_sha256"] == hashlib.sha256(value).hexdigest(), f"{codec}: raw bytes of record {i}"
            if env.get("raw") is not None and not env.get("raw_truncated"):
                assert env["raw"].encode() == value, f"{codec}: raw text of record {i}"
        else:  # a real row parses to the same example as its uncompressed copy
            assert env["decision"] in ("accepted", "rejected"), (codec, i, env.get("error"))
            assert env["example"] == control[control_offsets[i]].envelope["example"], f"{codec}: example {i}"


def test_worker_survives_every_codec_and_stops_cleanly(codec_run):
    assert codec_run["alive"], f"the worker died:\n{codec_run['log'][-4000:]}"
    assert codec_run["rc"] == 0, codec_run["log"][-3000:]
    assert "UnsupportedCodecError" not in codec_run["log"]
    for codec in CODECS:  # for the report, not a limit
        print(f"{codec}: compression rate {codec_run['runs'][codec]['metrics'].get('compression-rate-avg'):.3f}")
    print(f"whole run: {codec_run['seconds']:.1f}s")


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_consumer_reads_the_java_codec(kafka, codec_run, codec):
    run = codec_run["runs"][codec]
    tp = TopicPartition(codec_run["raw"], CODECS.index(codec))
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False,
                             max_partition_fetch_bytes=2 * 1024 * 1024)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        got, deadline = [], time.monotonic() + RECV_TIMEOUT
        while consumer.position(tp) < end and time.monotonic() < deadline:
            got += [(r.key, r.value) for r in consumer.poll(timeout_ms=500).get(tp, [])]
    finally:
        consumer.close()
    assert got == run["records"], f"{codec}: kafka-python read {len(got)} of {len(run['records'])} records"


def python_produced(kafka, topic: str, codec: str, records: list[tuple[bytes, bytes]]) -> None:
    """kafka-python into partition 0 and aiokafka into partition 1, both compressing with ``codec``."""
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", compression_type=codec, linger_ms=50)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value, partition=0)
        producer.flush(timeout=RECV_TIMEOUT)
    finally:
        producer.close()

    async def aio() -> None:
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", compression_type=codec, linger_ms=50)
        await p.start()
        try:
            futures = [await p.send(topic, key=key, value=value, partition=1) for key, value in records]
            await asyncio.gather(*futures)
        finally:
            await p.stop()

    asyncio.run(aio())


def aiokafka_read(kafka, topic: str, partitions: list[int], n: int) -> dict[int, list[tuple[bytes, bytes]]]:
    async def read() -> dict[int, list[tuple[bytes, bytes]]]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition as ATP

        c = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
        await c.start()
        try:
            c.assign([ATP(topic, p) for p in partitions])
            out = {p: [] for p in partitions}
            deadline = time.monotonic() + RECV_TIMEOUT
            while sum(map(len, out.values())) < n * len(partitions) and time.monotonic() < deadline:
                for tp, recs in (await c.getmany(timeout_ms=500)).items():
                    out[tp.partition] += [(r.key, r.value) for r in recs]
            return out
        finally:
            await c.stop()

    return asyncio.run(read())


@pytest.mark.parametrize("codec", COMPRESSED)
def test_python_producers_compress_and_both_consumers_decode(kafka, unique_topic, codec):
    """The Python clients we produce with (tests, the demo, the worker's output producer) compress each codec,
    and aiokafka (the worker) and kafka-python (recovery, the batcher) read what either wrote."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        admin.create_topics([NewTopic(unique_topic, 2, 1)])
    finally:
        admin.close()
    records = [(f"k{i}".encode(), p) for i, p in enumerate(slice_lines()[:100])]
    python_produced(kafka, unique_topic, codec, records)
    for partition in (0, 1):
        batches = stored_batches(kafka, unique_topic, partition)
        assert {c for c, _ in batches} == {CODEC_IDS[codec]} and max(n for _, n in batches) > 1, (codec, batches)
    assert aiokafka_read(kafka, unique_topic, [0, 1], len(records)) == {0: records, 1: records}
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(unique_topic, p) for p in (0, 1)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got, deadline = {0: [], 1: []}, time.monotonic() + RECV_TIMEOUT
        while sum(map(len, got.values())) < 2 * len(records) and time.monotonic() < deadline:
            for tp, recs in consumer.poll(timeout_ms=500).items():
                got[tp.partition] += [(r.key, r.value) for r in recs]
    finally:
        consumer.close()
    assert got == {0: records, 1: records}, codec
