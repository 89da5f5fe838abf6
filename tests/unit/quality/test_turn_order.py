"""Turn order as a chat template checks it: each fault rejects with bad_turn_order, or is repaired."""

from __future__ import annotations

import orjson
import pytest

from quality.config import PipelineSettings, load
from quality.filters.turns import TurnOrderCheck, TurnSettings
from quality.reasons import Reason
from quality.stage import KEEP
from quality.records import Example, Message, RawRecord
from quality.records.turns import order_fault

S, U, A, T = "system", "user", "assistant", "tool"


def msgs(*roles: str) -> tuple[Message, ...]:
    return tuple(Message(r, f"{r} {i}") for i, r in enumerate(roles))


def sft(*roles: str) -> Example:
    return Example("x", "sft", "openai", msgs(*roles))


def pair(prompt: tuple[str, ...], chosen: tuple[str, ...] = (A,), rejected: tuple[str, ...] = (A,)) -> Example:
    return Example("p", "preference", "preference", msgs(*prompt), msgs(*chosen), msgs(*rejected))


@pytest.mark.parametrize("roles", [(U, A), (S, U, A), (U, A, U, A), ("developer", U, A), (U, A, T, A),
                                   (U, A, T, T, A)])
def test_orders_a_template_renders_pass(roles):
    assert order_fault(msgs(*roles), ends_with=A) is None
    assert TurnOrderCheck().check(sft(*roles)).keep


@pytest.mark.parametrize("roles, fault", [
    ((A, U, A), "it starts with assistant, not user"),
    ((S, A, U, A), "it starts with assistant, not user"),
    ((T, U, A), "it starts with tool, not user"),
    ((U, S, A), "a system turn at position 2, not first"),
    ((U, A, S, U, A), "a system turn at position 3, not first"),
    ((S, "developer", U, A), "a developer turn at position 2, not first"),
    ((U, T, A), "a tool turn after a user turn"),
    ((U, A, T, U, A), "a user turn right after a tool turn"),
    ((S,), "no turn after the system turn"),
])
def test_faults_no_merge_can_fix_are_rejected_with_the_reason_and_named(roles, fault):
    for policy in ("repair", "reject"):
        stage = TurnOrderCheck(policy=policy)
        (v,) = stage([sft(*roles)])
        assert v.reason is Reason.BAD_TURN_ORDER and fault in v.detail and v.replacement is None
        assert stage.stats.rejected[Reason.BAD_TURN_ORDER.value] == 1


@pytest.mark.parametrize("roles, merged, note", [
    ((U, U, A), [U, A], "2 user turns of the conversation"),
    ((S, S, U, A), [S, U, A], "2 system turns"),
    ((U, A, A, U, A), [U, A, U, A], "2 assistant turns"),
    ((U, A, U, U, U, A, A), [U, A, U, A], "3 user turns"),
])
def test_consecutive_turns_of_one_role_are_merged_under_repair_and_rejected_under_reject(roles, merged, note):
    ex = sft(*roles)
    (v,) = TurnOrderCheck()([ex])
    assert v.keep and note in v.detail and v.detail.startswith("merged")
    assert [m.role for m in v.replacement.messages] == merged
    # no text is lost: the merged turns hold every original text, in order, blank-line separated
    assert "\n\n".join(m.content for m in v.replacement.messages) == "\n\n".join(m.content for m in ex.messages)
    (v,) = TurnOrderCheck(policy="reject")([ex])
    assert v.reason is Reason.BAD_TURN_ORDER and ("in a row" in v.detail or "system turn at position 2" in v.detail)


def test_pairs_prompt_ends_with_the_user_and_each_side_follows_it():
    check = TurnOrderCheck()
    assert check.check(pair((U,))).keep and check.check(pair((S, U, A, U))).keep
    v = check.check(pair((U, A)))  # merging the prompt's answer into chosen would change what is trained on
    assert v.reason is Reason.BAD_TURN_ORDER and v.detail == "prompt: it ends with assistant, not user"
    v = check.check(pair((A, U)))
    assert v.reason is Reason.BAD_TURN_ORDER and v.detail.startswith("prompt: it starts with assistant")
    v = check.check(pair((U,), chosen=(U, A)))
    assert v.reason is Reason.BAD_TURN_ORDER and v.detail.startswith("prompt + chosen: two user turns")
    assert check.check(pair((U,), chosen=(A, U, A))).keep  # a multi-turn continuation renders


def test_pairs_are_merged_inside_the_prompt_and_inside_a_side_never_across():
    (v,) = TurnOrderCheck()([pair((U, U), chosen=(A, A), rejected=(A,))])
    assert v.keep and [m.role for m in v.replacement.messages] == [U]
    assert [m.role for m in v.replacement.chosen] == [A]
    assert v.replacement.chosen[0].content == "assistant 0\n\nassistant 1"
    assert "2 user turns of the prompt" in v.detail and "2 assistant turns of the chosen side" in v.detail
    # a rejected_prompt (only set where it differs from the prompt) is pair_structure's to reject, not this stage's
    ex = Example("p", "preference", "preference", msgs(U), msgs(A), msgs(A), rejected_prompt=msgs(U, A))
    assert TurnOrderCheck().check(ex) is KEEP


def test_a_transcript_left_whole_is_rejected_naming_why():
    ex = Example("t", "preference", "preference", msgs(U), msgs(A), msgs(A),
                 unconverted={"prompt": "anthropic markers, not converted: turn 3 is assistant, expected user"})
    v = TurnOrderCheck().check(ex)
    assert v.reason is Reason.BAD_TURN_ORDER and v.detail.startswith("prompt: anthropic markers")


def test_settings_and_the_pipeline(cheap_pipeline):
    with pytest.raises(ValueError, match="pipeline.turns.policy must be one of"):
        TurnSettings(policy="fix")
    with pytest.raises(ValueError, match="pipeline.turns.policy"):
        load(PipelineSettings, env={}, overrides={"turns.policy": "merge"})
    with pytest.raises(ValueError, match="turn_order policy"):
        TurnOrderCheck(policy="merge")
    good = {"messages": [{"role": "user", "content": "Name a prime number."},
                         {"role": "user", "content": "A small one, please."},
                         {"role": "assistant", "content": "Two is the smallest prime number."}]}
    bad = {"messages": [{"role": "assistant", "content": "Hello! How can I help you today?"},
                        {"role": "user", "content": "Name a prime number, please."},
                        {"role": "assistant", "content": "Two is the smallest prime number."}]}
    raws = [RawRecord(orjson.dumps(o), {"file": "f", "line": i}) for i, o in enumerate((good, bad))]
    p = cheap_pipeline()
    repaired, rejected = p.process(raws)
    assert repaired.decision == "accepted"
    assert repaired.details["turn_order"] == "merged 2 user turns of the conversation"
    assert [m.role for m in repaired.example.messages] == [U, A]
    assert (rejected.decision, rejected.reasons) == ("rejected", ["bad_turn_order"])
    assert rejected.details["turn_order"] == "it starts with assistant, not user"
    strict = cheap_pipeline(**{"turns.policy": "reject"}).process(raws)
    assert [d.reasons for d in strict] == [["bad_turn_order"], ["bad_turn_order"]]
    off = cheap_pipeline(**{"turns.enabled": False}).process(raws)
    assert [d.decision for d in off] == ["accepted", "accepted"]


def test_a_rejected_example_is_redacted_first():
    """turn_order runs after pii, so a bad_turn_order envelope carries no unredacted PII."""
    from quality.build import build_pipeline

    p = build_pipeline(load(PipelineSettings, env={}, overrides={"scoring.enabled": False,
                                                                  "semantic_dedup.enabled": False}))
    names = [s.name for s in p.stages]
    assert names.index("pii") < names.index("turn_order") < names.index("empty")
    (d,) = p.process([RawRecord(orjson.dumps({"messages": [
        {"role": "assistant", "content": "Write to me at jane.roe@gmail.com"},
        {"role": "user", "content": "ok"}, {"role": "assistant", "content": "Thanks, that works."}]}),
        {"file": "f", "line": 1})])
    assert d.reasons == ["bad_turn_order"] and "jane.roe" not in orjson.dumps(d.envelope({})).decode()
