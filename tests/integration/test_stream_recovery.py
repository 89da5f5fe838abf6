"""kill -9 of a `sieve run` worker mid-run: nothing lost, nothing accepted twice, same decisions."""

from __future__ import annotations

import re
import time
from collections import Counter

import orjson
import pytest
from stream_utils import (Names, WorkerProcess, bad_payloads, committed, create_topics, output_count, produce,
                          read_outputs, slice_lines, wait_for_outputs)

from quality.filemode import curate
from streams.assemble import build_pipeline
from streams.config import load_settings

pytestmark = pytest.mark.integration

#: Inputs decided and committed before the crash.
COMMITTED_PHASE = 150
#: Inputs produced before the crash; the rest arrive while the worker is down.
FIRST_PHASE = 480
#: Outputs that must exist before the worker is killed.
KILL_AFTER = 200
#: Seconds to wait for the first commit (kafka.commit_interval_s is 1 s in these tests).
COMMIT_TIMEOUT = 20.0


def recovery_inputs() -> list[bytes]:
    """Real rows, then exact copies and near copies of them under new ids, with bad payloads between.

    The copies come after the crash point, so their dedup decisions depend on the
    state the restarted worker rebuilt from the accepted topic.
    """
    rows = [orjson.loads(line) for line in slice_lines()]
    exact = [{**r, "id": f"{r['id']}-exact"} for r in rows]
    near = []
    for r in rows:
        r = {**r, "id": f"{r['id']}-near"}
        for key in ("instruction", "prompt"):  # a small edit of the prompt: near, not exact
            if isinstance(r.get(key), str):
                r[key] = r[key] + " Please answer briefly."
        near.append(r)
    payloads = [orjson.dumps(r) for r in rows + exact + near]
    bad = [p for p, _reason in bad_payloads() if p]  # no empty payload: file mode skips blank lines
    for k, payload in enumerate(bad):
        payloads.insert(50 + 70 * k, payload)
    return payloads


def test_kill_9_and_restart_loses_nothing_and_decides_like_one_run(kafka, unique_topic, unique_group, tmp_path,
                                                                   monkeypatch):
    names = Names(unique_topic, unique_group)
    payloads = recovery_inputs()
    raw = f"{names.base}.raw"
    create_topics(names, kafka.bootstrap)
    produce(kafka.bootstrap, raw, payloads[:COMMITTED_PHASE])

    # snapshots every half second, so the restart restores one and replays only the tail
    env = {**names.env(kafka.bootstrap), "SIEVE_SNAPSHOT_INTERVAL_S": "0.5"}
    first = WorkerProcess(env, tmp_path / "worker1.log", tmp_path)
    try:
        first.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, COMMITTED_PHASE, first)
        deadline = time.monotonic() + COMMIT_TIMEOUT  # let it commit once, so the restart resumes mid-topic
        while not committed(kafka.bootstrap, raw, names.group)[0] and time.monotonic() < deadline:
            time.sleep(0.2)
        produce(kafka.bootstrap, raw, payloads[COMMITTED_PHASE:FIRST_PHASE])
        wait_for_outputs(kafka.bootstrap, names.outputs, KILL_AFTER, first)
        first.proc.kill()  # SIGKILL: no drain, no commit
        first.proc.wait(10)
    finally:
        first.kill()
    at_kill = read_outputs(kafka.bootstrap, names.outputs)
    commits = committed(kafka.bootstrap, raw, names.group)
    assert KILL_AFTER <= len(at_kill) < FIRST_PHASE, "the kill must land mid-run"
    assert commits[0], "the first worker committed nothing before it was killed"
    decided_uncommitted = [o for o in at_kill if o.envelope["origin"]["offset"] >= (commits[0] or 0)]
    assert decided_uncommitted, "some inputs must be decided but not committed when the worker dies"

    produce(kafka.bootstrap, raw, payloads[FIRST_PHASE:])
    second = WorkerProcess(env, tmp_path / "worker2.log", tmp_path)
    try:
        second.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), second)
        assert second.terminate() == 0
    finally:
        second.kill()
    summary = re.search(r"recovery: (\{.*\})", second.log())
    assert summary and f"'skip': {len(decided_uncommitted)}," in summary.group(1), summary
    assert "'snapshot': '" in summary.group(1), "the restart should restore the first worker's snapshot"
    accepted_at_kill = sum(o.envelope["decision"] == "accepted" for o in at_kill)
    warmed = int(re.search(r"'warmed': (\d+)", summary.group(1)).group(1))
    assert warmed < accepted_at_kill, "with a snapshot only the accepted tail is replayed"
    assert "'frontier': True" in summary.group(1), "the restart should start its scan at the snapshot's frontier"
    scanned = sum(int(n) for n in re.findall(r"'[^']+': (\d+)", re.search(r"'scanned': \{([^}]*)\}",
                                                                           summary.group(1)).group(1)))
    assert scanned < len(at_kill), "with a snapshot only the outputs written after it are read"
    assert output_count(kafka.bootstrap, names.outputs) == len(payloads)  # nothing extra either

    outputs = read_outputs(kafka.bootstrap, names.outputs)
    offsets = Counter(o.envelope["origin"]["offset"] for o in outputs)
    assert sorted(offsets) == list(range(len(payloads))) and set(offsets.values()) == {1}
    accepted = Counter(o.envelope["id"] for o in outputs if o.envelope["decision"] == "accepted")
    assert max(accepted.values()) == 1

    # the same input through one uninterrupted file-mode run
    src = tmp_path / "input.jsonl"
    src.write_bytes(b"".join(p + b"\n" for p in payloads))
    for key, value in names.env(kafka.bootstrap).items():
        monkeypatch.setenv(key, value)
    curate(build_pipeline(load_settings().pipeline), [src], tmp_path / "out")
    accepted_lines = (tmp_path / "out" / "accepted.jsonl").read_bytes().splitlines()
    file_accepted = {orjson.loads(line)["id"] for line in accepted_lines}
    assert set(accepted) == file_accepted
    by_line = {}
    for name in ("accepted", "rejected", "dead_letter"):
        for line in (tmp_path / "out" / f"{name}.jsonl").read_bytes().splitlines():
            env = orjson.loads(line)
            by_line[env["origin"]["line"] - 1] = (env["decision"], env["reasons"])
    stream = {o.envelope["origin"]["offset"]: (o.envelope["decision"], o.envelope["reasons"]) for o in outputs}
    assert stream == by_line
    reasons = Counter(r for _, rs in stream.values() for r in rs)
    assert reasons["duplicate_exact"] >= 200 and reasons["duplicate_near"] > 0, reasons


def test_snapshot_plus_tail_uses_accepted_positions_not_input_positions(kafka, unique_topic, tmp_path):
    """Inputs from 2 raw partitions, decisions on a 1-partition accepted topic, a snapshot after
    8 of 12 accepted: recovery must replay exactly the 4 after it (their input offsets are
    lower than the snapshot's accepted offset) and then decide copies like a worker that
    never stopped."""
    import dataclasses

    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient

    from quality.config import PipelineSettings
    from quality.records import RawRecord
    from quality.state import save_snapshot
    from streams.config import KafkaSettings
    from streams.recovery import recover, snapshot_dir

    base = PipelineSettings()
    settings = dataclasses.replace(base, scoring=dataclasses.replace(base.scoring, enabled=False),
                                   semantic_dedup=dataclasses.replace(base.semantic_dedup, enabled=False))
    names = {k: f"{unique_topic}.{k}" for k in ("raw", "accepted", "rejected", "dead-letter")}
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    admin.create_topics({names["raw"]: {"num_partitions": 2, "replication_factor": 1},
                         **{names[k]: {"num_partitions": 1, "replication_factor": 1}
                            for k in ("accepted", "rejected", "dead-letter")}}, wait_for_metadata=True)
    admin.close()
    ks = KafkaSettings(brokers=kafka.bootstrap, raw_topic=names["raw"], accepted_topic=names["accepted"],
                       rejected_topic=names["rejected"], dead_letter_topic=names["dead-letter"],
                       group_id=f"{unique_topic}-g")
    rows = [orjson.loads(line) for line in slice_lines()[:12]]
    origins = [(1, i) for i in range(8)] + [(0, i) for i in range(4)]
    raws = [RawRecord(orjson.dumps(r), {"topic": names["raw"], "partition": p, "offset": o})
            for r, (p, o) in zip(rows, origins)]
    original = build_pipeline(settings)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    for raw in raws:  # the inputs exist where their origins say
        producer.send(names["raw"], raw.payload, partition=raw.origin["partition"])
    producer.flush()
    state = tmp_path / "state"

    def publish(decisions):
        for d in decisions:
            assert d.decision == "accepted", d.reasons
            producer.send(names["accepted"], orjson.dumps(d.envelope(original.versions())), partition=0)
        producer.flush()

    publish(original.process(raws[:8]))
    save_snapshot(original.stages, snapshot_dir(state, ks),
                  {"accepted_topic": names["accepted"], "accepted_end_offsets": {"0": 8}})
    publish(original.process(raws[8:]))
    producer.close()

    restarted = build_pipeline(settings)
    result = recover(ks, restarted, state_dir=state)
    assert result.snapshot is not None and result.warmed == 4
    assert result.output_end[ks.accepted_topic] == {0: 12}
    copies = [RawRecord(orjson.dumps({**r, "id": f"{r['id']}-copy"}), {"file": "c", "line": i})
              for i, r in enumerate(rows)]
    assert [d.reasons for d in restarted.process(copies)] == [d.reasons for d in original.process(copies)]
    assert all(d.reasons == ["duplicate_exact"] for d in restarted.process(copies))


def _two_partition_topics(bootstrap: str, unique_topic: str):
    from kafka.admin import KafkaAdminClient

    from streams.config import KafkaSettings

    names = {k: f"{unique_topic}.{k}" for k in ("raw", "accepted", "rejected", "dead-letter")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({names["raw"]: {"num_partitions": 2, "replication_factor": 1},
                         **{names[k]: {"num_partitions": 1, "replication_factor": 1}
                            for k in ("accepted", "rejected", "dead-letter")}}, wait_for_metadata=True)
    admin.close()
    return KafkaSettings(brokers=bootstrap, raw_topic=names["raw"], accepted_topic=names["accepted"],
                         rejected_topic=names["rejected"], dead_letter_topic=names["dead-letter"],
                         group_id=f"{unique_topic}-g")



class _Decided:
    """Rows produced to a 2-partition raw topic (row i at partition i % 2, offset i // 2) and a
    publisher of a pipeline's decisions to the output topics, counting what each topic got."""

    def __init__(self, bootstrap: str, ks, rows: list[dict], pipeline) -> None:  # noqa: ANN001
        from kafka import KafkaProducer

        from quality.records import RawRecord

        self.ks, self.pipeline = ks, pipeline
        self.raws = [RawRecord(orjson.dumps(r), {"topic": ks.raw_topic, "partition": i % 2, "offset": i // 2})
                     for i, r in enumerate(rows)]
        self.topic_of = {"accepted": ks.accepted_topic, "rejected": ks.rejected_topic,
                         "dead_letter": ks.dead_letter_topic}
        self.written = {t: 0 for t in self.topic_of.values()}
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for raw in self.raws:  # the inputs exist where their origins say
            self.producer.send(ks.raw_topic, raw.payload, partition=raw.origin["partition"])

    def publish(self, decisions) -> None:  # noqa: ANN001
        for d in decisions:
            topic = self.topic_of[d.decision]
            self.producer.send(topic, orjson.dumps(d.envelope(self.pipeline.versions())), partition=0)
            self.written[topic] += 1
        self.producer.flush()

    def snapshot_meta(self, frontier) -> dict:  # noqa: ANN001
        return {"accepted_topic": self.ks.accepted_topic, "raw_topic": self.ks.raw_topic,
                "group_id": self.ks.group_id, "accepted_end_offsets": {"0": self.written[self.ks.accepted_topic]},
                **frontier.meta()}


def test_the_snapshot_frontier_limits_the_scan_to_the_tail_and_skips_the_same_inputs(kafka, unique_topic,
                                                                                     tmp_path):
    """A snapshot after 12 of 20 decisions (on 2 raw partitions, to accepted and rejected):
    recovery reads only the 8 envelopes after it, yet skips exactly the 20 decided inputs
    (from the frontier's decided ends, its pending spans and the tail), and
    warms the dedup state with the accepted tail. A snapshot of another group is not trusted:
    everything is read again, with the same skip set."""
    import dataclasses

    from quality.config import PipelineSettings
    from quality.records import RawRecord
    from quality.state import save_snapshot
    from streams.recovery import Frontier, recover, snapshot_dir

    base = PipelineSettings()
    settings = dataclasses.replace(base, scoring=dataclasses.replace(base.scoring, enabled=False),
                                   semantic_dedup=dataclasses.replace(base.semantic_dedup, enabled=False))
    ks = _two_partition_topics(kafka.bootstrap, unique_topic)
    rows = [orjson.loads(line) for line in slice_lines()[:16]]
    rows = rows + [{**r, "id": f"{r['id']}-again"} for r in rows[:4]]  # exact copies: rejected
    original = build_pipeline(settings)
    out = _Decided(kafka.bootstrap, ks, rows, original)
    origins = [(raw.origin["partition"], raw.origin["offset"]) for raw in out.raws]
    written = out.written

    # the first 12 inputs, then copies of 4 of them: the copies are rejected after the snapshot
    out.publish(original.process(out.raws[:12]))
    # partition 1's inputs 4 and 5 were decided by an earlier run and not met again when the
    # snapshot was taken: pending spans; their envelopes lie before the snapshot's output ends
    frontier = Frontier({0: 6, 1: 4}, {t: {0: n} for t, n in written.items()}, {1: [(4, 6)]})
    state = tmp_path / "state"
    save_snapshot(original.stages, snapshot_dir(state, ks), out.snapshot_meta(frontier))
    before = dict(written)
    out.publish(original.process(out.raws[12:]))
    out.producer.close()
    tail = sum(written.values()) - sum(before.values())
    assert tail == 8 and written[ks.rejected_topic] - before[ks.rejected_topic] == 4

    restarted = build_pipeline(settings)
    result = recover(ks, restarted, state_dir=state)
    assert result.frontier and result.snapshot is not None
    assert sum(result.scanned.values()) == tail
    assert result.warmed == written[ks.accepted_topic] - before[ks.accepted_topic]
    # these envelopes and this snapshot carry no topic id (as a Sieve before ids wrote them): they
    # match the inputs of the raw topic as it is now
    raw_id = result.raw_topic_id
    assert raw_id
    decided = {(ks.raw_topic, raw_id, p, o) for p, o in origins}
    assert len(result.skip) == len(decided) and all(o in result.skip for o in decided)
    assert (ks.raw_topic, raw_id, 0, 10) not in result.skip and (ks.raw_topic, raw_id, 1, 10) not in result.skip
    assert result.output_end == {t: {0: n} for t, n in written.items()}
    copies = [RawRecord(orjson.dumps({**r, "id": f"{r['id']}-copy"}), {"file": "c", "line": i})
              for i, r in enumerate(rows[:16])]
    assert all(d.reasons == ["duplicate_exact"] for d in restarted.process(copies))

    other_group = dataclasses.replace(ks, group_id=f"{ks.group_id}-other")
    again = recover(other_group, build_pipeline(settings), state_dir=state)
    assert not again.frontier and sum(again.scanned.values()) == sum(written.values())
    assert len(again.skip) == len(decided) and all(o in again.skip for o in decided)


def test_quota_windows_come_back_from_the_snapshot_plus_the_tail(kafka, unique_topic, tmp_path):
    """With a quota threshold (keep the top half of the last 20 scores), a restarted pipeline's
    window equals the live one's: the snapshot's windows plus the tail's quality scores, in
    input order. Both then decide the next inputs alike."""
    import dataclasses

    import numpy as np

    from quality.config import PipelineSettings
    from quality.records import RawRecord
    from quality.state import save_snapshot
    from streams.recovery import Frontier, recover, snapshot_dir

    def policies_of(stages):  # the quota windows are the quality gate's state
        return [s.policy for s in stages if s.name == "quality_gate"]

    base = PipelineSettings()
    settings = dataclasses.replace(base, scoring=dataclasses.replace(base.scoring, quality_quota=0.5, quota_window=20),
                                   semantic_dedup=dataclasses.replace(base.semantic_dedup, enabled=False))
    ks = _two_partition_topics(kafka.bootstrap, unique_topic)
    rows = [orjson.loads(line) for line in slice_lines()[:70]]
    original = build_pipeline(settings)
    out = _Decided(kafka.bootstrap, ks, rows, original)  # input order = (offset, partition) order
    out.publish(original.process(out.raws[:30]))
    frontier = Frontier({0: 15, 1: 15}, {t: {0: n} for t, n in out.written.items()})
    meta = out.snapshot_meta(frontier)  # the gate's windows are saved with the stages' state
    save_snapshot(original.stages, snapshot_dir(tmp_path / "state", ks), meta)
    out.publish(original.process(out.raws[30:60]))
    out.producer.close()

    restarted = build_pipeline(settings)
    result = recover(ks, restarted, state_dir=tmp_path / "state")
    assert result.frontier and result.quota_windows and result.scores_replayed > 0
    (live,), (back,) = policies_of(original.stages), policies_of(restarted.stages)
    assert len(live.default.state()) == 20
    np.testing.assert_allclose(back.default.state(), live.default.state(), atol=1e-5)  # envelopes round to 1e-6
    nxt = [RawRecord(raw.payload, {"file": "next", "line": i}) for i, raw in enumerate(out.raws[60:])]
    assert [d.reasons for d in restarted.process(nxt)] == [d.reasons for d in original.process(nxt)]

    fresh = build_pipeline(settings)  # a snapshot of another group: no frontier, the windows start empty
    again = recover(dataclasses.replace(ks, group_id=f"{ks.group_id}-other"), fresh, state_dir=tmp_path / "state")
    assert not again.quota_windows and policies_of(fresh.stages)[0].default.state() == []


def test_a_recreated_raw_topic_stops_recovery_with_a_clear_error(kafka, unique_topic, tmp_path):
    """Outputs that name inputs past the raw topic's end would make the worker skip new
    inputs at those offsets; recovery refuses instead."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient

    from streams.config import KafkaSettings
    from streams.recovery import recover

    names = {k: f"{unique_topic}.{k}" for k in ("raw", "accepted", "rejected", "dead-letter")}
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    admin.create_topics({t: {"num_partitions": 1, "replication_factor": 1} for t in names.values()},
                        wait_for_metadata=True)
    admin.close()
    ks = KafkaSettings(brokers=kafka.bootstrap, raw_topic=names["raw"], accepted_topic=names["accepted"],
                       rejected_topic=names["rejected"], dead_letter_topic=names["dead-letter"],
                       group_id=f"{unique_topic}-g")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    old = {"id": "x", "decision": "rejected", "reasons": ["refusal"], "scores": {}, "example": None,
           "origin": {"topic": names["raw"], "partition": 0, "offset": 41}}
    producer.send(names["rejected"], orjson.dumps(old))
    producer.flush()
    producer.close()
    from quality.config import PipelineSettings
    from quality.scoring.gate import ScoringSettings

    with pytest.raises(ValueError, match="recreated"):
        recover(ks, build_pipeline(PipelineSettings(scoring=ScoringSettings(enabled=False))))
