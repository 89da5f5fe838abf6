"""Envelopes read back at start-up, turned into what the state replays: examples and scores."""

from __future__ import annotations

import dataclasses

import orjson

from quality.envelope import Decision
from quality.features import Features
from quality.records import MAX_SOURCE_CHARS, Example, Message, ParseFailure, RawRecord, parse
from quality.stage import ScoredInput


#: Roles of a canonical example (:meth:`quality.records.Example.canonical` writes no other).
_CANONICAL_ROLES = frozenset({"system", "user", "assistant", "tool"})


def example_from_envelope(env: dict) -> Example | None:
    """The accepted example of an envelope, as the pipeline saw it (id, source, metadata kept),
    with the state features the envelope carries (the embedding: see :func:`state_features`)."""
    canonical = env.get("example")
    if not isinstance(canonical, dict):
        return None
    # the canonical example is already split into turns: what the first parse converted is on the envelope
    converted = env.get("converted")
    converted = dict(converted) if isinstance(converted, dict) else {}
    ex = _as_written(canonical, env, converted)
    if ex is None:  # not exactly what Sieve writes (another producer, an older version): parse judges it
        obj = {**canonical, "id": env.get("id"), "source": env.get("source"), "metadata": env.get("metadata")}
        parsed = parse(RawRecord(orjson.dumps(obj), dict(env.get("origin") or {})), max_message_bytes=1 << 40)
        if isinstance(parsed, ParseFailure):
            return None
        ex = dataclasses.replace(parsed, id=str(env.get("id")), converted=converted or parsed.converted)
    carried = env.get("features")
    if isinstance(carried, dict) and carried.get("embedding"):
        try:
            ex.features.embedding = Features.from_dict({"embedding": carried["embedding"]}).embedding
        except ValueError:  # a damaged field: the example is replayed without it (re-encoded if a model runs)
            pass
    return ex


def state_features(d: Decision) -> dict | None:
    """What an accepted envelope carries so that a process without the model rebuilds the
    semantic index from ``sieve.accepted`` alone: the embedding (float16 values, ~1 KB as
    base64 for 384 dimensions). None when there is none (no model stage ran)."""
    if d.decision != "accepted" or d.example is None or d.example.features.embedding is None:
        return None
    return {"features": {"embedding": Features(embedding=d.example.features.embedding).to_dict()["embedding"]}}


def scored_input(env: dict) -> ScoredInput:
    """The kind, source and scores of a decided envelope (what quota windows replay)."""
    example = env.get("example") or {}
    return ScoredInput("preference" if "chosen" in example else "sft", env.get("source"), env.get("scores") or {})


def _messages(value: object) -> tuple[Message, ...] | None:
    if not isinstance(value, list) or not value:
        return None
    out = []
    for m in value:
        if type(m) is not dict or len(m) != 2:
            return None
        role, content = m.get("role"), m.get("content")
        if role not in _CANONICAL_ROLES or type(content) is not str:
            return None
        out.append(Message(role, content))
    return tuple(out)


def _as_written(canonical: dict, env: dict, converted: dict) -> Example | None:
    """The example of a canonical form exactly as :meth:`Example.canonical` writes it, built
    without parsing it again (a decider reads one per input: a second parse was a third of its
    time per decision); None for anything else, which :func:`parse` then judges. Metadata, when
    there is any, goes through the parser (its depth and numbers are checked there)."""
    ex_id, source = env.get("id"), env.get("source")
    if not isinstance(ex_id, str) or env.get("metadata") or not (source is None or isinstance(source, str)) \
            or (source is not None and len(source) > MAX_SOURCE_CHARS):
        return None
    origin = dict(env.get("origin") or {})
    if canonical.keys() == {"messages"}:
        messages = _messages(canonical["messages"])
        if messages is None or messages[-1].role != "assistant" or all(m.role != "user" for m in messages):
            return None
        return Example(ex_id, "sft", "openai", messages, source=source, origin=origin, converted=converted)
    if canonical.keys() == {"prompt", "chosen", "rejected"}:
        prompt, chosen, rejected = (_messages(canonical[k]) for k in ("prompt", "chosen", "rejected"))
        if prompt is None or chosen is None or rejected is None:
            return None
        return Example(ex_id, "preference", "preference", prompt, chosen, rejected, source=source, origin=origin,
                       converted=converted)
    return None
