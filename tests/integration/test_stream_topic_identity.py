"""The raw topic deleted and created again: under a running worker, and while it is down.

A recreated topic starts its offsets at 0 again, so ``(topic, partition, offset)`` no
longer names one input. Each new incarnation here gets inputs at offsets the old one
already had decided (fewer and more of them than before, same and other partition
counts); every one of them must get exactly one envelope, naming its topic id.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import orjson
import pytest

from stream_utils import (Names, WorkerProcess, create_topics, produce, read_outputs, slice_lines,
                          wait_for_outputs)

pytestmark = pytest.mark.integration

#: Seconds a worker may take to notice a recreated raw topic and decide its inputs.
SWITCH_TIMEOUT = 90.0
#: Seconds the broker may take to finish deleting a topic before it can be created again.
DELETE_TIMEOUT = 30.0


def topic_id(bootstrap: str, topic: str) -> str | None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (state,) = admin.describe_topics([topic])
        return str(state["topic_id"]) if state.get("topic_id") else None
    finally:
        admin.close()


def recreate(bootstrap: str, topic: str, partitions: int) -> str:
    """Delete ``topic`` and create it again with ``partitions``; return the new topic id."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
        deadline = time.monotonic() + DELETE_TIMEOUT
        while True:
            try:
                admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}},
                                    wait_for_metadata=True)
                break
            except TopicAlreadyExistsError:  # the deletion is still under way
                assert time.monotonic() < deadline, f"{topic} was not deleted within {DELETE_TIMEOUT}s"
                time.sleep(0.2)
    finally:
        admin.close()
    return topic_id(bootstrap, topic)


def payloads(tag: str, n: int, start: int = 0) -> list[bytes]:
    """``n`` real rows under ids ``<tag>-<i>`` (their content repeats across tags: duplicates are
    decisions too, the test counts envelopes per id)."""
    rows = [orjson.loads(line) for line in slice_lines()]
    return [orjson.dumps({**rows[(start + i) % len(rows)], "id": f"{tag}-{i}"}) for i in range(n)]


def produce_spread(bootstrap: str, topic: str, items: list[bytes], partitions: int) -> None:
    for p in range(partitions):
        produce(bootstrap, topic, items[p::partitions], partition=p)


def check_once_each(outputs, tag: str, n: int, expected_id: str) -> None:
    mine = [o for o in outputs if o.envelope["id"].startswith(f"{tag}-")]
    ids = Counter(o.envelope["id"] for o in mine)
    assert sorted(ids) == sorted(f"{tag}-{i}" for i in range(n)), f"{tag}: {n - len(ids)} inputs without an envelope"
    assert set(ids.values()) == {1}, f"{tag}: inputs with two envelopes: {[i for i, c in ids.items() if c > 1]}"
    assert {o.envelope["origin"].get("topic_id") for o in mine} == {expected_id}


def test_raw_topic_recreated_under_a_running_worker_every_new_input_decided_once(kafka, unique_topic,
                                                                                 unique_group, tmp_path):
    """One worker lives through four incarnations of its raw topic: fewer inputs than the
    old one had, then more, then more partitions, then fewer partitions. It stays up and
    ready, and decides every input of every incarnation exactly once."""
    names = Names(unique_topic, unique_group)
    raw = f"{names.base}.raw"
    create_topics(names, kafka.bootstrap)
    env = {**names.env(kafka.bootstrap), "SIEVE_KAFKA__TOPIC_CHECK_INTERVAL_S": "1"}
    worker = WorkerProcess(env, tmp_path / "worker.log", tmp_path)
    rounds = [("r0", 30, 1), ("r1", 12, 1), ("r2", 45, 1), ("r3", 36, 3), ("r4", 10, 1)]
    total = 0
    ids = {}
    try:
        worker.wait_ready()
        for k, (tag, n, partitions) in enumerate(rounds):
            ids[tag] = topic_id(kafka.bootstrap, raw) if k == 0 else recreate(kafka.bootstrap, raw, partitions)
            produce_spread(kafka.bootstrap, raw, payloads(tag, n, start=7 * k), partitions)
            total += n
            wait_for_outputs(kafka.bootstrap, names.outputs, total, worker, timeout=SWITCH_TIMEOUT)
        assert len(set(ids.values())) == len(rounds)
        worker.wait_ready()  # ready again on the last incarnation
        time.sleep(2)  # nothing more may come: a late duplicate would show in the counts below
        outputs = read_outputs(kafka.bootstrap, names.outputs)
        metrics = worker.http("/metrics")[1]
        assert worker.terminate() == 0
    finally:
        worker.kill()
    assert len(outputs) == total, f"{len(outputs)} envelopes for {total} inputs"
    for tag, n, _partitions in rounds:
        check_once_each(outputs, tag, n, ids[tag])
    assert worker.log().count("was deleted and created again") == len(rounds) - 1, worker.log()[-4000:]
    assert re.search(r"^sieve_raw_topic_switches_total 4\.0$", metrics, re.M), metrics


def test_raw_topic_recreated_while_the_worker_is_down_with_more_inputs_than_before(kafka, unique_topic,
                                                                                    unique_group, tmp_path):
    """The worker decided 20 inputs and left a snapshot; the raw topic is recreated with 35
    (past every old offset, so the old end-offset check cannot see it). The restart reads the
    new topic from its beginning and decides all 35 once; the snapshot's frontier of the old
    topic is not applied to the new one."""
    names = Names(unique_topic, unique_group)
    raw = f"{names.base}.raw"
    create_topics(names, kafka.bootstrap)
    env = {**names.env(kafka.bootstrap), "SIEVE_STATE_DIR": str(tmp_path / "state")}
    old_id = topic_id(kafka.bootstrap, raw)
    produce(kafka.bootstrap, raw, payloads("old", 20))
    first = WorkerProcess(env, tmp_path / "worker1.log", tmp_path)
    try:
        first.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, 20, first)
        assert first.terminate() == 0  # drains, commits, snapshots
    finally:
        first.kill()
    assert "dedup snapshot" in first.log()

    new_id = recreate(kafka.bootstrap, raw, 1)
    produce(kafka.bootstrap, raw, payloads("new", 35, start=3))
    second = WorkerProcess(env, tmp_path / "worker2.log", tmp_path)
    try:
        second.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, 55, second)
        time.sleep(2)
        outputs = read_outputs(kafka.bootstrap, names.outputs)
        assert second.terminate() == 0
    finally:
        second.kill()
    assert len(outputs) == 55
    check_once_each(outputs, "old", 20, old_id)
    check_once_each(outputs, "new", 35, new_id)
    log = second.log()
    assert f"'raw_topic_id': '{new_id}'" in log and "deleted and created again since the snapshot" in log, log[-3000:]


def test_raw_topic_recreated_mid_backlog_with_other_partitions(kafka, unique_topic, unique_group, tmp_path):
    """The adversary's timing: the old topic (3 partitions) still has a backlog when it is
    deleted, and the new one (2 partitions) gets its inputs at once. Inputs of the old topic
    the worker had not decided went with it; every one it decided has one envelope, and every
    input of the new topic has exactly one."""
    names = Names(unique_topic, unique_group)
    raw = f"{names.base}.raw"
    create_topics(names, kafka.bootstrap, partitions=3)
    old_id = topic_id(kafka.bootstrap, raw)
    old = payloads("old", 2000)
    produce_spread(kafka.bootstrap, raw, old, 3)
    worker = WorkerProcess(names.env(kafka.bootstrap, partitions=3), tmp_path / "worker.log", tmp_path)
    try:
        worker.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, 50, worker)
        new_id = recreate(kafka.bootstrap, raw, 2)
        produce_spread(kafka.bootstrap, raw, payloads("new", 80, start=11), 2)
        deadline = time.monotonic() + SWITCH_TIMEOUT
        while True:
            outputs = read_outputs(kafka.bootstrap, names.outputs)
            if sum(o.envelope["id"].startswith("new-") for o in outputs) >= 80 or time.monotonic() > deadline:
                break
            assert worker.proc.poll() is None, worker.log()[-4000:]
            time.sleep(1.0)
        time.sleep(3)  # a late second envelope would show below
        outputs = read_outputs(kafka.bootstrap, names.outputs)
        worker.wait_ready()
        assert worker.terminate() == 0
    finally:
        worker.kill()
    check_once_each(outputs, "new", 80, new_id)
    olds = Counter(o.envelope["id"] for o in outputs if o.envelope["id"].startswith("old-"))
    assert set(olds.values()) == {1} and len(olds) < len(old), "the backlog should be cut by the deletion"
    assert {o.envelope["origin"]["topic_id"] for o in outputs if o.envelope["id"].startswith("old-")} == {old_id}


def test_a_snapshot_is_not_trusted_once_an_output_topic_was_recreated_even_if_it_is_longer(kafka, unique_topic,
                                                                                           tmp_path):
    """The snapshot records the output topics' ids. sieve.accepted deleted and created again,
    then given more records than the snapshot covered (so its end offsets alone would pass):
    recovery must not restore dedup state of the old topic over it, and replays the new one."""
    from kafka import KafkaProducer

    from quality.build import build_pipeline
    from quality.config import PipelineSettings, load
    from quality.records import RawRecord
    from quality.state import save_snapshot
    from streams.recovery import Frontier, recover, snapshot_dir, topic_ids

    names = Names(unique_topic, f"{unique_topic}-g")
    ks = names.kafka(kafka.bootstrap)
    create_topics(names, kafka.bootstrap)
    settings = load(PipelineSettings, env={}, overrides={"scoring.enabled": False, "semantic_dedup.enabled": False})
    ids = topic_ids(ks)
    rows = [orjson.loads(line) for line in slice_lines()[:30]]
    raws = [RawRecord(orjson.dumps(r), {"topic": ks.raw_topic, "topic_id": ids[ks.raw_topic], "partition": 0,
                                        "offset": i}) for i, r in enumerate(rows)]
    produce(kafka.bootstrap, ks.raw_topic, [raw.payload for raw in raws])  # the inputs exist where origins say
    pipeline = build_pipeline(settings)
    decisions = [d for d in pipeline.process(raws[:10]) if d.decision == "accepted"]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    for d in decisions:
        producer.send(ks.accepted_topic, orjson.dumps(d.envelope(pipeline.versions())))
    producer.flush()
    frontier = Frontier({0: 10}, {t: {0: n} for t, n in [(ks.accepted_topic, len(decisions)),
                                                         (ks.rejected_topic, 0), (ks.dead_letter_topic, 0)]},
                        raw_topic_id=ids[ks.raw_topic])
    meta = {"accepted_topic": ks.accepted_topic, "raw_topic": ks.raw_topic, "group_id": ks.group_id,
            "accepted_end_offsets": {"0": len(decisions)},
            "output_topic_ids": {t: i for t, i in ids.items() if t != ks.raw_topic}, **frontier.meta()}
    state = tmp_path / "state"
    save_snapshot(pipeline.stages, snapshot_dir(state, ks), meta)
    trusted = recover(ks, build_pipeline(settings), state_dir=state)
    assert trusted.snapshot is not None and trusted.frontier and trusted.warmed == 0

    recreate(kafka.bootstrap, ks.accepted_topic, 1)
    other = build_pipeline(settings)
    later = [d for d in other.process(raws[10:]) if d.decision == "accepted"]
    assert len(later) > len(decisions)
    for d in later:
        producer.send(ks.accepted_topic, orjson.dumps(d.envelope(other.versions())))
    producer.flush()
    producer.close()
    restarted = build_pipeline(settings)
    result = recover(ks, restarted, state_dir=state)
    assert result.snapshot is None and not result.frontier
    assert result.warmed == len(later)  # only what the new topic holds
    first = [RawRecord(raw.payload, {"file": "again", "line": i}) for i, raw in enumerate(raws[:10])]
    assert not any(d.reasons == ["duplicate_exact"] for d in restarted.process(first)), \
        "the old topic's accepted examples came back from the distrusted snapshot"
