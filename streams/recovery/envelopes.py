"""Envelopes read back at start-up, turned into what the state replays: examples and scores."""

from __future__ import annotations

import dataclasses

import orjson

from quality.records import Example, ParseFailure, RawRecord, parse
from quality.stage import ScoredInput


def example_from_envelope(env: dict) -> Example | None:
    """The accepted example of an envelope, as the pipeline saw it (id, source, metadata kept)."""
    canonical = env.get("example")
    if not isinstance(canonical, dict):
        return None
    obj = {**canonical, "id": env.get("id"), "source": env.get("source"), "metadata": env.get("metadata")}
    parsed = parse(RawRecord(orjson.dumps(obj), dict(env.get("origin") or {})), max_message_bytes=1 << 40)
    if isinstance(parsed, ParseFailure):
        return None
    return dataclasses.replace(parsed, id=str(env.get("id")))


def scored_input(env: dict) -> ScoredInput:
    """The kind, source and scores of a decided envelope (what quota windows replay)."""
    example = env.get("example") or {}
    return ScoredInput("preference" if "chosen" in example else "sft", env.get("source"), env.get("scores") or {})
