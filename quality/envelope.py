"""Decisions and their envelopes: the one output record of Sieve, built and encoded here.

Both drivers write what :meth:`Decision.envelope` builds and :func:`encode_envelope`
encodes: file mode (``quality/filemode.py``) without a size limit, the stream worker
with ``kafka.max_output_bytes``. A dead letter carries its raw payload (UTF-8 text or
base64, cut past :data:`DEAD_LETTER_RAW_BYTES`) and the error text.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import orjson

from quality.records import Example

DecisionKind = Literal["accepted", "rejected", "dead_letter"]
DEAD_LETTER_RAW_BYTES = 64 * 1024  # raw payloads larger than this are truncated in dead letters


@dataclass(slots=True)
class Decision:
    """The outcome for one input record."""

    id: str
    decision: DecisionKind
    reasons: list[str]
    scores: dict[str, float]
    origin: Mapping[str, Any]
    example: Example | None = None
    details: dict[str, str] = field(default_factory=dict)
    raw: bytes | str | None = None
    error: str | None = None
    overridden: dict[str, Any] | None = None  # an operator's override: who, why, what it overruled

    def envelope(self, versions: Mapping[str, Any]) -> dict[str, Any]:
        """The output record of the design: one per input, on one of the three outputs."""
        env: dict[str, Any] = {
            "id": self.id,
            "decision": self.decision,
            "reasons": self.reasons,
            "scores": self.scores,
            "example": self.example.canonical() if self.example is not None else None,
            "origin": dict(self.origin),
            "versions": versions,
        }
        if self.example is not None:
            env["source"] = self.example.source
            if self.example.metadata:
                env["metadata"] = self.example.metadata
        if self.details:
            env["details"] = self.details
        if self.overridden:
            env["overridden"] = self.overridden
        if self.decision == "dead_letter":
            env["error"] = self.error
            env.update(_raw_fields(self.raw))
        return env


def _raw_fields(raw: bytes | str | None) -> dict[str, Any]:
    if raw is None:
        return {"raw": None}
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    out: dict[str, Any] = {"raw_bytes": len(data)}
    if len(data) > DEAD_LETTER_RAW_BYTES:
        data = data[:DEAD_LETTER_RAW_BYTES]
        out["raw_truncated"] = True
    try:
        out["raw"] = data.decode("utf-8")
        out["raw_encoding"] = "utf-8"
    except UnicodeDecodeError:
        out["raw"] = base64.b64encode(data).decode("ascii")
        out["raw_encoding"] = "base64"
    return out


#: Error text kept in an envelope that had to be shrunk.
MAX_ERROR_CHARS = 4096


class OutputTooLarge(RuntimeError):
    """An accepted envelope does not fit in one output record even without its metadata."""


def encode_envelope(env: dict[str, Any], limit: int | None = None) -> bytes:
    """The envelope as JSON bytes; with a ``limit``, of at most ``limit`` bytes.

    Rejected and dead-letter envelopes that are too large lose, in turn, their
    example, their raw payload and most of their error text, and say so in an
    ``omitted`` field. An accepted envelope can only lose its metadata; an accepted
    example that alone is too large raises :class:`OutputTooLarge` (lower
    ``pipeline.filters.max_total_chars`` or raise ``kafka.max_output_bytes``).
    """
    data = orjson.dumps(env, option=orjson.OPT_SERIALIZE_NUMPY)
    if limit is None or len(data) <= limit:
        return data
    size = len(data)
    env = dict(env)
    steps = ["metadata"] if env.get("decision") == "accepted" else ["example", "raw", "error", "metadata"]
    dropped = []
    for key in steps:
        if env.get(key) is None:
            continue
        env[key] = env[key][:MAX_ERROR_CHARS] if key == "error" else None
        dropped.append(key)
        env["omitted"] = (f"envelope was {size} bytes, over kafka.max_output_bytes={limit}; "
                          f"dropped or cut: {', '.join(dropped)}")
        data = orjson.dumps(env, option=orjson.OPT_SERIALIZE_NUMPY)
        if len(data) <= limit:
            return data
    raise OutputTooLarge(f"the {env.get('decision')} envelope of {env.get('id')!r} is {len(data)} bytes, over "
                         f"kafka.max_output_bytes={limit}; lower pipeline.filters.max_total_chars or raise "
                         "kafka.max_output_bytes (and the topic's max.message.bytes)")


def encode_output(d: Decision, versions: Mapping[str, Any], limit: int | None = None) -> tuple[DecisionKind, bytes]:
    """Where a decision's envelope goes and its bytes. An envelope that cannot fit in
    ``limit`` even after shrinking becomes a small ``too_large`` dead letter instead:
    bad input must not stop a driver (a restart would meet the same input again)."""
    try:
        return d.decision, encode_envelope(d.envelope(versions), limit)
    except OutputTooLarge as exc:
        return "dead_letter", orjson.dumps({"id": d.id, "decision": "dead_letter", "reasons": ["too_large"],
                                            "scores": {}, "example": None, "origin": dict(d.origin), "raw": None,
                                            "error": f"{exc} (pipeline decision was {d.decision}: {d.reasons})",
                                            "versions": versions})
