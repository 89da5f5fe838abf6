"""Poison payloads: each one ends as exactly one decision whose envelope orjson writes and reads back.

The corpus (tests/poison_corpus.py) holds the known breakers (a lone surrogate beside an
integer over 64 bits, metadata nested 255-1,024 deep) and their relatives.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import orjson
import pytest

from poison_corpus import BIG_INT, OK_TEXT, poison_payloads
from streams.assemble import build_pipeline
from quality.config import PipelineSettings, load
from quality.envelope import Decision, encode_decision, unencodable
from quality.privacy import PiiSettings
from quality.reasons import Reason
from quality.records import MAX_JSON_DEPTH, Example, Message, ParseFailure, RawRecord, parse

#: The CPU-cheap stages (no encoder), as the worker builds them otherwise.
CHEAP = load(PipelineSettings, env={}, overrides={"scoring.enabled": False, "semantic_dedup.enabled": False})
ORIGIN = {"topic": "sieve.raw", "partition": 3, "offset": 17}
CORPUS = poison_payloads()


def decide(payload: bytes | str, **overrides) -> tuple[object, Decision]:
    pipeline = build_pipeline(dataclasses.replace(CHEAP, **overrides))
    (d,) = pipeline.process([RawRecord(payload, ORIGIN)])
    return pipeline, d


def written(pipeline, d: Decision) -> dict:
    """The envelope as a driver writes it; the pipeline must already have made it writable."""
    out, data = encode_decision(d, pipeline.versions())
    assert out is d, f"the pipeline returned a decision it cannot write: {out.error}"
    env = orjson.loads(data)
    assert (env["id"], env["decision"], env["reasons"]) == (d.id, d.decision, d.reasons)
    assert env["origin"] == ORIGIN
    if d.decision == "dead_letter":
        assert env["reasons"] and env["error"], env
    return env


@pytest.mark.parametrize("name,payload,expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_each_poison_payload_ends_as_one_writable_envelope(name, payload, expected):
    pipeline, d = decide(payload)
    written(pipeline, d)
    if expected is not None:
        assert (d.decision, d.reasons[0]) == expected, d.error


def test_the_whole_corpus_in_one_batch_gets_one_decision_each_in_order():
    pipeline = build_pipeline(CHEAP)
    raws = [RawRecord(p, {"topic": "sieve.raw", "partition": 0, "offset": k}) for k, (_, p, _) in enumerate(CORPUS)]
    decisions = pipeline.process(raws)
    assert [d.origin["offset"] for d in decisions] == list(range(len(CORPUS)))
    for (name, _, expected), d in zip(CORPUS, decisions):
        data = encode_decision(d, pipeline.versions())[1]
        assert orjson.loads(data)["decision"] == d.decision, name
        if expected is not None and expected[0] == "dead_letter":
            assert d.reasons[0] == expected[1], (name, d.error)


def test_the_issue_s_surrogate_with_a_big_integer_is_invalid_utf8_and_keeps_its_payload():
    payload = (b'{"instruction":"Explain \\ud800 this","output":"...","metadata":{"order":'
               + BIG_INT + b"}}")
    pipeline, d = decide(payload)
    assert (d.decision, d.reasons) == ("dead_letter", [Reason.INVALID_UTF8.value])
    assert "surrogate" in d.error and "\\ud800" in d.error
    env = written(pipeline, d)
    assert env["raw"].encode() == payload and env["raw_encoding"] == "utf-8"


def test_surrogates_in_a_text_payload_are_invalid_utf8_on_both_parse_paths():
    for text in ('{"instruction": "a \ud800", "output": "b"}', '{"instruction": "a \ud800", "output": "b", "n": '
                 + BIG_INT.decode() + "}"):
        out = parse(RawRecord(text, ORIGIN))
        assert isinstance(out, ParseFailure) and out.reason == Reason.INVALID_UTF8, out
    pipeline, d = decide('{"instruction": "a", "output": "b \udfff", "n": ' + BIG_INT.decode() + "}")
    env = written(pipeline, d)
    assert env["raw"] is None and env["raw_bytes"] > 0  # not UTF-8 (surrogatepass): it cannot be redacted, dropped
    _, d = decide('{"instruction": "a", "output": "b \udfff", "n": ' + BIG_INT.decode() + "}",
                  pii=PiiSettings(dead_letter_raw="keep"))
    env = written(pipeline, d)
    assert env["raw_encoding"] == "base64"  # the opt-in: the bytes travel as they were (surrogatepass)
    assert base64.b64decode(env["raw"]).decode("utf-8", "surrogatepass").endswith(BIG_INT.decode() + "}")


def test_the_depth_limit_counts_every_level_of_the_whole_payload():
    ok = orjson.dumps(OK_TEXT)[:-1]
    at_limit = ok + b',"metadata":{"a":' + b"[" * (MAX_JSON_DEPTH - 2) + b"]" * (MAX_JSON_DEPTH - 2) + b"}}"
    past = ok + b',"metadata":{"a":' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}}"
    assert isinstance(parse(RawRecord(at_limit, ORIGIN)), Example)
    out = parse(RawRecord(past, ORIGIN))
    assert isinstance(out, ParseFailure) and out.reason == Reason.TOO_DEEP and str(MAX_JSON_DEPTH) in out.error
    out = parse(RawRecord(at_limit, ORIGIN), max_depth=10)
    assert isinstance(out, ParseFailure) and out.reason == Reason.TOO_DEEP


def test_brackets_inside_strings_do_not_count_as_depth():
    code = "x = " + "[" * 500 + "]" * 500
    ex = parse(RawRecord(orjson.dumps({"instruction": "What is this?", "output": code}), ORIGIN))
    assert isinstance(ex, Example) and ex.response_text == code


def test_numbers_past_a_double_fail_the_same_on_both_parse_paths():
    for extra in (b"", b',"n":' + BIG_INT):
        out = parse(RawRecord(b'{"instruction":"q","output":"a","x":1e400' + extra + b"}", ORIGIN))
        assert isinstance(out, ParseFailure) and out.reason == Reason.INVALID_JSON and "infinity" in out.error


def test_integers_of_any_length_keep_their_digits():
    digits = "7" * 10_000
    ex = parse(RawRecord(b'{"instruction":"q","output":"a","metadata":{"x":' + digits.encode() + b"}}", ORIGIN))
    assert isinstance(ex, Example) and ex.metadata == {"x": digits}
    ex = parse(RawRecord(b'{"id":' + BIG_INT + b',"instruction":"q","output":"a"}', ORIGIN))
    assert ex.id == BIG_INT.decode()


def test_a_byte_order_mark_is_ignored_and_an_empty_message_says_what_it_is():
    ex = parse(RawRecord(b"\xef\xbb\xbf" + orjson.dumps(OK_TEXT), ORIGIN))
    assert isinstance(ex, Example) and ex.response_text == OK_TEXT["output"]
    out = parse(RawRecord(b"", ORIGIN))
    assert out.reason == Reason.INVALID_JSON and "tombstone" in out.error and out.id == "sieve.raw/3/17"


def test_the_encoder_is_total_an_unwritable_decision_becomes_a_small_dead_letter():
    """A decision built past the parser (a stage bug, a future field) with a lone surrogate,
    nesting orjson cannot write and an object it does not know: the envelope stage fails
    and the stand-in dead letter keeps the id, origin and raw payload."""
    deep: list = []
    for _ in range(300):
        deep = [deep]
    ex = Example("id-\ud800", "sft", "alpaca", (Message("user", "q \udc00"), Message("assistant", "a")),
                 metadata={"deep": deep, "obj": object()})
    origin = {"file": "in-\udcff.jsonl", "line": 3}
    d = Decision(ex.id, "accepted", [], {"quality": 0.5}, origin, example=ex, raw=b'{"raw": "\xff bytes"}')
    out, data = encode_decision(d, {"pipeline": "test"})
    env = orjson.loads(data)
    assert out.decision == env["decision"] == "dead_letter" and env["reasons"] == [Reason.UNENCODABLE.value]
    assert env["error"].startswith("stage envelope: TypeError: ") and "accepted" in env["error"]
    assert env["id"] == "id-\\ud800" and env["origin"] == {"file": "in-\\udcff.jsonl", "line": 3}
    assert env["raw"] is None and env["raw_sha256"] == hashlib.sha256(b'{"raw": "\xff bytes"}').hexdigest()
    assert env["example"] is None and env["versions"] == {"pipeline": "test"}


def test_even_unwritable_versions_leave_a_readable_dead_letter():
    d = Decision("x", "rejected", ["too_short"], {}, ORIGIN, raw="payload \ud800")
    env = orjson.loads(encode_decision(d, {"pipeline": float("nan"), "bad": {"\ud800": 1}})[1])
    assert env["reasons"] == [Reason.UNENCODABLE.value] and "error" in env["versions"]
    assert env["raw"] is None and env["raw_bytes"] == len("payload \ud800".encode("utf-8", "surrogatepass"))


def test_unencodable_dead_letters_are_safe_whatever_the_origin_holds():
    d = Decision("i", "accepted", [], {}, {"key": "k\udc80", "n": 1 << 70, "f": float("inf"), "\ud800": None})
    stand_in = unencodable(d, TypeError("boom"))
    assert orjson.loads(orjson.dumps(stand_in.envelope({})))["origin"] == {
        "key": "k\\udc80", "n": str(1 << 70), "f": "inf", "\\ud800": None}
