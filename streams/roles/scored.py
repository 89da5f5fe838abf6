"""The record a scorer writes to ``kafka.scored_topic`` for each input, and the decider's reading of it.

Everything the decider needs and nothing it must recompute (DESIGN.md, "What crosses
``sieve.scored``"):

* an input that stage 1 already decided (a rejection by a score stage, a dead letter) is
  sent as its **final envelope**, built and redacted exactly as an output is (the same
  :func:`quality.envelope.encode_output`, the same size limit). The decider copies those
  bytes to the output topic its ``decision`` names, inside its transaction: every output
  is written once, by the decider;
* an input that passed stage 1 is sent as a **pending** record: the envelope of an
  accepted decision with ``"decision": "pending"`` and its ``features``
  (:meth:`quality.features.Features.to_dict`: content hash, MinHash signature, the
  embedding as float16, the quality and reward scores). The decider rebuilds the
  example from it and runs only the decide stages.

Measured sizes are in docs/streams.md ("What crosses sieve.scored").
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from quality.envelope import Decision, encode_output
from quality.features import Features
from quality.reasons import Reason
from quality.records import Example
from streams.recovery.envelopes import example_from_envelope

log = logging.getLogger(__name__)

#: ``decision`` of a record that passed stage 1 and waits for the decider.
PENDING = "pending"
#: Bytes a scored record may take beyond an output envelope (the features: ~1.8 KB with a
#: 384-dim float16 embedding and a 128-permutation signature). The scored topic is created
#: with ``max.message.bytes`` = ``kafka.max_output_bytes`` + this.
SCORED_EXTRA_BYTES = 64 * 1024
#: Decisions a scored record may carry as final (copied to that output by the decider).
FINAL = ("rejected", "dead_letter")


def encode_scored(d: Decision, versions: Mapping[str, Any], limit: int) -> bytes:
    """The scored record of one stage-1 decision (``accepted`` there means "passed stage 1").

    Args:
        d: the decision of the score half of the pipeline.
        versions: the versions of the whole pipeline (every envelope carries them).
        limit: the largest output envelope (``kafka.max_output_bytes`` less key and framing).
    """
    if d.decision != "accepted":
        _kind, value = encode_output(d, versions, limit)  # the final envelope, as an output is
        return value
    env = d.envelope(versions)
    env["decision"] = PENDING
    if d.example is not None:
        env["features"] = d.example.features.to_dict()
    value = orjson.dumps(env, option=orjson.OPT_SERIALIZE_NUMPY)
    if len(value) <= limit + SCORED_EXTRA_BYTES:
        return value
    # too large even for the scored topic: what the accepted envelope would have become
    _kind, value = encode_output(d, versions, limit)
    return value


@dataclass
class ScoredRecord:
    """One record of the scored topic, read back.

    ``final`` is set for an input stage 1 decided (the envelope's bytes and its decision);
    otherwise ``example`` (normalized, with its features), ``scores`` and ``details`` go to
    the decide stages.
    """

    id: str
    origin: dict[str, Any]
    versions: dict[str, Any]
    final: tuple[str, bytes] | None = None
    example: Example | None = None
    scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    source: str | None = None


def decode_scored(value: bytes | None, where: Mapping[str, Any]) -> ScoredRecord:
    """A scored record from its bytes; ``where`` is its own topic/partition/offset.

    Anything that is not a scored record (another producer wrote to the topic) becomes a
    ``processing_error`` dead letter carrying those bytes: it must not stop the decider.
    """
    try:
        env = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        env = None
    decision = env.get("decision") if isinstance(env, dict) else None
    origin = env.get("origin") if isinstance(env, dict) else None
    if not isinstance(origin, dict) or decision not in (PENDING, *FINAL):
        return _not_scored(value, where, "not a scored record (no origin, or an unknown decision)")
    versions = env.get("versions") if isinstance(env.get("versions"), dict) else {}
    rec = ScoredRecord(str(env.get("id")), origin, versions, reasons=list(env.get("reasons") or []),
                       scores=dict(env.get("scores") or {}), source=env.get("source"))
    if decision in FINAL:
        rec.final = (decision, bytes(value))
        return rec
    ex = example_from_envelope({**env, "features": None})  # the features are read once, below
    if ex is None:
        return _not_scored(value, where, "a pending scored record whose example does not parse back")
    try:
        features = Features.from_dict(env.get("features") or {})
    except (ValueError, AttributeError) as exc:
        return _not_scored(value, where, f"a pending scored record with bad features ({exc})")
    # no second normalize_example: the scorer normalized the example before writing its canonical
    # form, and normalization is idempotent (tests/unit/streams/test_roles.py decides alike)
    rec.example = dataclasses.replace(ex, features=features)
    rec.details = {str(k): str(v) for k, v in (env.get("details") or {}).items()}
    return rec


def _not_scored(value: bytes | None, where: Mapping[str, Any], why: str) -> ScoredRecord:
    log.warning("scored record at %s: %s; dead-lettered", dict(where), why)
    d = Decision(f"{where.get('topic')}:{where.get('partition')}:{where.get('offset')}", "dead_letter",
                 [Reason.PROCESSING_ERROR.value], {}, dict(where), raw=value or b"", error=f"decider: {why}")
    env = d.envelope({})
    return ScoredRecord(d.id, dict(where), {}, final=("dead_letter", orjson.dumps(env)),
                        reasons=list(d.reasons))
