"""Operators' overrides in the core: the record's validation, and the pipeline applying them before
the dedup state sees the batch (so a force-rejected first copy no longer makes its copies duplicates)."""

from __future__ import annotations

import re

import orjson
import pytest

from quality.filemode import curate, read_records
from quality.overrides import (FORCE_ACCEPT, FORCE_REJECT, OverrideBook, OverrideError, accepted_envelope,
                               make_override, override_from_envelope, parse_override)
from quality.reasons import Reason

EX = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}


def ov(ex_id, action, **kw):
    base = {"note": "checked by hand", "who": "ana", "at": 1_700_000_000.0}
    if action == FORCE_ACCEPT:
        base["example"] = EX
    return make_override(ex_id, action, **{**base, **kw})


@pytest.mark.parametrize("field, value, message", [
    ("note", "", "'note' must be a non-empty string"),
    ("note", "   ", "'note' must be a non-empty string"),
    ("who", None, "'who' must be a non-empty string"),
    ("id", "", "'id' must be a non-empty string"),
    ("action", "accept", "action must be one of force_accept, force_reject"),
    ("at", "yesterday", "'at' must be unix seconds"),
    ("at", float("nan"), "'at' must be unix seconds"),
    ("note", "x" * 2001, "the limit is 2000"),
    ("reasons_was", "duplicate_exact", "'reasons_was' must be a list"),
])
def test_a_malformed_record_is_refused_naming_the_field(field, value, message):
    rec = ov("a", FORCE_REJECT).to_record()
    rec[field] = value
    with pytest.raises(OverrideError, match=message):
        parse_override(rec)


def test_force_accept_needs_the_canonical_example():
    rec = ov("a", FORCE_ACCEPT).to_record()
    del rec["example"]
    with pytest.raises(OverrideError, match="needs the canonical 'example'"):
        parse_override(rec)
    rec["example"] = {"messages": [{"role": "user"}]}  # no content: not canonical
    with pytest.raises(OverrideError):
        parse_override(rec)
    assert parse_override(ov("a", FORCE_ACCEPT).to_record()) == ov("a", FORCE_ACCEPT)


@pytest.mark.parametrize("example, fault", [
    ({"messages": [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Explain tides."},
                   {"role": "assistant", "content": "The Moon's gravity."}]}, "it starts with assistant, not user"),
    ({"prompt": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "Sure."}],
      "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]},
     "prompt: it ends with assistant, not user"),
    ({"messages": [{"role": "user", "content": "Q"}, {"role": "wizard", "content": "A"}]}, "an unknown role 'wizard'"),
])
def test_force_accept_refuses_an_example_a_chat_template_refuses(example, fault):
    """What turn_order rejects without a repair would reach a batch through a force-accept (a review page
    offers it on any rejection), and one such row makes TRL's trainers fail while tokenizing the whole batch."""
    with pytest.raises(OverrideError, match="cannot be force-accepted.*" + re.escape(fault)):
        ov("bad", FORCE_ACCEPT, example=example)
    env = {"id": "bad", "decision": "rejected", "reasons": ["bad_turn_order"], "example": example}
    with pytest.raises(OverrideError, match="cannot be force-accepted"):
        override_from_envelope(env, FORCE_ACCEPT, "looks fine to me", "ana", 5.0)
    assert override_from_envelope({**env, "decision": "accepted"}, FORCE_REJECT, "n", "ana", 5.0).example is None
    system_first = {"messages": [{"role": "system", "content": "Be brief."}, *EX["messages"]]}
    assert ov("ok", FORCE_ACCEPT, example=system_first).example == system_first


def test_a_cut_command_is_not_an_override():
    with pytest.raises(OverrideError, match="not an override record"):
        parse_override({"command": "cut", "requested_by": "ana"})


def test_override_from_an_envelope_keeps_what_was_overruled():
    env = {"id": "x", "decision": "rejected", "reasons": ["duplicate_near"], "example": EX, "source": "s",
           "origin": {"file": "a.jsonl", "line": 3}}
    o = override_from_envelope(env, FORCE_ACCEPT, "not a duplicate", "ana", 5.0)
    rec = o.to_record()
    assert rec == {"type": "override", "id": "x", "action": FORCE_ACCEPT, "note": "not a duplicate",
                   "who": "ana", "at": 5.0, "decision_was": "rejected", "reasons_was": ["duplicate_near"],
                   "origin": {"file": "a.jsonl", "line": 3}, "example": EX, "source": "s"}
    assert accepted_envelope(o)["overridden"] == {"action": FORCE_ACCEPT, "who": "ana", "note": "not a duplicate",
                                                  "at": 5.0, "decision_was": "rejected",
                                                  "reasons_was": ["duplicate_near"]}
    with pytest.raises(OverrideError, match="dead letter"):
        override_from_envelope({"id": "d", "decision": "dead_letter"}, FORCE_REJECT, "n", "ana", 1.0)
    with pytest.raises(OverrideError, match="carries no example"):
        override_from_envelope({**env, "example": None}, FORCE_ACCEPT, "n", "ana", 1.0)


def _lines(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def _sample_rows(mit_sample):
    return [orjson.loads(x) for x in mit_sample.read_bytes().splitlines()]


def test_force_rejecting_a_first_copy_frees_its_duplicate(tmp_path, mit_sample, cheap_pipeline):
    """The dup row of the sample is rejected as a copy of its original; once the original is
    force-rejected, the copy is the first of its content and is accepted, in one batch or many."""
    dup = next(r["id"] for r in _sample_rows(mit_sample) if r["id"].endswith("-dup"))
    first = dup.removesuffix("-dup")
    for batch_size in (1, 256):
        book = OverrideBook([ov(first, FORCE_REJECT, note="leaks a name")])
        p = cheap_pipeline()
        p.overrides = book
        decisions = {d.id: d for d in p.process(list(read_records([mit_sample])))} if batch_size == 256 else {
            d.id: d for r in read_records([mit_sample]) for d in p.process([r])}
        assert decisions[first].decision == "rejected"
        assert decisions[first].reasons == [Reason.OPERATOR_REJECTED.value]
        assert decisions[first].overridden["decision_was"] == "accepted"
        assert decisions[first].overridden["who"] == "ana" and decisions[first].overridden["note"] == "leaks a name"
        assert decisions[dup].decision == "accepted", batch_size
        assert book.report()["applied"] == {"force_accept": 0, "force_reject": 1}


def test_force_accepting_a_duplicate_commits_it_and_reports_what_happened(tmp_path, mit_sample, cheap_pipeline):
    dup = next(r["id"] for r in _sample_rows(mit_sample) if r["id"].endswith("-dup"))
    book = OverrideBook([ov(dup, FORCE_ACCEPT), ov("never-there", FORCE_REJECT),
                         ov(dup.removesuffix("-dup"), FORCE_ACCEPT)])  # already accepted: unchanged
    p = cheap_pipeline()
    p.overrides = book
    summary = curate(p, [mit_sample], tmp_path / "out")
    accepted = {e["id"]: e for e in _lines(tmp_path / "out" / "accepted.jsonl")}
    assert accepted[dup]["overridden"]["decision_was"] == "rejected"
    assert accepted[dup]["overridden"]["reasons_was"] == ["duplicate_exact"]
    assert accepted[dup]["reasons"] == []
    assert "overridden" not in accepted[dup.removesuffix("-dup")]
    assert summary["overrides"] == {"records": 3, "ids": 3, "applied": {"force_accept": 1, "force_reject": 0},
                                    "unchanged": 1, "not_applicable": 0, "never_seen": 1,
                                    "never_seen_ids": ["never-there"]}
    # committed like any accepted example: a third copy of that content is a duplicate
    third = {**next(r for r in _sample_rows(mit_sample) if r["id"] == dup), "id": "third-copy"}
    (tmp_path / "third.jsonl").write_bytes(orjson.dumps(third) + b"\n")
    [d] = p.process(list(read_records([tmp_path / "third.jsonl"])))
    assert d.decision == "rejected" and d.reasons == ["duplicate_exact"]


def test_the_last_override_per_id_stands_and_dead_letters_stay(tmp_path, cheap_pipeline):
    rows = [b'{"id": "a", "instruction": "Name three primary colours please.", "output": "Red, yellow and blue."}',
            b'{"id": "bad", "instruction": 5}']
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    book = OverrideBook([ov("a", FORCE_REJECT, at=1.0), ov("a", FORCE_ACCEPT, at=2.0), ov("bad", FORCE_REJECT)])
    p = cheap_pipeline()
    p.overrides = book
    a, bad = p.process(list(read_records([tmp_path / "in.jsonl"])))
    assert a.decision == "accepted" and a.overridden is None  # the last word (accept) agrees with the pipeline
    assert bad.decision == "dead_letter"
    assert book.report()["not_applicable"] == 1 and book.report()["unchanged"] == 1


def test_score_mode_applies_no_override(mit_sample):
    from streams.assemble import build_pipeline

    first = _sample_rows(mit_sample)[0]["id"]
    p = build_pipeline(None, score_mode=True, overrides=OverrideBook([ov(first, FORCE_REJECT)]))
    assert p.overrides is None
