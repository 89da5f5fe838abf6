"""The worker's pure helpers: envelope size limits, raw records from events, the recent-origins window."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from quality.build import build_pipeline
from quality.config import PipelineSettings, load
from quality.records import RawRecord
from streams.agents import OutputTooLarge, RecentOrigins, encode_envelope, raw_from_event

LIMIT = 20_000

#: The CPU-cheap stages only (no encoder): what these tests look at.
HEURISTICS = load(PipelineSettings, env={}, overrides={"scoring.enabled": False, "semantic_dedup.enabled": False})


def envelope(payload: bytes, **settings) -> dict:
    pipeline = build_pipeline(HEURISTICS)
    (d,) = pipeline.process([RawRecord(payload, {"topic": "t", "partition": 0, "offset": 0})])
    return d.envelope(pipeline.versions())


def test_small_envelopes_pass_unchanged():
    env = envelope(orjson.dumps({"id": "x", "instruction": "Name a color.", "output": "Blue is a color."}))
    assert orjson.loads(encode_envelope(env, LIMIT)) == env


def test_large_rejected_envelope_drops_its_example_and_says_so():
    text = "word " * 20_000  # 100k chars: rejected as too_long
    env = envelope(orjson.dumps({"id": "big", "instruction": "Talk.", "output": text}))
    assert env["decision"] == "rejected" and env["reasons"] == ["too_long"]
    out = orjson.loads(encode_envelope(env, LIMIT))
    assert len(encode_envelope(env, LIMIT)) <= LIMIT
    assert out["example"] is None and "dropped or cut: example" in out["omitted"]
    assert (out["id"], out["decision"], out["reasons"]) == ("big", "rejected", ["too_long"])


def test_large_dead_letter_drops_raw_payload():
    env = envelope(b'{"id": "dl", "output": "' + b"z" * 60_000)  # invalid_json, raw kept up to 64 KiB
    assert env["reasons"] == ["invalid_json"] and len(env["raw"]) == 60_024
    out = orjson.loads(encode_envelope(env, LIMIT))
    assert out["raw"] is None and "raw" in out["omitted"] and out["raw_bytes"] == 60_024


def test_accepted_envelope_too_large_names_the_settings():
    env = envelope(orjson.dumps({"id": "ok", "instruction": "Write.", "output": " ".join(f"w{i}" for i in range(5000))}))
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
        recent.add(("t", 0, i))
    recent.add(("t", 0, 4))  # a repeat does not push anything out
    assert len(recent) == 3 and ("t", 0, 1) not in recent and ("t", 0, 2) in recent and ("t", 0, 4) in recent
