"""NearDedup: one minimal input per reason, in-batch duplicates, idempotent commit, snapshots."""

import pytest

from quality.dedup.near import NearDedup
from quality.reasons import Reason
from quality.records import Example, Message

TEXT = ("Write a short story about a lighthouse keeper who finds a message in a bottle, and describe "
        "how the message changes the rest of his quiet life on the rocky island")


def ex(i, prompt, response="Once upon a time there was a keeper.", **kw):
    return Example(str(i), "sft", "alpaca", (Message("user", prompt), Message("assistant", response)), **kw)


def run(stage, batch):
    verdicts = stage(batch)
    stage.commit([e for e, v in zip(batch, verdicts) if v.keep])
    return verdicts


def test_near_duplicate_of_accepted_is_rejected_and_names_it():
    stage = NearDedup(threshold=0.7)
    (v,) = run(stage, [ex("a", TEXT)])
    assert v.keep and v.scores["near_jaccard"] == 0.0
    (v,) = run(stage, [ex("b", TEXT.replace("quiet", "calm"))])
    assert v.reason is Reason.DUPLICATE_NEAR and v.detail == "a"
    assert v.scores["near_jaccard"] >= 0.7
    assert stage.stats.rejected[Reason.DUPLICATE_NEAR.value] == 1


def test_duplicate_within_one_batch_is_rejected():
    stage = NearDedup(threshold=0.7)
    v1, v2, v3 = run(stage, [ex("a", TEXT), ex("b", TEXT + " indeed"), ex("c", "What is the boiling point of water?")])
    assert v1.keep and v3.keep
    assert v2.reason is Reason.DUPLICATE_NEAR and v2.detail == "a"


def test_in_batch_matches_only_kept_examples_and_empty_texts_never_match():
    stage = NearDedup(threshold=0.7)
    batch = [ex("a", TEXT), ex("b", TEXT + " indeed"), ex("c", TEXT + " indeed"),
             ex("d", "", response=""), ex("e", "", response="")]
    va, vb, vc, vd, ve = run(stage, batch)
    assert va.keep and vd.keep and ve.keep
    assert vb.reason is Reason.DUPLICATE_NEAR and vb.detail == "a"
    # c equals the rejected b exactly, but only kept examples are match sources
    assert vc.reason is Reason.DUPLICATE_NEAR and vc.detail == "a" and vc.scores["near_jaccard"] < 1.0


def test_replay_of_the_same_id_is_not_its_own_duplicate_and_commit_is_idempotent():
    stage = NearDedup()
    run(stage, [ex("a", TEXT)])
    stage.commit([ex("a", TEXT)])
    assert len(stage.index) == 1
    (v,) = stage([ex("a", TEXT)])
    assert v.keep


def test_fields_select_the_text():
    prompt_only = NearDedup(threshold=0.9, fields=("prompt",))
    run(prompt_only, [ex("a", TEXT, "answer one, entirely about lighthouses and the sea")])
    (v,) = run(prompt_only, [ex("b", TEXT, "a different answer about bottles, islands and messages")])
    assert v.reason is Reason.DUPLICATE_NEAR
    both = NearDedup(threshold=0.9)
    run(both, [ex("a", TEXT, "answer one, entirely about lighthouses and the sea")])
    (v,) = run(both, [ex("b", TEXT, "a different answer about bottles, islands and messages")])
    assert v.keep


def test_snapshot_restore_decides_the_same(tmp_path):
    stage = NearDedup()
    run(stage, [ex(i, f"{TEXT} variant number {i} with words {i * 7} {i * 13}") for i in range(50)])
    stage.snapshot(tmp_path / "near")
    fresh = NearDedup()
    fresh.restore(tmp_path / "near")
    probe = [ex("p1", f"{TEXT} variant number 3 with words 21 39"), ex("p2", "unrelated question about tax law")]
    assert [(v.reason, v.detail) for v in fresh(probe)] == [(v.reason, v.detail) for v in stage(probe)]
    with pytest.raises(ValueError, match="settings"):
        NearDedup(ngram=4).restore(tmp_path / "near")


def test_remove_and_expire_forget(tmp_path):
    clock = iter([100.0, 200.0]).__next__
    stage = NearDedup(clock=clock)
    run(stage, [ex("a", TEXT)])
    run(stage, [ex("b", "A completely different prompt about cooking pasta with garlic and olive oil tonight")])
    assert stage.expire(before=150.0) == 1
    (v,) = stage([ex("c", TEXT)])
    assert v.keep
    assert stage.remove("b") and len(stage.index) == 0


def test_kafka_timestamp_in_origin_is_the_example_time():
    stage = NearDedup(clock=lambda: 0.0)
    stage.commit([ex("a", TEXT, origin={"timestamp": 1_700_000_000_000})])
    assert stage.index.times[0] == pytest.approx(1_700_000_000.0)


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="threshold"):
        NearDedup(threshold=0)
    with pytest.raises(ValueError, match="fields"):
        NearDedup(fields=("title",))
    with pytest.raises(ValueError, match="bands"):
        NearDedup(bands=4)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_reused_id_is_not_taken_for_a_replay(batch_size):
    """Files numbered from 1 reuse ids: a different example under a known id must be indexed,
    and a near copy of it caught, whatever the batch size. Only a true replay (same id and
    content) is not a duplicate of itself."""
    stage = NearDedup(threshold=0.7)
    poem = ex("1", "Write a poem about the sea and the gulls over the harbour at dawn")
    other = ex("1", TEXT)
    copy = ex("2", TEXT.replace("quiet", "calm"))
    batch = [poem, other, copy]
    verdicts = []
    for i in range(0, len(batch), batch_size):
        verdicts += run(stage, batch[i:i + batch_size])
    assert [v.reason for v in verdicts] == [None, None, Reason.DUPLICATE_NEAR]
    assert verdicts[2].detail == "1"
    (replay,) = stage([other])
    assert replay.keep  # the same id and content again: a replay
    assert stage.remove("1")  # an operator's removal forgets every example under the id
    (after,) = stage([ex("9", TEXT)])
    assert after.keep and after.detail is None


def test_default_pipeline_keeps_pairs_that_differ_only_in_the_rejected_side():
    import dataclasses

    import orjson

    from quality.config import PipelineSettings
    from quality.records import RawRecord
    from streams.assemble import build_pipeline

    base = PipelineSettings()
    settings = dataclasses.replace(base, scoring=dataclasses.replace(base.scoring, enabled=False),
                                   semantic_dedup=dataclasses.replace(base.semantic_dedup, enabled=False))
    chosen = "Take typography, colour theory, layout and a portfolio course to get started in graphic design."
    pairs = [{"id": f"p{i}", "prompt": "Which courses should I take to learn graphic design?", "chosen": chosen,
              "rejected": r} for i, r in enumerate(["Learn to juggle first, then paint houses.",
                                                     "Nobody needs a course; just copy other designers."])]
    out = build_pipeline(settings).process([RawRecord(orjson.dumps(p), {"file": "t", "line": i})
                                            for i, p in enumerate(pairs)])
    assert [d.decision for d in out] == ["accepted", "accepted"], [d.reasons for d in out]


def test_a_signature_made_with_other_settings_is_made_again():
    """Signatures travel in the typed features; a stage with other MinHash settings must not
    take one made for another (bench/eval_dedup.py runs several settings over the same examples)."""
    from quality.dedup.near import NearDedup
    from quality.records import Example, Message

    def ex(i, text):
        return Example(f"e{i}", "sft", "alpaca", (Message("user", "Tell me about it"), Message("assistant", text)))

    a = ex(1, "the quick brown fox jumps over the lazy dog near the river bank today")
    b = ex(2, "the quick brown fox jumps over the lazy dog near the river bank")
    fresh = [ex(3, a.response_text), ex(4, b.response_text)]
    bigram, five = NearDedup(ngram=2, threshold=0.5), NearDedup(ngram=5, threshold=0.5)
    bigram([a, b])
    assert a.features.minhash_key == bigram.signature_key
    reused = [v.scores["near_jaccard"] for v in [five([a]), five([b])] for v in v]
    five_fresh = NearDedup(ngram=5, threshold=0.5)
    alone = [v.scores["near_jaccard"] for v in [five_fresh([fresh[0]]), five_fresh([fresh[1]])] for v in v]
    assert reused == alone and a.features.minhash_key == five.signature_key
