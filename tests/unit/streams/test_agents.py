"""The worker's pure helpers: envelope size limits, raw records from events, the recent-origins window."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from quality.config import load
from quality.envelope import OutputTooLarge, encode_envelope
from quality.records import RawRecord
from streams.worker import RecentOrigins, raw_from_event

LIMIT = 20_000



def envelope(pipeline, payload: bytes) -> dict:
    (d,) = pipeline.process([RawRecord(payload, {"topic": "t", "partition": 0, "offset": 0})])
    return d.envelope(pipeline.versions())


def test_small_envelopes_pass_unchanged(cheap_pipeline):
    env = envelope(cheap_pipeline(),
                   orjson.dumps({"id": "x", "instruction": "Name a color.", "output": "Blue is a color."}))
    assert orjson.loads(encode_envelope(env, LIMIT)) == env


def test_large_rejected_envelope_drops_its_example_and_says_so(cheap_pipeline):
    text = "word " * 20_000  # 100k chars: rejected as too_long
    env = envelope(cheap_pipeline(), orjson.dumps({"id": "big", "instruction": "Talk.", "output": text}))
    assert env["decision"] == "rejected" and env["reasons"] == ["too_long"]
    out = orjson.loads(encode_envelope(env, LIMIT))
    assert len(encode_envelope(env, LIMIT)) <= LIMIT
    assert out["example"] is None and "dropped or cut: example" in out["omitted"]
    assert (out["id"], out["decision"], out["reasons"]) == ("big", "rejected", ["too_long"])


def test_large_dead_letter_drops_raw_payload(cheap_pipeline):
    env = envelope(cheap_pipeline(), b'{"id": "dl", "output": "' + b"z" * 60_000)  # invalid_json, raw kept up to 64 KiB
    assert env["reasons"] == ["invalid_json"] and len(env["raw"]) == 60_024
    out = orjson.loads(encode_envelope(env, LIMIT))
    assert out["raw"] is None and "raw" in out["omitted"] and out["raw_bytes"] == 60_024


def test_accepted_envelope_too_large_names_the_settings(cheap_pipeline):
    text = " ".join(f"w{i}" for i in range(5000))
    env = envelope(cheap_pipeline(), orjson.dumps({"id": "ok", "instruction": "Write.", "output": text}))
    assert env["decision"] == "accepted"
    with pytest.raises(OutputTooLarge, match="max_total_chars.*max_output_bytes"):
        encode_envelope(env, LIMIT)


def test_raw_from_event_keeps_bytes_origin_and_key():
    msg = SimpleNamespace(topic="sieve.raw", partition=2, offset=41, key=b"k\xff", value=b"\xff\xfe")
    raw = raw_from_event(SimpleNamespace(message=msg))
    assert raw.payload == b"\xff\xfe"
    assert raw.origin == {"topic": "sieve.raw", "partition": 2, "offset": 41, "key": "k\\xff"}
    empty = raw_from_event(SimpleNamespace(message=SimpleNamespace(topic="t", partition=0, offset=0, key=None,
                                                                   value=None)))
    assert empty.payload == b"" and "key" not in empty.origin


def test_recent_origins_forgets_the_oldest():
    recent = RecentOrigins(maxlen=3)
    for i in range(5):
        recent.add(("t", "id", 0, i))
    recent.add(("t", "id", 0, 4))  # a repeat does not push anything out
    assert len(recent) == 3 and ("t", "id", 0, 1) not in recent and ("t", "id", 0, 2) in recent
    assert ("t", "id", 0, 4) in recent and ("t", "other-id", 0, 4) not in recent


def test_the_frontier_keeps_inputs_found_decided_that_the_worker_has_not_met_again(cheap_pipeline):
    """A snapshot taken right after a restart, before the redelivered inputs of partition 1
    came back, must still name them decided; what the worker consumed moves its ends."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from streams.config import Settings
    from streams.metrics import SieveMetrics
    from streams.recovery import DecidedInputs, RecoveryResult
    from streams.worker import StreamWorker

    settings = load(Settings, env={})
    raw = settings.kafka.raw_topic
    skip = DecidedInputs(raw)
    skip.add_range(0, 10, 20)  # the restored frontier of partition 0
    for offset in (50, 51, 52):  # tail envelopes of partition 1, past its committed offset
        skip.add((raw, None, 1, offset))
    worker = StreamWorker(settings, cheap_pipeline(), SieveMetrics(CollectorRegistry()),
                          RecoveryResult(skip=skip, decided_end={0: 20}))
    assert worker.frontier().decided_end == {0: 20} and worker.frontier().pending == {1: [(50, 53)]}

    def event(partition: int, offset: int, payload: bytes) -> SimpleNamespace:
        return SimpleNamespace(message=SimpleNamespace(topic=raw, partition=partition, offset=offset, value=payload,
                                                       key=None, timestamp=None, headers=None))

    # partition 1 comes back: 50 and 51 are skipped (decided), 53 is new; nothing to publish
    # for the skipped ones, and the new one is a dead letter (not JSON) that needs no broker here
    async def publish(decisions):
        assert [d.origin["offset"] for d in decisions] == [53]

    worker.publisher.publish = publish
    asyncio.run(worker._handle_batch([event(1, 50, b"{}"), event(1, 51, b"{}"), event(1, 53, b"not json")]))
    assert worker.frontier().decided_end == {0: 20, 1: 54}
    assert worker.frontier().pending == {}  # 52 is below the new end: decided, and no longer pending


def test_readiness_says_what_is_missing(cheap_pipeline):
    """/readyz's answer: recovered and consuming, the broker answering, the raw topic there, a partition assigned."""
    import time

    from prometheus_client import CollectorRegistry

    from streams.config import Settings
    from streams.metrics import SieveMetrics
    from streams.worker import StreamWorker
    from streams.worker.topic_identity import RawTopicIdentity, TopicWatch

    settings = load(Settings, env={})
    worker = StreamWorker(settings, cheap_pipeline(), SieveMetrics(CollectorRegistry()))
    assert worker.readiness() == (False, "recovering or not consuming yet")
    worker.ready = True
    assert worker.readiness() == (True, "ready")  # no broker checks attached (unit use)

    async def never(state, old):  # noqa: ANN001
        raise AssertionError("no switch here")

    identity = RawTopicIdentity(TopicWatch(settings.kafka, settings.kafka.raw_topic), "id-1", never, interval_s=5.0)
    worker.identity, worker.assigned = identity, lambda: True
    try:
        ok, why = worker.readiness()
        assert not ok and "does not answer (no answer yet)" in why
        identity.last_ok = time.monotonic()
        assert worker.readiness() == (True, "ready")
        identity.last_error = "KafkaTimeoutError: Unable to bootstrap"
        assert "does not answer (KafkaTimeoutError" in worker.readiness()[1]
        identity.last_error, identity.missing = None, True
        assert "does not exist" in worker.readiness()[1]
        identity.missing = False
        identity.last_ok = time.monotonic() - 3 * identity.interval_s - 1  # no answer for three intervals
        assert not worker.readiness()[0]
        identity.last_ok = time.monotonic()
        worker.assigned = lambda: False
        assert worker.readiness() == (False, f"no partition of {settings.kafka.raw_topic} is assigned to this worker")
    finally:
        identity.close()


def _worker(pipeline):
    from prometheus_client import CollectorRegistry

    from streams.worker import StreamWorker
    from streams.config import Settings
    from streams.metrics import SieveMetrics

    return StreamWorker(load(Settings, env={}), pipeline, SieveMetrics(CollectorRegistry()))


def _event(offset: int, payload: bytes | None, key: bytes | None = None) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(topic="sieve.raw", partition=0, offset=offset, value=payload,
                                                   key=key, timestamp=None, headers=None))


def test_an_envelope_orjson_cannot_write_is_published_as_an_unencodable_dead_letter(caplog, cheap_pipeline):
    from quality.envelope import Decision
    from quality.records import Example, Message

    worker = _worker(cheap_pipeline())
    ex = Example("id-\ud800", "sft", "alpaca", (Message("user", "q"), Message("assistant", "a \udc00")))
    d = Decision(ex.id, "rejected", ["too_short"], {}, {"topic": "sieve.raw", "partition": 4, "offset": 99},
                 example=ex, raw=b"\xff raw")
    written, key, value = worker.publisher.encode(d)
    env = orjson.loads(value)
    assert written.decision == env["decision"] == "dead_letter" and env["reasons"] == ["unencodable"]
    assert key == b"id-\\ud800" and env["id"] == "id-\\ud800"
    assert env["error"].startswith("stage envelope: TypeError") and "rejected: too_short" in env["error"]
    assert env["origin"] == {"topic": "sieve.raw", "partition": 4, "offset": 99}
    assert "'partition': 4, 'offset': 99" in caplog.text and "unencodable" in caplog.text


def test_every_poison_payload_of_a_batch_is_published(caplog, cheap_pipeline):
    """The worker's whole path short of the broker: raw events (a tombstone and a key that is
    not UTF-8 among them) to pipeline to encoded envelopes, one per event, in order."""
    import asyncio

    from poison_corpus import poison_payloads

    worker = _worker(cheap_pipeline())
    events = [_event(k, p) for k, (_, p, _) in enumerate(poison_payloads())]
    events += [_event(len(events), None, key=b"\xff\xfekey"), _event(len(events) + 1, b"{}", key=b"\x00")]
    sent = []

    async def publish(decisions):
        sent.extend(orjson.loads(worker.publisher.encode(d)[2]) for d in decisions)

    worker.publisher.publish = publish
    asyncio.run(worker._handle_batch(events))
    assert [e["origin"]["offset"] for e in sent] == list(range(len(events)))
    assert sent[-2]["reasons"] == ["invalid_json"] and sent[-2]["origin"]["key"] == "\\xff\\xfekey"
    assert all(e["reasons"] for e in sent if e["decision"] == "dead_letter")


def test_a_broken_stage_stops_the_worker_with_75_before_anything_is_published(monkeypatch, caplog):
    import asyncio

    import streams.worker.loop as loop
    from quality.pipeline import Pipeline
    from quality.stage import Stage

    class Broken(Stage):  # a fake on purpose: a real model cannot be broken on demand
        name = "broken"

        def check_batch(self, batch):
            raise RuntimeError("CUDA error: device lost")

    def exit_(code):
        raise SystemExit(code)

    monkeypatch.setattr(loop.os, "_exit", exit_)
    worker = _worker(Pipeline([Broken()]))
    published = []

    async def publish(decisions):
        published.extend(decisions)

    worker.publisher.publish = publish
    good = orjson.dumps({"instruction": "Name a colour.", "output": "Blue is a colour."})
    with pytest.raises(SystemExit) as stopped:
        asyncio.run(worker.handle_batch([_event(5, good), _event(6, good)]))
    assert stopped.value.code == loop.EXIT_DELIVERY_FAILED == 75 and published == []
    assert "sieve.raw[0] offsets 5..6" in caplog.text and "StageBroken" in caplog.text
    assert "canary" in caplog.text and "CUDA error: device lost" in caplog.text
