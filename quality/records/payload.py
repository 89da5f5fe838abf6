"""A raw payload to a JSON value that can be written back out, or the reason it cannot be one.

Bytes must be UTF-8 (a leading byte order mark is ignored, as RFC 8259 allows); an
empty payload (a Kafka tombstone) is no JSON. orjson reads the text, unless it holds
an integer of 19+ digits: orjson turns integers beyond 64 bits into floats (losing
digits of an id), so those payloads go through the standard library, which keeps big
integers exactly (as their digits, in a string) and is made to refuse what orjson
refuses (``NaN``, ``1e400``). Whatever is read must also be writable, since envelopes
carry it back out: lone UTF-16 surrogates anywhere, keys included, are ``invalid_utf8``
(the standard library accepts them) and nesting past :data:`MAX_JSON_DEPTH` anywhere is
``too_deep`` (orjson reads 1,024 levels but writes only 254), even in fields Sieve
ignores.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from quality.reasons import Reason

#: Deepest nesting of arrays and objects in a payload (the top-level object is level 1).
#: orjson reads 1,024 levels but writes only 254; real records stay far below this.
MAX_JSON_DEPTH = 64


class PayloadError(ValueError):
    """The payload cannot be one JSON value that Sieve can write back: ``reason`` and ``message`` say why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def read_payload(payload: bytes | bytearray | memoryview | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of ``payload``.

    Raises:
        PayloadError: ``invalid_utf8``, ``invalid_json`` or ``too_deep``, with what was wrong.
    """
    if isinstance(payload, (bytes, bytearray, memoryview)):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(Reason.INVALID_UTF8, f"not valid UTF-8: {exc}") from None
    else:
        text = payload
    if text.startswith("\ufeff"):  # a UTF-8 byte order mark is no JSON; RFC 8259 lets a parser ignore it
        text = text[1:]
    if not text.strip():
        raise PayloadError(Reason.INVALID_JSON, "empty payload (a Kafka tombstone, or a blank value): "
                           "expected one JSON object per message")
    try:
        obj, by_stdlib = _loads(text)
    except RecursionError as exc:  # the standard library's parser, past Python's recursion limit
        raise PayloadError(Reason.TOO_DEEP, f"{_too_deep(max_depth)} ({exc})") from None
    except (ValueError, TypeError) as exc:
        if "depth limit exceeded" in str(exc):  # orjson reads 1,024 levels at most
            raise PayloadError(Reason.TOO_DEEP, f"{_too_deep(max_depth)} ({exc})") from None
        reason = Reason.INVALID_UTF8 if "surrogate" in str(exc) else Reason.INVALID_JSON
        raise PayloadError(reason, f"not valid JSON: {exc}") from None
    problem = _unrepresentable(obj, text, max_depth, check_strings=by_stdlib)
    if problem is not None:
        raise PayloadError(*problem)
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_LONG_INT = re.compile(r"(?<![\d.eE+-])-?\d{19,}(?![\d.eE])")


def _big_int(text: str) -> int | str:
    """Integers that fit in 64 bits stay integers; longer ones become their digits as a
    string, so envelopes stay serializable (orjson writes 64-bit integers at most).
    Past 20 digits no ``int()`` is tried: CPython refuses to convert more than 4,300."""
    if len(text) > 21:
        return text
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 64) else text


def _finite_float(text: str) -> float:
    """Numbers that overflow a double are an error, as orjson says: ``1e400`` is not ``inf``."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number is infinity when parsed as double: {text[:40]}")
    return value


def _loads(text: str) -> tuple[Any, bool]:
    """The parsed value, and whether the standard library parsed it.

    orjson (fast), unless the text has an integer of 19+ digits: orjson silently turns
    integers beyond 64 bits into floats (losing digits of an id), so those payloads go
    through the standard library, keeping big integers exactly (as strings). The standard
    library accepts lone surrogates, which :func:`_unrepresentable` then rejects."""
    if _LONG_INT.search(text) is None:
        return orjson.loads(text), False
    return json.loads(text, parse_constant=_no_constants, parse_int=_big_int, parse_float=_finite_float), True


def _has_lone_surrogate(s: str) -> bool:
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unrepresentable(obj: Any, text: str, max_depth: int, *, check_strings: bool) -> tuple[Reason, str] | None:
    """Why a parsed payload could not be written back as JSON, or None.

    orjson's reader already refuses lone surrogates (``check_strings`` is for what the
    standard library parsed); orjson's writer stops at 254 levels. The walk runs only
    when it can find something: more than ``max_depth`` brackets in the text, or strings
    to check that hold a non-ASCII character or an escape.
    """
    check_depth = text.count("[") + text.count("{") > max_depth
    check_strings = check_strings and (not text.isascii() or "\\u" in text)
    if not check_depth and not check_strings:
        return None
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = ((None, v) for v in value)
        else:
            if isinstance(value, str) and _has_lone_surrogate(value):
                return Reason.INVALID_UTF8, _surrogate_error(value)
            continue
        if depth > max_depth:
            return Reason.TOO_DEEP, _too_deep(max_depth)
        for key, child in items:
            if key is not None and _has_lone_surrogate(key):
                return Reason.INVALID_UTF8, _surrogate_error(key, "key")
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            elif isinstance(child, str) and _has_lone_surrogate(child):
                return Reason.INVALID_UTF8, _surrogate_error(child)
    return None


def _too_deep(max_depth: int) -> str:
    return (f"arrays and objects nest deeper than {max_depth} levels; flatten the record (metadata too: "
            "Sieve writes every field it keeps back out)")


def _surrogate_error(s: str, what: str = "string") -> str:
    at = next(i for i, c in enumerate(s) if 0xD800 <= ord(c) <= 0xDFFF)
    return (f"a {what} holds a lone UTF-16 surrogate (\\u{ord(s[at]):04x} at character {at}), which is not "
            "Unicode and cannot be written as UTF-8; escape a character outside the BMP as a surrogate pair")
