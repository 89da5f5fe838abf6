import base64
import hashlib

import orjson
import pytest

from quality.config import PipelineSettings
from quality.filters.common import FilterSettings
from quality.pipeline import Pipeline
from quality.privacy import PiiSettings
from quality.reasons import Reason
from quality.records import RawRecord
from quality.scoring.gate import ScoringSettings
from quality.stage import KEEP, ScoreSpec, Stage
from streams.assemble import build_pipeline


def raws_from(path):
    return [RawRecord(line.rstrip(b"\n"), {"file": "s", "line": i}) for i, line in enumerate(open(path, "rb"), 1)]


def heuristic_pipeline(**kw):
    return build_pipeline(PipelineSettings(**kw))


def test_one_decision_per_input_in_order(mit_sample):
    raws = raws_from(mit_sample)
    raws.insert(5, RawRecord(b"{broken", {"file": "s", "line": 999}))
    raws.insert(9, RawRecord(b"\xff\xfe", {"file": "s", "line": 1000}))
    decisions = heuristic_pipeline().process(raws)
    assert len(decisions) == len(raws)
    ids = [orjson.loads(r.payload)["id"] if r.payload.startswith(b"{\"") else None for r in raws]
    for raw, rid, d in zip(raws, ids, decisions):
        assert d.origin == raw.origin
        if rid is not None:
            assert d.id == rid
    assert decisions[5].decision == "dead_letter" and decisions[5].reasons == ["invalid_json"]
    assert decisions[9].decision == "dead_letter" and decisions[9].reasons == ["invalid_utf8"]


def test_duplicates_in_sample_are_rejected(mit_sample):
    decisions = heuristic_pipeline(scoring=ScoringSettings(enabled=False)).process(raws_from(mit_sample))
    dups = {d.id: d for d in decisions if d.id.endswith("-dup")}
    assert len(dups) == 2
    for d in dups.values():
        assert d.decision == "rejected" and d.reasons == ["duplicate_exact"]
        assert d.details["exact_dedup"] == d.id.removesuffix("-dup")


def test_a_copy_of_a_rejected_example_gets_the_original_s_fate(mit_sample):
    """With the model stage on, an original may be rejected later (low_quality); its copy is then
    decided again from the dedup stage on, as if the batch were processed one by one."""
    decisions = {d.id: d for d in heuristic_pipeline().process(raws_from(mit_sample))}
    dups = [d for i, d in decisions.items() if i.endswith("-dup")]
    assert len(dups) == 2
    for d in dups:
        original = decisions[d.id.removesuffix("-dup")]
        if original.decision == "accepted":
            assert d.decision == "rejected" and d.reasons == ["duplicate_exact"]
        else:
            assert (d.decision, d.reasons) == (original.decision, original.reasons)


def test_duplicates_across_batches_and_stats(mit_sample):
    p = heuristic_pipeline()
    raws = raws_from(mit_sample)
    first = p.process(raws[:30])
    again = p.process(raws[:30])  # same content again, later: all duplicates of accepted ones
    accepted_first = {d.id for d in first if d.decision == "accepted"}
    assert accepted_first
    for d in again:
        if d.id in accepted_first:
            assert d.reasons == ["duplicate_exact"]
    stats = p.stats()
    assert stats["parse"]["seen"] == 60
    assert stats["exact_dedup"]["rejected"]["duplicate_exact"] >= len(accepted_first)
    assert p.decisions["accepted"] + p.decisions["rejected"] + p.decisions["dead_letter"] == 60


def test_first_reason_rejects_and_later_stages_do_not_see_it():
    p = heuristic_pipeline()
    raw = RawRecord(orjson.dumps({"instruction": "Opinion?", "output": ""}), {"file": "s", "line": 1})
    (d,) = p.process([raw])
    assert d.decision == "rejected" and d.reasons == ["empty_response"]
    assert p.stats()["length"]["seen"] == 0


def test_score_mode_runs_every_stage_and_keeps_going():
    p = build_pipeline(PipelineSettings(), score_mode=True)
    raw = RawRecord(orjson.dumps({"instruction": "Hi", "output": "As an AI language model, no."}),
                    {"file": "s", "line": 1})
    (d,) = p.process([raw, raw])[:1]
    assert d.decision == "rejected" and "refusal" in d.reasons
    assert p.stats()["exact_dedup"]["seen"] == 2  # nothing dropped before the last stage


def test_envelopes_of_each_decision():
    p = heuristic_pipeline(max_message_bytes=100)
    good = RawRecord(orjson.dumps({"id": "g", "instruction": "Add 2 and 3.", "output": "5", "source": "app-1"}),
                     {"topic": "t", "partition": 0, "offset": 1})
    bad = RawRecord(b"\xff" * 10, {"topic": "t", "partition": 0, "offset": 2})
    big = RawRecord(b"x" * 200, {"topic": "t", "partition": 0, "offset": 3})
    env = [d.envelope(p.versions()) for d in p.process([good, bad, big])]
    assert env[0]["decision"] == "accepted" and env[0]["source"] == "app-1"
    assert env[0]["example"]["messages"][1] == {"role": "assistant", "content": "5"}
    assert env[0]["versions"]["pipeline"] and "length" in env[0]["versions"]["stages"]
    # not UTF-8, so it cannot be redacted: the bytes are dropped, their length and sha256 stay
    assert env[1]["decision"] == "dead_letter" and env[1]["raw"] is None and "not UTF-8" in env[1]["raw_omitted"]
    assert env[1]["raw_sha256"] == hashlib.sha256(b"\xff" * 10).hexdigest() and env[1]["id"] == "t/0/2"
    assert env[2]["reasons"] == ["too_large"] and env[2]["raw_bytes"] == 200 and env[2]["raw"] == "x" * 200
    for e in env:
        orjson.dumps(e)  # every envelope is JSON
    pii = build_pipeline(PipelineSettings(max_message_bytes=100, pii=PiiSettings(dead_letter_raw="keep")))
    kept = pii.process([bad])[0].envelope(pii.versions())  # the opt-in: as received, base64 when not UTF-8
    assert kept["raw_encoding"] == "base64" and base64.b64decode(kept["raw"]) == b"\xff" * 10


class Exploding(Stage):
    name = "exploding"
    reasons = frozenset()

    def check(self, ex):
        if "boom" in ex.response_text:
            raise RuntimeError("kaboom")
        return KEEP


def test_a_stage_that_raises_dead_letters_only_the_bad_example():
    p = Pipeline([Exploding()])
    raws = [RawRecord(orjson.dumps({"instruction": "q", "output": o}), {"file": "s", "line": i})
            for i, o in enumerate(["fine", "boom", "also fine"])]
    out = p.process(raws)
    assert [d.decision for d in out] == ["accepted", "dead_letter", "accepted"]
    assert out[1].reasons == [Reason.PROCESSING_ERROR.value] and "kaboom" in out[1].error


class Liar(Stage):
    name = "liar"
    reasons = frozenset({Reason.TOO_LONG})

    def check(self, ex):
        from quality.stage import Verdict
        return Verdict(Reason.REFUSAL)


def test_undeclared_reasons_are_caught():
    with pytest.raises(RuntimeError, match="undeclared"):
        Liar()([object()])


class Scorer(Stage):
    """Declares one score and writes another."""

    name = "scorer"
    scores = {"shine": ScoreSpec("how shiny")}

    def check(self, ex):
        from quality.stage import Verdict
        return Verdict(None, {"shine": 1.0, "glitter": 2.0})


def test_undeclared_scores_are_caught():
    with pytest.raises(RuntimeError, match=r"wrote undeclared scores \['glitter'\]; declare them"):
        Scorer()([object()])


def test_settings_validation():
    with pytest.raises(ValueError, match="max_message_bytes"):
        Pipeline([], max_message_bytes=0)
    with pytest.raises(ValueError, match="max_total_chars"):
        build_pipeline(PipelineSettings(filters=FilterSettings(max_total_chars=0)))


def test_decisions_do_not_depend_on_how_input_is_cut_into_batches(tmp_path, mit_sample):
    """A copy of an example that a LATER stage rejects must not be called a duplicate of it:
    X; A, a near duplicate of X; A2, A upper-cased. One at a time A2 is a near duplicate of
    X; in one batch it must be too (not an exact duplicate of the rejected A)."""
    import dataclasses

    from quality.filemode import curate

    x = ("Write a short story about a lighthouse keeper who finds a message in a bottle and how it "
         "changes his quiet life on the rocky island far from the coast")
    rows = [{"id": "X", "instruction": x, "output": "Once upon a time a keeper found a bottle."},
            {"id": "A", "instruction": x.replace("quiet", "calm"),
             "output": "Once upon a time a keeper found a bottle."},
            {"id": "A2", "instruction": x.replace("quiet", "calm").upper(),
             "output": "ONCE UPON A TIME A KEEPER FOUND A BOTTLE."}]
    src = tmp_path / "in.jsonl"
    src.write_bytes(mit_sample.read_bytes() + b"".join(orjson.dumps(r) + b"\n" for r in rows))
    base = PipelineSettings()
    settings = dataclasses.replace(base, scoring=dataclasses.replace(base.scoring, enabled=False),
                                   semantic_dedup=dataclasses.replace(base.semantic_dedup, enabled=False))
    runs = {}
    for size in (1, 7, 256):
        out = tmp_path / f"out{size}"
        curate(build_pipeline(settings), [src], out, batch_size=size)
        runs[size] = {}
        for name in ("accepted", "rejected", "dead_letter"):
            for line in (out / f"{name}.jsonl").read_bytes().splitlines():
                env = orjson.loads(line)
                runs[size][env["origin"]["line"]] = (env["decision"], env["reasons"], env.get("details"))
    assert runs[1] == runs[7] == runs[256]
    last = max(runs[1])
    assert runs[256][last][:2] == ("rejected", ["duplicate_near"]) and runs[256][last][2]["near_dedup"] == "X"
