"""Property tests of the whole pipeline and of the envelope encoder, not the parser alone.

Arbitrary JSON (lone surrogates, integers far past 64 bits, NaN and infinities, floats
past a double, deep nesting, thousands of keys) in records of every format and in
fields Sieve ignores, as bytes or text: every input gets exactly one decision, in
order, whose envelope orjson writes and reads back; dead letters carry a reason.
"""

from __future__ import annotations

import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.assemble import build_pipeline
from quality.config import PipelineSettings, load
from quality.envelope import Decision, encode_decision
from quality.reasons import Reason
from quality.records import Example, Message, RawRecord

CHEAP = load(PipelineSettings, env={}, overrides={"scoring.enabled": False, "semantic_dedup.enabled": False})
CODES = {r.value for r in Reason}

# text that includes lone surrogates (category Cs), NUL and other controls
any_text = st.text(st.characters(codec=None, categories=None), max_size=30) | st.sampled_from(
    ["lone \ud800 high", "\udfff", "pair \ud83d\ude00 ok", "nul \x00 byte", "\ufeffbom"])
words = st.sampled_from(["Explain tides.", "Write a haiku about rain.", "The answer is 42 because it is.",
                         "Sure, here is a longer answer with several words in it.", "", "  ", "\u00e9t\u00e9"])
huge_int = st.integers(min_value=-(10 ** 60), max_value=10 ** 60) | st.sampled_from(
    [2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 22, 7 * 10 ** 4000])
any_float = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 1e308, 5e-324])
scalars = st.none() | st.booleans() | huge_int | any_float | any_text | words


def _nested(depth: int, leaf: object) -> object:
    for k in range(depth):
        leaf = [leaf] if k % 2 else {"k": leaf}
    return leaf


deep = st.builds(_nested, st.sampled_from([63, 64, 65, 253, 254, 255, 256, 300, 1000, 1022, 1030])
                 | st.integers(0, 1100), scalars)
many_keys = st.integers(0, 3000).map(lambda n: {f"k{i}": i for i in range(n)})
json_values = st.recursive(
    scalars | deep | many_keys,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(any_text | words, kids, max_size=4),
    max_leaves=12)
text_or_any = words | any_text | json_values


def message(role_key: str, content_key: str, roles) -> st.SearchStrategy:
    content = text_or_any | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]),
                                                            "text": text_or_any}), max_size=3)
    return st.fixed_dictionaries({role_key: roles | json_values, content_key: content},
                                 optional={"x": json_values})


ROLES = st.sampled_from(["user", "assistant", "system", "USER", "tool", "wizard"])
records = st.one_of(
    st.fixed_dictionaries({"instruction": text_or_any, "output": text_or_any}, optional={"input": text_or_any}),
    st.fixed_dictionaries({"messages": st.lists(message("role", "content", ROLES), max_size=4)}),
    st.fixed_dictionaries({"conversations": st.lists(message("from", "value", st.sampled_from(["human", "gpt"])),
                                                     max_size=4)}),
    st.fixed_dictionaries({"prompt": text_or_any, "chosen": text_or_any, "rejected": text_or_any}),
    json_values,
).flatmap(lambda rec: st.fixed_dictionaries(
    {}, optional={"id": json_values | words, "source": json_values | words, "metadata": json_values,
                  "ignored": json_values}).map(lambda extra: {**rec, **extra} if isinstance(rec, dict) else rec))


@st.composite
def payloads(draw) -> bytes | str:
    value = draw(records)
    how = draw(st.sampled_from(["ascii", "utf8", "str", "orjson", "bom"]))
    try:
        if how == "orjson":
            return orjson.dumps(value)
        text = json.dumps(value, ensure_ascii=how == "ascii", allow_nan=True)
    except (TypeError, ValueError, RecursionError):  # not even the standard library can write it
        return draw(st.binary(max_size=40))
    if how == "str":
        return text
    data = text.encode("utf-8", "surrogatepass")  # lone surrogates as (invalid) UTF-8 bytes
    return b"\xef\xbb\xbf" + data if how == "bom" else data


def _check(pipeline, raws, decisions) -> None:
    assert len(decisions) == len(raws)
    versions = pipeline.versions()
    for raw, d in zip(raws, decisions):
        assert d.origin == raw.origin  # in input order
        out, data = encode_decision(d, versions)
        assert out is d, d.error  # the pipeline hands out only decisions it can write
        env = orjson.loads(data)
        assert (env["id"], env["decision"], env["reasons"]) == (d.id, d.decision, d.reasons)
        assert set(d.reasons) <= CODES
        if d.decision == "dead_letter":
            assert d.reasons and d.error
        elif d.decision == "rejected":
            assert d.reasons


PIPELINE = build_pipeline(CHEAP)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(payloads(), min_size=1, max_size=6))
def test_any_batch_gets_one_writable_decision_per_input_in_order(batch):
    raws = [RawRecord(p, {"topic": "sieve.raw", "partition": 0, "offset": k}) for k, p in enumerate(batch)]
    _check(PIPELINE, raws, PIPELINE.process(raws))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200) | st.text(max_size=50), min_size=1, max_size=8))
def test_any_bytes_or_text_get_one_writable_decision_each(batch):
    raws = [RawRecord(p, {"file": "in.jsonl", "line": k}) for k, p in enumerate(batch)]
    _check(PIPELINE, raws, PIPELINE.process(raws))


python_values = st.recursive(
    scalars | deep | st.builds(object) | st.sets(st.integers(), max_size=2) | st.binary(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(any_text | huge_int, kids, max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["accepted", "rejected", "dead_letter"]), any_text, any_text, python_values, python_values,
       st.dictionaries(any_text, scalars, max_size=3), st.one_of(st.none(), st.binary(max_size=50), any_text))
def test_the_encoder_is_total(kind, ex_id, content, metadata, versions, origin, raw):
    """Whatever a decision holds, and whatever the versions are, encode returns bytes that read back."""
    ex = Example(ex_id, "sft", "alpaca", (Message("user", content), Message("assistant", "a")),
                 source=content, metadata={"m": metadata})
    d = Decision(ex_id, kind, ["too_short"] if kind != "accepted" else [], {"quality": 0.5}, origin, example=ex,
                 raw=raw, error=content if kind == "dead_letter" else None)
    out, data = encode_decision(d, {"pipeline": versions})
    env = orjson.loads(data)
    assert env["decision"] == out.decision and env["reasons"] == out.reasons
    if out is not d:
        assert out.reasons == [Reason.UNENCODABLE.value] and env["error"].startswith("stage envelope: ")
