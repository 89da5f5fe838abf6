import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quality.reasons import Reason
from quality.records import Example, Message, ParseFailure, RawRecord, parse

ORIGIN = {"file": "in.jsonl", "line": 7}


def p(obj, **kw):
    payload = obj if isinstance(obj, (bytes, str)) else orjson.dumps(obj)
    return parse(RawRecord(payload, ORIGIN), **kw)


def test_alpaca_with_input_becomes_two_messages():
    ex = p({"id": "a1", "instruction": "Add.", "input": "2 and 3", "output": "5", "source": "app"})
    assert isinstance(ex, Example)
    assert ex.kind == "sft" and ex.format == "alpaca" and ex.id == "a1" and ex.source == "app"
    assert ex.messages == (Message("user", "Add.\n\n2 and 3"), Message("assistant", "5"))
    assert ex.canonical() == {"messages": [{"role": "user", "content": "Add.\n\n2 and 3"},
                                           {"role": "assistant", "content": "5"}]}


def test_openai_messages_keep_system_and_turns():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": [{"type": "text", "text": "Good"}, {"type": "text", "text": "bye"}]}]
    ex = p({"messages": msgs})
    assert ex.format == "openai" and ex.response_text == "Goodbye"
    assert ex.prompt_text == "Hi\nHello\nBye"  # system prompt is not prompt content


def test_sharegpt_roles_are_mapped():
    ex = p({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]})
    assert ex.format == "sharegpt" and [m.role for m in ex.messages] == ["user", "assistant"]


def test_a_developer_turn_reads_as_the_system_turn_chat_templates_know():
    """OpenAI's ``developer`` role is its newer system turn; Llama 2 and Mistral templates raise on it and
    Qwen's drop it, so a trainer given it as is fails or trains without the instruction."""
    dev = {"role": "Developer", "content": "Be brief."}
    ex = p({"messages": [dev, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
    assert [m.role for m in ex.messages] == ["system", "user", "assistant"] and ex.prompt_text == "Hi"
    pair = p({"prompt": [dev, {"role": "user", "content": "Q"}], "chosen": "good", "rejected": "bad"})
    assert pair.canonical()["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    hh = p({"prompt": [dev, {"role": "user", "content": "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant:"}],
            "chosen": "good", "rejected": "bad"})
    assert [m.role for m in hh.messages] == ["system", "user", "assistant", "user"]  # the transcript still splits


def test_preference_strings_and_lists():
    ex = p({"prompt": "Q", "chosen": "good", "rejected": "bad"})
    assert ex.kind == "preference" and ex.response_text == "good" and ex.rejected_text == "bad"
    assert ex.canonical()["prompt"] == [{"role": "user", "content": "Q"}]
    implicit = p({"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}],
                  "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "bad"}]})
    assert implicit.messages == (Message("user", "Q"),) and implicit.rejected_prompt is None


def test_preference_prompt_mismatch_is_recorded_not_failed():
    ex = p({"chosen": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "b"}]})
    assert isinstance(ex, Example) and ex.rejected_prompt == (Message("user", "Q2"),)
    explicit = p({"prompt": "Q1", "rejected_prompt": "Q2", "chosen": "a", "rejected": "b"})
    assert explicit.rejected_prompt == (Message("user", "Q2"),)


def test_missing_id_gets_origin_id():
    assert p({"instruction": "x", "output": "y"}).id == "in.jsonl:7"
    kafka = parse(RawRecord(b'{"instruction":"x","output":"y"}', {"topic": "sieve.raw", "partition": 2, "offset": 9}))
    assert kafka.id == "sieve.raw/2/9"


@pytest.mark.parametrize("payload,reason", [
    (b"\xff\xfe{}", Reason.INVALID_UTF8),
    (b'{"instruction": "x", "output": "caf\xe9"}', Reason.INVALID_UTF8),
    (b"{not json", Reason.INVALID_JSON),
    (b"", Reason.INVALID_JSON),
    (b'{"a": 1} trailing', Reason.INVALID_JSON),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (b'"just a string"', Reason.NOT_AN_OBJECT),
    (b"null", Reason.NOT_AN_OBJECT),
    (b'{"text": "hello"}', Reason.UNKNOWN_FORMAT),
    (b'{"instruction": "x"}', Reason.SCHEMA_ERROR),
    (b'{"output": "x"}', Reason.SCHEMA_ERROR),
    (b'{"instruction": 3, "output": "x"}', Reason.SCHEMA_ERROR),
    (b'{"instruction": "x", "output": ["y"]}', Reason.SCHEMA_ERROR),
    (b'{"id": {"a": 1}, "instruction": "x", "output": "y"}', Reason.SCHEMA_ERROR),
    (b'{"instruction": "x", "output": "y", "source": 5}', Reason.SCHEMA_ERROR),
    (b'{"instruction": "x", "output": "y", "metadata": [1]}', Reason.SCHEMA_ERROR),
    (b'{"messages": []}', Reason.SCHEMA_ERROR),
    (b'{"messages": "hi"}', Reason.SCHEMA_ERROR),
    (b'{"messages": [{"role": "user", "content": "q"}]}', Reason.SCHEMA_ERROR),
    (b'{"messages": [{"role": "wizard", "content": "q"}, {"role": "assistant", "content": "a"}]}', Reason.SCHEMA_ERROR),
    (b'{"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}', Reason.SCHEMA_ERROR),
    (b'{"messages": [{"role": "assistant", "content": "a"}]}', Reason.SCHEMA_ERROR),
    (b'{"conversations": [{"from": "alien", "value": "q"}, {"from": "gpt", "value": "a"}]}', Reason.SCHEMA_ERROR),
    (b'{"prompt": "q", "chosen": 1, "rejected": "b"}', Reason.SCHEMA_ERROR),
    (b'{"chosen": "a", "rejected": "b"}', Reason.SCHEMA_ERROR),
])
def test_bad_payloads_fail_with_reason(payload, reason):
    out = p(payload)
    assert isinstance(out, ParseFailure), out
    assert out.reason == reason, out.error
    assert out.error  # a human-readable explanation


def test_too_large_is_checked_before_parsing():
    big = orjson.dumps({"instruction": "x", "output": "y" * 2000})
    out = p(big, max_message_bytes=1000)
    assert isinstance(out, ParseFailure) and out.reason == Reason.TOO_LARGE and "1000" in out.error
    assert isinstance(p(big, max_message_bytes=10_000), Example)


def test_deeply_nested_json_is_a_failure_not_a_crash():
    for payload in (b"[" * 5000 + b"]" * 5000, b"[" * 5000 + b"12345678901234567890123" + b"]" * 5000):
        out = p(payload)  # past orjson's 1,024 levels, or past Python's recursion limit (the big-integer path)
        assert isinstance(out, ParseFailure) and out.reason == Reason.TOO_DEEP, out


def test_forced_format():
    out = p({"instruction": "x", "output": "y"}, format="openai")
    assert isinstance(out, ParseFailure) and out.reason == Reason.SCHEMA_ERROR


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "instruction", "input", "output", "messages", "role", "content",
                         "conversations", "from", "value", "prompt", "chosen", "rejected", "source",
                         "metadata", "type", "text", "x"]), children, max_size=5),
    max_leaves=20)


def _one_outcome(out):
    assert isinstance(out, (Example, ParseFailure))
    if isinstance(out, ParseFailure):
        assert isinstance(out.reason, Reason) and out.error and out.id
    else:
        assert out.id and out.messages


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    _one_outcome(parse(RawRecord(data, ORIGIN), max_message_bytes=200))


@settings(max_examples=600, deadline=None)
@given(json_values)
def test_arbitrary_json_never_raises(value):
    _one_outcome(parse(RawRecord(json.dumps(value), ORIGIN)))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_payloads_never_raise(text):
    _one_outcome(parse(RawRecord(text, ORIGIN)))


def test_big_integers_are_valid_json_and_keep_their_digits():
    ex = p(b'{"id": 99999999999999999999, "instruction": "x", "output": "y", "metadata": {"n": 18446744073709551616}}')
    assert ex.id == "99999999999999999999"  # orjson alone would make it 1e20
    assert ex.metadata == {"n": "18446744073709551616"}  # beyond 64 bits: kept as digits
    orjson.dumps(ex.metadata)
    out = p(b'{"instruction": "x", "output": "y", "metadata": {"n": NaN}}')
    assert isinstance(out, ParseFailure) and out.reason == Reason.INVALID_JSON


def test_role_case_and_overlong_ids():
    ex = p({"messages": [{"role": "USER", "content": "q"}, {"role": "Assistant", "content": "a"}]})
    assert [m.role for m in ex.messages] == ["user", "assistant"]
    out = p({"id": "x" * 600, "instruction": "q", "output": "a"})
    assert isinstance(out, ParseFailure) and out.reason == Reason.SCHEMA_ERROR and "600" in out.error
    assert out.id == "in.jsonl:7"  # the origin id, not the unusable one
    out = p({"source": "s" * 300, "instruction": "q", "output": "a"})
    assert isinstance(out, ParseFailure) and out.reason == Reason.SCHEMA_ERROR
