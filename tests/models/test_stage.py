"""The model stage in the real pipeline: real MiniLM on CPU, the shipped default heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from models import DEFAULT_HEAD_DIR
from models.heads import load_head
from models.stage import ModelScoreStage, embedding_text
from quality.config import PipelineSettings
from quality.features import half_precision
from quality.filters.pairs import PairStructureFilter
from quality.pipeline import Pipeline
from quality.records import RawRecord
from quality.scoring.gate import QualityGate, ScoringSettings
from quality.scoring.margin import PairMarginCheck
from quality.scoring.thresholds import FixedThreshold, ThresholdPolicy, WindowQuota
from streams.assemble import build_pipeline

pytestmark = pytest.mark.models

DATA = Path(__file__).parents[1] / "data"
ROWS = [
    {"id": "a", "instruction": "Name the capital of France.", "output": "The capital of France is Paris."},
    {"id": "b", "instruction": "Convert 5 km to metres.", "output": "5 km is 5,000 metres."},
    {"id": "p", "prompt": "Name a colour.", "chosen": "Blue is a colour.", "rejected": "I like trains."},
    {"id": "c", "messages": [{"role": "user", "content": "Write a haiku about rain."},
                             {"role": "assistant", "content": "Soft rain on the roof\nwhispers to the sleeping town\n"
                                                              "puddles hold the sky"}]},
]


def raws(rows):
    return [RawRecord(orjson.dumps(r), {"file": "t", "line": i + 1}) for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def heads():
    return load_head(DEFAULT_HEAD_DIR, "quality"), load_head(DEFAULT_HEAD_DIR, "reward")


def test_every_example_gets_its_scores_and_embedding(encoder, heads):
    stage = ModelScoreStage(encoder, quality_head=heads[0], reward_head=heads[1])
    out = Pipeline([stage, QualityGate(ThresholdPolicy(FixedThreshold(0.0)))]).process(raws(ROWS))
    assert [d.decision for d in out] == ["accepted"] * 4
    for d in out:
        assert 0.0 <= d.scores["quality"] <= 1.0
        emb = d.example.features.embedding
        assert emb.dtype == np.float32 and emb.shape == (384,)
        # the stage stores float16 values (they cross sieve.scored as float16, bit for bit), within
        # float16's precision (~5e-5 here) of the encoder's output
        np.testing.assert_array_equal(emb, half_precision(emb))
        np.testing.assert_allclose(emb, encoder.encode([embedding_text(d.example)])[0], atol=1e-4)
    assert {"reward"} <= set(out[0].scores)
    pair = out[2].scores
    assert pair["reward_margin"] == pytest.approx(pair["reward_chosen"] - pair["reward_rejected"], abs=1e-5)
    assert out[2].example.features.reward_margin == pytest.approx(pair["reward_margin"], abs=1e-5)
    assert stage.stats.seen == 4


def test_low_quality_rejects_sft_only(encoder, heads):
    """The model scores; the quality gate after it decides (it needs no model)."""
    stage = ModelScoreStage(encoder, quality_head=heads[0])
    gate = QualityGate(ThresholdPolicy(FixedThreshold(1.01)))
    out = Pipeline([stage, gate]).process(raws(ROWS))
    assert [(d.decision, d.reasons) for d in out] == [("rejected", ["low_quality"])] * 2 + [("accepted", [])] + \
        [("rejected", ["low_quality"])]
    assert gate.stats.rejected == {"low_quality": 3} and stage.stats.rejected == {}
    gated = QualityGate(ThresholdPolicy(FixedThreshold(1.01)), apply_quality_to_pairs=True)
    assert Pipeline([stage, gated]).process(raws(ROWS[2:3]))[0].reasons == ["low_quality"]


def test_quota_per_source_follows_input_order(encoder, heads):
    answers = ["Paris.", "It is Paris, the capital and largest city of France.", "Lyon.", "France has no capital.",
               "Paris is the capital of France; it sits on the Seine.", "I think it might be Marseille or Paris."]
    rows = [{"id": f"x{i}", "source": "web", "instruction": "Name the capital of France.", "output": a}
            for i, a in enumerate(answers)] + [{**ROWS[0], "id": "y", "source": "ok"}]
    policy = ThresholdPolicy(FixedThreshold(0.0), {"web": WindowQuota(0.5, window=3, min_history=2)})
    out = Pipeline([ModelScoreStage(encoder, quality_head=heads[0]), QualityGate(policy)]).process(raws(rows))
    scores = [d.scores["quality"] for d in out[:6]]
    assert len(set(scores)) == 6
    replay = WindowQuota(0.5, window=3, min_history=2)  # the same policy fed the same scores in input order
    expected = ["accepted" if replay.keep(s) else "rejected" for s in scores]
    assert [d.decision for d in out[:6]] == expected
    assert {"accepted", "rejected"} <= set(expected[2:])
    assert out[6].decision == "accepted"  # another source: the default threshold (0.0)


def test_scores_do_not_depend_on_batch_composition(encoder, heads):
    stage = ModelScoreStage(encoder, quality_head=heads[0], reward_head=heads[1])
    together = Pipeline([stage]).process(raws(ROWS))
    alone = [Pipeline([stage]).process(raws([r]))[0] for r in ROWS]
    for a, b in zip(together, alone):
        for k in a.scores:
            assert a.scores[k] == pytest.approx(b.scores[k], abs=1e-4)


def test_real_hh_pairs_structure_and_margin(encoder, heads):
    rows = [orjson.loads(line) for line in (DATA / "hh_pair_structure.jsonl").read_bytes().splitlines()]
    stages = [PairStructureFilter(), ModelScoreStage(encoder, quality_head=heads[0], reward_head=heads[1]),
              PairMarginCheck(min_margin=-1e9)]
    out = Pipeline(stages).process(raws(rows))
    for row, d in zip(rows, out):
        expected = row["metadata"]["expected"]
        assert d.reasons == ([] if expected == "valid" else [expected]), row["id"]
    strict = [PairStructureFilter(), ModelScoreStage(encoder, quality_head=heads[0], reward_head=heads[1]),
              PairMarginCheck(min_margin=1e9)]
    valid = [r for r in rows if r["metadata"]["expected"] == "valid"]
    assert {tuple(d.reasons) for d in Pipeline(strict).process(raws(valid))} == {("pair_low_margin",)}


def test_build_pipeline_orders_the_stages_and_scores_in_score_mode():
    settings = PipelineSettings(scoring=ScoringSettings(device="cpu", batch_size=16, quality_threshold=1.01))
    pipe = build_pipeline(settings, score_mode=True)
    names = [s.name for s in pipe.stages]
    assert names.index("pair_structure") < names.index("model_score") < names.index("quality_gate") \
        < names.index("pair_margin")
    if "semantic_dedup" in names:
        assert names.index("model_score") < names.index("semantic_dedup") < names.index("pair_margin")
    out = pipe.process(raws(ROWS + [{**ROWS[2], "id": "same", "rejected": ROWS[2]["chosen"]}]))
    assert all("quality" in d.scores for d in out)
    assert out[-1].reasons[0] == "pair_identical" and "reward_margin" in out[-1].scores
    version = pipe.versions()["stages"]["model_score"]
    assert pipe.versions()["stages"]["quality_gate"]["thresholds"]["default"] == {"kind": "fixed", "threshold": 1.01}
    assert version["quality_head"]["sha256"] == load_head(DEFAULT_HEAD_DIR, "quality").meta["sha256"]


def test_scoring_can_be_switched_off():
    names = [s.name for s in build_pipeline(PipelineSettings(scoring=ScoringSettings(enabled=False))).stages]
    assert "model_score" not in names and "pair_margin" not in names and "pair_structure" in names
    assert "quality_gate" not in names


def test_bad_scoring_settings_are_named():
    with pytest.raises(ValueError, match="quality_quota"):
        QualityGate.from_settings(ScoringSettings(device="cpu", quality_quota=1.5))
    with pytest.raises(ValueError, match="per_source"):
        QualityGate.from_settings(ScoringSettings(device="cpu", per_source=("web",)))
    with pytest.raises(ValueError, match="quality_quota"):  # and so does building the whole pipeline
        build_pipeline(PipelineSettings(scoring=ScoringSettings(device="cpu", quality_quota=1.5)))
    with pytest.raises(ValueError, match="must be a quality head"):
        ModelScoreStage(None, quality_head=load_head(DEFAULT_HEAD_DIR, "reward"))


def test_warmed_pipeline_decides_semantic_duplicates_like_the_one_that_accepted():
    """Recovery replays accepted examples without embeddings: the semantic index must get the
    same vectors the model stage gave them, so a restarted worker decides as the old one."""
    import dataclasses

    import orjson

    from quality.config import PipelineSettings
    from quality.dedup.semantic import SemanticDedupSettings
    from quality.records import RawRecord, parse
    from streams.assemble import build_pipeline

    settings = PipelineSettings(semantic_dedup=SemanticDedupSettings(threshold=0.9),
                                near_dedup=dataclasses.replace(PipelineSettings().near_dedup, enabled=False))
    first = {"id": "a", "instruction": "Explain why the sky looks blue during the day.",
             "output": "Sunlight scatters off air molecules; blue light scatters most (Rayleigh scattering)."}
    again = {"id": "b", "instruction": "Explain why the sky looks blue in the daytime.",
             "output": "Sunlight scatters off air molecules, and blue light scatters the most (Rayleigh scattering)."}
    raw = lambda obj, i: RawRecord(orjson.dumps(obj), {"file": "t", "line": i})  # noqa: E731

    original = build_pipeline(settings)
    assert [d.decision for d in original.process([raw(first, 1)])] == ["accepted"]
    (dup,) = original.process([raw(again, 2)])

    restarted = build_pipeline(settings)
    restarted.warm([parse(raw(first, 1))])  # as recovery does: no features on the example
    (dup_after_restart,) = restarted.process([raw(again, 2)])
    assert dup.reasons == dup_after_restart.reasons == ["duplicate_semantic"]
    assert dup.scores["semantic_similarity"] == pytest.approx(dup_after_restart.scores["semantic_similarity"], abs=1e-4)
