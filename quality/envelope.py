"""Decisions and their envelopes: the one output record of Sieve, built and encoded here.

Both drivers write what :meth:`Decision.envelope` builds and :func:`encode_output`
encodes: file mode (``quality/filemode/``) without a size limit, the stream worker
with ``kafka.max_output_bytes``. A dead letter carries its raw payload and the error text,
PII-redacted by default (:class:`~quality.privacy.DeadLetterPrivacy`: the decision's
``privacy``, which the pipeline sets from ``[pipeline.pii]``; a decision built without one
is redacted with the defaults), cut past :data:`DEAD_LETTER_RAW_BYTES`. An example whose
transcript-style prompt was split into turns says so in ``converted`` (field -> convention).

Encoding is total (:func:`encode_decision`): whatever a decision holds, it gives bytes
that orjson writes and reads back. A decision whose envelope cannot be written (a lone
surrogate that slipped past parsing, a value orjson does not know, nesting past
orjson's 254 levels) becomes a small ``unencodable`` dead letter naming the stage
``envelope`` and the exception, and one too large for ``limit`` a ``too_large`` one;
such a stand-in keeps only the id, the origin and the raw payload (base64 when it is
not UTF-8), each made safe, so its own encoding cannot fail. The pipeline passes every
decision it returns through :func:`writable`, so both drivers write the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import orjson

from quality.privacy import DEFAULT_DEAD_LETTERS, DeadLetterPrivacy
from quality.reasons import Reason
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
    # how a dead letter's payload, error and example are written (None: redacted, the defaults)
    privacy: DeadLetterPrivacy | None = None
    # a dead letter's written fields, computed once (redaction is not free); its findings go to scores
    _dead_letter: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def envelope(self, versions: Mapping[str, Any]) -> dict[str, Any]:
        """The output record of the design: one per input, on one of the three outputs."""
        dead = self.dead_letter_fields() if self.decision == "dead_letter" else None
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
            if self.example.converted:
                env["converted"] = dict(self.example.converted)
        if self.details:
            env["details"] = self.details
        if self.overridden:
            env["overridden"] = self.overridden
        if dead is not None:
            env.update(dead)
        return env

    def dead_letter_fields(self) -> dict[str, Any]:
        """A dead letter's ``error``, ``example``, ``metadata`` and ``raw*`` fields as written (redacted unless
        ``privacy`` says ``keep``); the findings redacted are added to ``scores`` as ``pii_<kind>``, once."""
        if self._dead_letter is None:
            example = None
            if self.example is not None:
                example = {"example": self.example.canonical(), "metadata": dict(self.example.metadata)}
            fields, counts = (self.privacy or DEFAULT_DEAD_LETTERS).fields(self.raw, self.error, example,
                                                                         DEAD_LETTER_RAW_BYTES)
            example = fields.pop("example")
            if example is not None:
                fields["example"] = example["example"]
                if example["metadata"]:
                    fields["metadata"] = example["metadata"]
            for kind, n in counts.items():
                self.scores[f"pii_{kind}"] = self.scores.get(f"pii_{kind}", 0.0) + n
            self._dead_letter = fields
        return self._dead_letter


#: Error text kept in an envelope that had to be shrunk.
MAX_ERROR_CHARS = 4096
#: Error text an envelope's stand-in (``unencodable``, ``too_large``) keeps.
MAX_STAND_IN_ERROR_CHARS = 2048


class OutputTooLarge(RuntimeError):
    """An accepted envelope does not fit in one output record even without its metadata."""


def encode_envelope(env: dict[str, Any], limit: int | None = None) -> bytes:
    """The envelope as JSON bytes; with a ``limit``, of at most ``limit`` bytes.

    Rejected and dead-letter envelopes that are too large lose, in turn, their
    example, their raw payload and most of their error text, and say so in an
    ``omitted`` field. An accepted envelope can only lose its metadata; an accepted
    example that alone is too large raises :class:`OutputTooLarge` (lower
    ``pipeline.filters.max_total_chars`` or raise ``kafka.max_output_bytes``).

    Raises:
        OutputTooLarge: see above.
        TypeError, ValueError: orjson cannot write the envelope (:func:`encode_decision`
            turns that into an ``unencodable`` dead letter).
    """
    data = dumps(env)
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
        data = dumps(env)
        if len(data) <= limit:
            return data
    raise OutputTooLarge(f"the {env.get('decision')} envelope of {env.get('id')!r} is {len(data)} bytes, over "
                         f"kafka.max_output_bytes={limit}; lower pipeline.filters.max_total_chars or raise "
                         "kafka.max_output_bytes (and the topic's max.message.bytes)")


def dumps(env: Mapping[str, Any]) -> bytes:
    """The envelope as JSON bytes (numpy scalars included), checked to read back."""
    data = orjson.dumps(env, option=orjson.OPT_SERIALIZE_NUMPY)
    orjson.loads(data)
    return data


def safe_text(value: Any, limit: int | None = None) -> str:
    """``value`` as a string that is valid Unicode: lone surrogates become ``\\udxxx`` text."""
    text = value if isinstance(value, str) else repr(value)
    if limit is not None:
        text = text[:limit]
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_origin(origin: Mapping[str, Any]) -> dict[str, Any]:
    """The origin with every key a safe string and every value a safe scalar (offsets stay integers)."""
    out: dict[str, Any] = {}
    for key, value in dict(origin).items():
        if isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            value = value if -(1 << 63) <= value < (1 << 64) else str(value)
        elif isinstance(value, float):
            value = value if value == value and abs(value) != float("inf") else repr(value)
        else:
            value = safe_text(value, 4096)
        out[safe_text(key, 256)] = value
    return out


def stand_in(d: Decision, reason: Reason, error: str) -> Decision:
    """A small dead letter in place of ``d``: its id, origin and raw payload made safe, the reason and error."""
    error = safe_text(f"{error} (pipeline decision was {d.decision}: "
                      f"{', '.join(map(str, d.reasons)) or 'no reason'})", MAX_STAND_IN_ERROR_CHARS)
    return Decision(safe_text(d.id, 1024), "dead_letter", [reason.value], {}, safe_origin(d.origin), raw=d.raw,
                    error=error, privacy=d.privacy)


def unencodable(d: Decision, exc: BaseException) -> Decision:
    """The ``unencodable`` dead letter that stands for ``d`` when its envelope cannot be written."""
    return stand_in(d, Reason.UNENCODABLE, f"stage envelope: {type(exc).__name__}: {exc}")


def last_resort(stand: Decision, versions: Mapping[str, Any], exc: BaseException) -> bytes:
    """Bytes of a stand-in dead letter without any size limit; if even that fails (the versions
    cannot be written), with ``versions`` replaced by the error. ``stand`` holds only safe text."""
    try:
        return dumps(stand.envelope(versions))
    except Exception:  # noqa: BLE001 - the bare envelope below holds only safe text
        try:
            env = stand.envelope({})
            env["versions"] = {"error": safe_text(f"{type(exc).__name__}: {exc}", MAX_STAND_IN_ERROR_CHARS)}
        except Exception as again:  # noqa: BLE001 - redacting failed: write nothing that could carry the payload
            env = {"id": stand.id, "decision": "dead_letter", "reasons": stand.reasons, "scores": {}, "example": None,
                   "origin": stand.origin, "raw": None, "versions": {"error": type(exc).__name__},
                   "error": f"stage envelope: {type(again).__name__} while redacting (payload and error text withheld)"}
        return orjson.dumps(env)


def encode_decision(d: Decision, versions: Mapping[str, Any], limit: int | None = None) -> tuple[Decision, bytes]:
    """The decision actually written (``d``, or its dead-letter stand-in) and its envelope's bytes; never raises.

    An envelope that cannot fit in ``limit`` even after shrinking becomes a small
    ``too_large`` dead letter, and one that orjson cannot write an ``unencodable`` one:
    bad input must not stop a driver (a restart would meet the same input again).
    """
    try:
        return d, encode_envelope(d.envelope(versions), limit)
    except OutputTooLarge as exc:
        out = stand_in(d, Reason.TOO_LARGE, str(exc))
    except Exception as exc:  # noqa: BLE001 - orjson's TypeError/ValueError, or a bug building the envelope
        out = unencodable(d, exc)
    try:
        return out, encode_envelope(out.envelope(versions), limit)
    except Exception as again:  # noqa: BLE001 - a limit below even a shrunk stand-in, or unwritable versions
        return out, last_resort(out, versions, again)


def writable(d: Decision, versions: Mapping[str, Any]) -> Decision:
    """``d`` if its envelope can be written, else its ``unencodable`` stand-in (what the pipeline returns)."""
    return encode_decision(d, versions)[0]


def encode_output(d: Decision, versions: Mapping[str, Any], limit: int | None = None) -> tuple[DecisionKind, bytes]:
    """Where a decision's envelope goes and its bytes (:func:`encode_decision`, which never raises)."""
    written, data = encode_decision(d, versions, limit)
    return written.decision, data
