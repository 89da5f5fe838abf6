"""Payloads a producer can send that once stopped Sieve, or might: the poison corpus.

Shared by the unit tests (pipeline and encoder), the file-mode test and the stream
test through the real broker. Each entry is ``(name, payload, expected)`` where
``expected`` is ``(decision, first reason)`` when the outcome is fixed, or ``None`` when
only the invariant matters (exactly one envelope that orjson encodes and decodes).

Kafka-only cases (a ``None`` value, keys that are not UTF-8, headers) live in the stream
test: a JSONL line cannot carry them.
"""

from __future__ import annotations

import orjson

OK_TEXT = {"instruction": "Explain why the sky looks blue on a clear day.",
           "output": "Sunlight scatters off air molecules, and blue light scatters the most."}
BIG_INT = b"12345678901234567890123"  # over 64 bits: parsed by the standard library, kept as digits


def _alpaca(extra: bytes = b"", *, instruction: bytes = b'"Explain \\ud800 this"') -> bytes:
    return b'{"instruction":' + instruction + b',"output":"A fine answer to the question."' + extra + b"}"


def _nest(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def poison_payloads() -> list[tuple[str, bytes, tuple[str, str] | None]]:
    """Every known breaker and its relatives, one payload each."""
    ok = orjson.dumps(OK_TEXT)[:-1]  # the object without its closing brace, to add fields
    deep_meta = lambda d: ok + b',"metadata":{"a":' + _nest(d) + b"}}"  # noqa: E731 - depth of the whole payload: d + 2
    return [
        # lone surrogates: the standard-library fallback (taken for big integers) accepts them
        ("surrogate+bigint", _alpaca(b',"metadata":{"order":' + BIG_INT + b"}"), ("dead_letter", "invalid_utf8")),
        ("surrogate", _alpaca(), ("dead_letter", "invalid_utf8")),
        ("surrogate in key", ok + b',"metadata":{"\\udc00":' + BIG_INT + b"}}", ("dead_letter", "invalid_utf8")),
        ("surrogate in id", ok + b',"id":"a\\ud801b","n":' + BIG_INT + b"}", ("dead_letter", "invalid_utf8")),
        ("surrogate in source", ok + b',"source":"\\udfff","n":' + BIG_INT + b"}", ("dead_letter", "invalid_utf8")),
        ("surrogate in ignored field", ok + b',"x":["\\ud800"],"n":' + BIG_INT + b"}", ("dead_letter", "invalid_utf8")),
        ("surrogate in content part", b'{"messages":[{"role":"user","content":[{"type":"text","text":"hi \\ud800"}]},'
         b'{"role":"assistant","content":"Hello there, friend."}],"n":' + BIG_INT + b"}",
         ("dead_letter", "invalid_utf8")),
        ("reversed surrogate pair", _alpaca(b',"n":' + BIG_INT, instruction=b'"\\udc00\\ud800 x"'),
         ("dead_letter", "invalid_utf8")),
        ("valid surrogate pair (emoji)", _alpaca(b',"n":' + BIG_INT, instruction=b'"Explain \\ud83d\\ude00 emoji use"'),
         None),
        # nesting: orjson reads 1,024 levels but writes 254
        ("metadata 300 deep", deep_meta(298), ("dead_letter", "too_deep")),
        ("metadata 1024 deep", deep_meta(1020), ("dead_letter", "too_deep")),
        ("metadata 1024 deep+bigint", ok + b',"n":' + BIG_INT + b',"metadata":{"a":' + _nest(1020) + b"}}",
         ("dead_letter", "too_deep")),
        ("metadata 66 deep", deep_meta(64), ("dead_letter", "too_deep")),
        ("metadata 64 deep", deep_meta(62), None),
        ("deep in ignored field", ok + b',"extra":' + _nest(500) + b"}", ("dead_letter", "too_deep")),
        ("deep in content part", b'{"messages":[{"role":"user","content":[{"type":"text","text":"hi","x":'
         + _nest(400) + b'}]},{"role":"assistant","content":"Hello there."}]}', ("dead_letter", "too_deep")),
        ("deep array alone", _nest(2000), ("dead_letter", "too_deep")),
        ("deep array+bigint", _nest(2000, BIG_INT), ("dead_letter", "too_deep")),
        ("deep objects", b'{"a":' * 1000 + b"1" + b"}" * 1000, ("dead_letter", "too_deep")),
        # numbers
        ("1e400", ok + b',"metadata":{"x":1e400}}', ("dead_letter", "invalid_json")),
        ("1e400+bigint", ok + b',"metadata":{"x":1e400,"n":' + BIG_INT + b"}}", ("dead_letter", "invalid_json")),
        ("-1e400+bigint", ok + b',"metadata":{"x":-1e400,"n":' + BIG_INT + b"}}", ("dead_letter", "invalid_json")),
        ("-0.0", ok + b',"metadata":{"x":-0.0}}', None),
        ("NaN", ok + b',"metadata":{"x":NaN}}', ("dead_letter", "invalid_json")),
        ("Infinity+bigint", ok + b',"metadata":{"x":Infinity,"n":' + BIG_INT + b"}}", ("dead_letter", "invalid_json")),
        ("10k-digit integer", ok + b',"metadata":{"x":' + b"7" * 10_000 + b"}}", None),
        ("10k-digit float", ok + b',"metadata":{"x":' + b"7" * 10_000 + b".5}}", ("dead_letter", "invalid_json")),
        ("10k-digit fraction", ok + b',"metadata":{"x":0.' + b"7" * 10_000 + b"}}", None),
        ("tiny float", ok + b',"metadata":{"x":1e-400,"n":' + BIG_INT + b"}}", None),
        # sizes
        ("100k metadata keys", ok + b',"metadata":{' + b",".join(b'"%x":0' % i for i in range(100_000))
         + b"}}", None),
        ("long key", ok + b',"metadata":{"' + b"k" * 200_000 + b'":1}}', None),
        ("100k messages", b'{"messages":[' + b'{"role":"user","content":"q"},' * 100_000
         + b'{"role":"assistant","content":"a"}]}', ("dead_letter", "too_large")),  # 3 MB
        ("30k messages", b'{"messages":[' + b'{"role":"user","content":"q"},' * 30_000
         + b'{"role":"assistant","content":"a"}]}', None),
        # bytes
        ("utf-8 BOM", b"\xef\xbb\xbf" + orjson.dumps(OK_TEXT | {"id": "bom"}), None),
        ("raw NUL", ok + b',"metadata":{"x":"a\x00b"}}', ("dead_letter", "invalid_json")),
        ("escaped NUL", ok[:-1] + b'\\u0000"}', None),
        ("overlong utf-8", ok + b',"metadata":{"x":"\xc0\xaf"}}', ("dead_letter", "invalid_utf8")),
        ("encoded surrogate bytes", ok + b',"metadata":{"x":"\xed\xa0\x80"}}', ("dead_letter", "invalid_utf8")),
        ("latin-1", _alpaca(instruction=b'"caf\xe9"'), ("dead_letter", "invalid_utf8")),
        ("empty", b"", ("dead_letter", "invalid_json")),
        ("whitespace", b"   ", ("dead_letter", "invalid_json")),
        ("duplicate keys", b'{"instruction":"a","instruction":"Say something kind to a friend.",'
         b'"output":"You are doing great, and I am glad to know you."}', None),
        # ids, roles and content parts of odd types
        ("id true", ok + b',"id":true}', ("dead_letter", "schema_error")),
        ("id float", ok + b',"id":1.5}', ("dead_letter", "schema_error")),
        ("id list", ok + b',"id":[1]}', ("dead_letter", "schema_error")),
        ("id object", ok + b',"id":{"a":1}}', ("dead_letter", "schema_error")),
        ("id huge int", ok + b',"id":' + BIG_INT + b"}", None),
        ("id 600-digit int", ok + b',"id":' + b"9" * 600 + b"}", ("dead_letter", "schema_error")),
        ("id with NUL", ok + b',"id":"a\\u0000b"}', None),
        ("role number", b'{"messages":[{"role":1,"content":"q"},{"role":"assistant","content":"a"}]}',
         ("dead_letter", "schema_error")),
        ("role null", b'{"conversations":[{"from":null,"value":"q"},{"from":"gpt","value":"a"}]}',
         ("dead_letter", "schema_error")),
        ("content part int", b'{"messages":[{"role":"user","content":[1]},{"role":"assistant","content":"a"}]}',
         ("dead_letter", "schema_error")),
        ("content part text list", b'{"messages":[{"role":"user","content":[{"type":"text","text":["x"]}]},'
         b'{"role":"assistant","content":"a"}]}', ("dead_letter", "schema_error")),
        ("content object", b'{"messages":[{"role":"user","content":{"text":"x"}},{"role":"assistant","content":"a"}]}',
         ("dead_letter", "schema_error")),
        ("metadata string", ok + b',"metadata":"x"}', ("dead_letter", "schema_error")),
        ("source list", ok + b',"source":["a"]}', ("dead_letter", "schema_error")),
        ("pair of objects", b'{"prompt":{"a":1},"chosen":"x","rejected":"y"}', ("dead_letter", "schema_error")),
        ("top-level number", BIG_INT, ("dead_letter", "not_an_object")),
        ("top-level null", b"null", ("dead_letter", "not_an_object")),
    ]
