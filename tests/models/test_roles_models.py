"""The two stages with the real encoder: the embedding crosses sieve.scored as float16 and comes back bit
for bit, so a scorer plus a decider decide as the whole pipeline, semantic duplicates included; and a
decider rebuilds semantic dedup from accepted envelopes without a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from quality.config import PipelineSettings, load
from quality.envelope import encode_output
from quality.records import RawRecord
from streams.assemble import build_pipeline
from streams.recovery.envelopes import example_from_envelope, state_features
from streams.roles.scored import decode_scored, encode_scored
from streams.worker.loop import Stage1

pytestmark = pytest.mark.models

SLICE = Path(__file__).parents[1] / "data" / "stream_slice.jsonl"


def rows(n: int) -> list[bytes]:
    lines = [x for x in SLICE.read_bytes().splitlines() if x.strip()][:n]
    out = list(lines)
    for line in lines[:12:3]:  # a reworded copy: the same meaning in other words (a semantic duplicate)
        obj = orjson.loads(line)
        key = "output" if "output" in obj else None
        if key:
            obj["output"] = "In other words: " + obj[key]
            obj["id"] = f"{obj['id']}-reworded"
            out.append(orjson.dumps(obj))
    return out


@pytest.fixture(scope="module")
def settings():
    return load(PipelineSettings, env={}, overrides={"scoring.device": "cpu"})


def test_scorer_and_decider_with_the_encoder_decide_as_the_whole_pipeline(settings, encoder):
    payloads = rows(40)
    raws = [RawRecord(p, {"topic": "raw", "topic_id": "t", "partition": 0, "offset": i})
            for i, p in enumerate(payloads)]
    whole = build_pipeline(settings).process(raws)
    scorer, decider = Stage1(build_pipeline(settings)), build_pipeline(settings).phase("decide")
    records = [encode_scored(d, scorer.score.versions(), 1_000_000) for d in scorer.process(raws)]
    scored = [decode_scored(r, {"topic": "s", "partition": 0, "offset": i}) for i, r in enumerate(records)]
    pending = [s for s in scored if not s.final]
    assert all(s.example.features.embedding is not None and s.example.features.quality is not None for s in pending)
    decided = iter(decider.process_examples([(s.example, s.scores, s.details) for s in pending]))
    got = [(orjson.loads(s.final[1])["decision"], orjson.loads(s.final[1])["reasons"]) if s.final
           else (lambda d: (d.decision, d.reasons))(next(decided)) for s in scored]
    assert got == [(d.decision, d.reasons) for d in whole]
    assert any(d.decision == "accepted" for d in whole)


def test_accepted_envelopes_carry_the_embedding_and_a_decider_rebuilds_semantic_dedup_without_a_model(settings,
                                                                                                       encoder):
    from streams.config import Settings
    from streams.roles.run_decider import decide_pipeline_factory

    raws = [RawRecord(p, {"file": "f", "line": i}) for i, p in enumerate(rows(12))]
    first = build_pipeline(settings)
    accepted = [d for d in first.process(raws) if d.decision == "accepted"]
    envelopes = [orjson.loads(encode_output(d, first.versions(), None, extra=state_features(d))[1]) for d in accepted]
    assert all(len(e["features"]["embedding"]) < 1100 for e in envelopes)  # 384 float16 values as base64
    back = [example_from_envelope(e) for e in envelopes]
    for ex, d in zip(back, accepted):
        np.testing.assert_array_equal(ex.features.embedding, d.example.features.embedding)
    full = Settings(pipeline=settings)
    decider = decide_pipeline_factory(full)()  # no model stage: it could not re-encode
    decider.warm(back)
    semantic = next(s for s in decider.stages if s.name == "semantic_dedup")
    assert semantic.size() == len(accepted)
