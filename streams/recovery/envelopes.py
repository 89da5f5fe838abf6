"""Envelopes read back at start-up, turned into what the state replays: examples and scores."""

from __future__ import annotations

import dataclasses

import orjson

from quality.envelope import Decision
from quality.features import Features
from quality.records import Example, ParseFailure, RawRecord, parse
from quality.stage import ScoredInput


def example_from_envelope(env: dict) -> Example | None:
    """The accepted example of an envelope, as the pipeline saw it (id, source, metadata kept),
    with the state features the envelope carries (the embedding: see :func:`state_features`)."""
    canonical = env.get("example")
    if not isinstance(canonical, dict):
        return None
    obj = {**canonical, "id": env.get("id"), "source": env.get("source"), "metadata": env.get("metadata")}
    parsed = parse(RawRecord(orjson.dumps(obj), dict(env.get("origin") or {})), max_message_bytes=1 << 40)
    if isinstance(parsed, ParseFailure):
        return None
    # the canonical example is already split into turns: what the first parse converted is on the envelope
    converted = env.get("converted")
    ex = dataclasses.replace(parsed, id=str(env.get("id")),
                             converted=dict(converted) if isinstance(converted, dict) else parsed.converted)
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
