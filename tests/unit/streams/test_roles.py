"""The roles' pieces without a broker: the split pipeline decides as the whole one, the scored
record round-trips, repeats are recognised by origin, groups and transactional ids are derived."""

from __future__ import annotations

import orjson
import pytest

from quality.records import RawRecord
from streams.config import KafkaSettings
from streams.roles.groups import check_role, group_of, role_kafka, transactional_id
from streams.roles.scored import PENDING, decode_scored, encode_scored
from streams.roles.takeover import DecidedOrigins
from streams.worker.loop import Stage1

LIMIT = 1_000_000


def slice_raws(n: int | None = None) -> list[RawRecord]:
    from pathlib import Path

    lines = [x for x in (Path(__file__).parents[2] / "data" / "stream_slice.jsonl").read_bytes().splitlines()
             if x.strip()][:n]
    rows = list(lines)
    for line in lines[:40:3]:  # exact copies under new ids, some in the same batch as their original
        obj = orjson.loads(line)
        obj["id"] = f"{obj['id']}-again"
        rows.insert(len(rows) // 2, orjson.dumps(obj))
    rows += [b'{"id": "bad", "instruction": "x"', orjson.dumps({"id": "short", "instruction": "Hi", "output": ""})]
    return [RawRecord(r, {"topic": "raw", "topic_id": "tid", "partition": 0, "offset": i}) for i, r in enumerate(rows)]


def through_the_roles(pipeline_factory, raws: list[RawRecord], batch: int) -> list:
    """Stage 1 in one pipeline, the scored records through their bytes, stage 2 in another."""
    scorer, decider = Stage1(pipeline_factory()), pipeline_factory().phase("decide")
    versions = scorer.score.versions()
    out = []
    for i in range(0, len(raws), batch):
        records = [encode_scored(d, versions, LIMIT) for d in scorer.process(raws[i:i + batch])]
        scored = [decode_scored(r, {"topic": "scored", "partition": 0, "offset": i + j}) for j, r in enumerate(records)]
        decisions = iter(decider.process_examples([(s.example, s.scores, s.details) for s in scored if not s.final]))
        for s in scored:
            if s.final:
                env = orjson.loads(s.final[1])
                out.append((env["decision"], env["reasons"], env["example"]))
            else:
                d = next(decisions)
                out.append((d.decision, d.reasons, d.example.canonical()))
    return out


@pytest.mark.parametrize("batch", [7, 64])
def test_a_scorer_then_a_decider_decide_as_the_whole_pipeline(cheap_pipeline, batch):
    """Equivalence (issue 12, item 6) without the broker: the score half, the record's bytes and
    the decide half give every input the decision, reasons and example of Pipeline.process."""
    raws = slice_raws(120)
    whole = cheap_pipeline().process(raws)
    expected = [(d.decision, d.reasons, d.example.canonical() if d.example is not None else None) for d in whole]
    got = through_the_roles(cheap_pipeline, raws, batch)
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert [g[2] for g in got if g[0] != "dead_letter"] == [e[2] for e in expected if e[0] != "dead_letter"]
    assert sum(d.decision == "accepted" for d in whole) > 60
    assert sum(d.reasons == ["duplicate_exact"] for d in whole) >= 10  # the copies, in batch and across


def test_the_roles_write_the_envelopes_the_whole_pipeline_writes(cheap_pipeline):
    """Not only the decision: every field of every envelope (the transcript conversion record
    of a split hh-rlhf prompt was lost on the way through the scored topic)."""
    transcripts = [orjson.dumps(o) for o in (
        {"id": "hh-1", "prompt": "\n\nHuman: What is two plus two?\n\nAssistant: Four.\n\nHuman: And three plus "
         "three?", "chosen": "Six, since three and three make six.", "rejected": "Seven, I think."},
        {"id": "chatml-1", "instruction": "<|im_start|>user\nHi there.<|im_end|>\n<|im_start|>assistant\nHello! "
         "How can I help?<|im_end|>\n<|im_start|>user\nName a prime number below ten.<|im_end|>\n",
         "output": "Seven is a prime number below ten."})]
    raws = slice_raws(60) + [RawRecord(t, {"topic": "raw", "topic_id": "tid", "partition": 0, "offset": 1000 + i})
                             for i, t in enumerate(transcripts)]
    versions = {"pipeline": "test"}
    whole = [d.envelope(versions) for d in cheap_pipeline().process(raws)]
    scorer, decider = Stage1(cheap_pipeline()), cheap_pipeline().phase("decide")
    scored = [decode_scored(encode_scored(d, versions, LIMIT), {"topic": "scored", "partition": 0, "offset": i})
              for i, d in enumerate(scorer.process(raws))]
    decided = iter(decider.process_examples([(s.example, s.scores, s.details) for s in scored if not s.final]))
    got = [orjson.loads(s.final[1]) if s.final else next(decided).envelope(versions) for s in scored]
    assert [e["id"] for e in got] == [e["id"] for e in whole]
    for g, w in zip(got, whole):
        assert orjson.loads(orjson.dumps(g)) == orjson.loads(orjson.dumps(w)), w["id"]
    converted = {e["id"]: e.get("converted") for e in got if e["id"] in ("hh-1", "chatml-1")}
    assert converted["hh-1"] == {"prompt": "anthropic"} and list(converted["chatml-1"].values()) == ["chatml"]


def test_a_pending_record_carries_the_features_the_decider_needs(cheap_pipeline):
    scorer = Stage1(cheap_pipeline())
    (d,) = scorer.process(slice_raws(1)[:1])
    assert d.decision == "accepted"
    env = orjson.loads(encode_scored(d, {"pipeline": "x"}, LIMIT))
    assert env["decision"] == PENDING and set(env["features"]) >= {"content_hash", "minhash", "minhash_key"}
    back = decode_scored(orjson.dumps(env), {"topic": "s", "partition": 0, "offset": 0})
    assert back.final is None and back.example.canonical() == d.example.canonical()
    assert back.example.features.content_hash == d.example.features.content_hash
    assert (back.example.features.minhash == d.example.features.minhash).all()
    assert back.origin == {"topic": "raw", "topic_id": "tid", "partition": 0, "offset": 0}


def test_what_is_not_a_scored_record_becomes_a_dead_letter_not_an_exception():
    for junk in (b"", b"not json", b"[1, 2]", orjson.dumps({"decision": "accepted", "origin": {}}),
                 orjson.dumps({"decision": "pending", "origin": {"topic": "raw"}, "example": {"nope": 1}}),
                 orjson.dumps({"decision": "pending", "origin": {}, "example": {"messages": [
                     {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                     "features": {"embedding": "%%%"}})):
        rec = decode_scored(junk, {"topic": "scored", "partition": 0, "offset": 7})
        kind, value = rec.final
        env = orjson.loads(value)
        assert kind == "dead_letter" and env["reasons"] == ["processing_error"], junk
        assert env["origin"] == {"topic": "scored", "partition": 0, "offset": 7} or env["origin"] == {}


def test_repeats_are_known_by_origin_including_the_topic_id():
    decided = DecidedOrigins()
    decided.add(("raw", "id-1", 0, 9))
    assert ("raw", "id-1", 0, 5) in decided and ("raw", "id-1", 0, 9) in decided
    assert ("raw", "id-1", 0, 10) not in decided and ("raw", "id-1", 1, 0) not in decided
    assert ("raw", "id-2", 0, 5) not in decided  # the topic recreated: another incarnation
    assert DecidedOrigins.key_of({"topic": "raw", "topic_id": "id-1", "partition": "2", "offset": 3}) == \
        ("raw", "id-1", 2, 3)
    assert DecidedOrigins.key_of({"topic": "raw"}) is None


def test_each_role_has_its_own_group_and_all_keeps_the_old_one():
    k = KafkaSettings(group_id="prod")
    assert group_of(k, "all") == "prod" and group_of(k, "score") == "prod-score"
    assert role_kafka(k, "decide").group_id == "prod-decide" and role_kafka(k, "decide").brokers == k.brokers
    assert transactional_id(k, "all") == "prod-all" and transactional_id(k, "decide", 0) == "prod-decide-0"
    with pytest.raises(ValueError, match="scorers write without transactions"):
        transactional_id(k, "score")
    with pytest.raises(ValueError, match="role must be one of all, score, decide"):
        check_role("scorer")


def test_the_decider_builds_only_decide_stages_and_gets_the_heads_threshold():
    from quality.config import PipelineSettings, load
    from streams.config import Settings
    from streams.roles.run_decider import decide_pipeline_factory

    settings = load(Settings, env={})
    pipeline = decide_pipeline_factory(settings)()
    assert [s.name for s in pipeline.stages] == ["exact_dedup", "near_dedup", "quality_gate", "semantic_dedup",
                                                 "pair_margin"][:len(pipeline.stages)]
    assert all(s.phase == "decide" for s in pipeline.stages)
    gate = next(s for s in pipeline.stages if s.name == "quality_gate")
    from streams.assemble import head_calibration

    assert head_calibration(load(PipelineSettings, env={}))["quality"] > 0
    assert gate.policy.default.value == pytest.approx(head_calibration(settings.pipeline)["quality"])


def test_an_envelope_sieve_wrote_reads_back_without_a_second_parse_as_the_parser_reads_it(cheap_pipeline):
    """The decider's shortcut (streams.recovery.envelopes._as_written) gives the example the
    parser gives, and leaves anything else (metadata, an unknown role, a missing turn) to it."""
    import dataclasses

    from streams.recovery import envelopes

    decisions = [d for d in cheap_pipeline().process(slice_raws()) if d.decision == "accepted"]
    assert len(decisions) > 30 and any(d.example.kind == "preference" for d in decisions)
    for d in decisions:
        env = orjson.loads(orjson.dumps(d.envelope({})))
        env.pop("metadata", None)
        fast = envelopes._as_written(env["example"], env, {})
        assert fast is not None, env["id"]
        slow = envelopes.example_from_envelope({**env, "metadata": {"k": 1}})  # metadata: the parser's way
        assert dataclasses.replace(slow, metadata={}) == fast and fast.canonical() == d.example.canonical()
    sft = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    for odd in ({"messages": [{"role": "user", "content": "q"}]},  # no response
                {"messages": [{"role": "developer", "content": "s"}, *sft["messages"]]},  # not canonical
                {"messages": [{"role": "user", "content": 1}, {"role": "assistant", "content": "a"}]},
                {**sft, "extra": 1}):
        assert envelopes._as_written(odd, {"id": "x"}, {}) is None, odd
    assert envelopes._as_written(sft, {"id": "x", "source": 7}, {}) is None
    assert envelopes.example_from_envelope({"id": "x", "example": {"messages": [
        {"role": "developer", "content": "Be brief."}, *sft["messages"]]}}).messages[0].role == "system"
