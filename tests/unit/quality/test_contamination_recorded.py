"""Decontamination that cannot be gamed: not by PII redaction, not by being rejected for something else first."""

from __future__ import annotations

import orjson
import pytest

from streams.assemble import build_pipeline
from quality.config import PipelineSettings, load
from quality.filemode import curate
from quality.records import RawRecord

ITEM = ("Please write a short, polite e-mail to our support team at help.desk@example-corp.com asking "
        "them to reset the password for the account registered to +1 (415) 555-7132 by Friday.")
CLEAN_ITEM = ("Janet's ducks lay sixteen eggs per day and she eats three for breakfast every morning, how many "
              "eggs does she sell at the farmers market")
ANSWER = "Dear support team, I would be grateful if you could reset my password before Friday. Thank you."


@pytest.fixture
def bench(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_bytes(orjson.dumps({"id": "mail-1", "benchmark": "b", "text": ITEM}) + b"\n"
                     + orjson.dumps({"id": "gsm-1", "benchmark": "b", "text": CLEAN_ITEM}) + b"\n")
    return path


def pipeline(bench, score_mode=False, **overrides):
    settings = load(PipelineSettings, env={}, overrides={
        "scoring.enabled": False, "semantic_dedup.enabled": False, "decontam.benchmark_paths": (str(bench),),
        "decontam.reload_interval_s": 0.0, **overrides})
    return build_pipeline(settings, score_mode=score_mode)


def decide(p, *records):
    return p.process([RawRecord(orjson.dumps(r), {"file": "t", "line": k}) for k, r in enumerate(records, 1)])


def test_a_verbatim_copy_with_contact_details_is_caught_although_pii_is_redacted_first(bench):
    p = pipeline(bench)
    swapped = ITEM.replace("help.desk@example-corp.com", "ops@other.org").replace("(415) 555-7132", "(212) 555-8199")
    copy, other = decide(p, {"instruction": ITEM, "output": ANSWER}, {"instruction": swapped, "output": ANSWER})
    for d in (copy, other):
        assert (d.decision, d.reasons) == ("rejected", ["contaminated"]) and d.details["decontam"] == "mail-1"
        env = orjson.dumps(d.envelope(p.versions()))
        assert b"[EMAIL]" in env and b"[PHONE]" in env and b"@" not in env  # what goes out stays redacted
    assert copy.details["pii"] == "redacted email,phone"


def test_redaction_does_not_make_different_prompts_match(bench):
    (d,) = decide(pipeline(bench), {"instruction": "Please e-mail help.desk@example-corp.com to ask about the "
                                                   "opening hours of the shop on Saturday.", "output": ANSWER})
    assert d.decision == "accepted" and d.scores["contamination"] < 0.8


def test_contamination_is_recorded_whatever_rejected_the_example_first(bench):
    loop = "The ducks lay eggs and the eggs are sold. " * 30
    rows = [
        {"id": "rep", "instruction": CLEAN_ITEM, "output": loop},                          # repetitive first
        {"id": "pair", "prompt": CLEAN_ITEM, "chosen": "She sells nine eggs a day.",
         "rejected": "She sells nine eggs a day."},                                         # pair_identical first
        {"id": "empty", "instruction": CLEAN_ITEM, "output": ""},                           # empty_response first
        {"id": "clean-rep", "instruction": "Tell me about the sea.", "output": loop},       # not contaminated
    ]
    out = {d.id: d for d in decide(pipeline(bench), *rows)}
    assert out["rep"].reasons == ["repetitive", "contaminated"] and out["rep"].details["decontam"] == "gsm-1"
    assert out["pair"].reasons == ["pair_identical", "contaminated"]
    assert out["empty"].reasons == ["empty_response", "contaminated"]
    assert out["clean-rep"].reasons == ["repetitive"] and out["clean-rep"].scores["contamination"] < 0.8
    assert all(d.decision == "rejected" for d in out.values())


def test_pii_reject_policy_still_records_contamination_and_emits_redacted_text(bench):
    p = pipeline(bench, **{"pii.policy": "reject"})
    (d,) = decide(p, {"instruction": ITEM, "output": ANSWER})
    assert d.reasons == ["pii", "contaminated"]
    env = orjson.dumps(d.envelope(p.versions()))
    assert b"[EMAIL]" in env and b"example-corp" not in env


def test_the_summary_counts_every_reason_carried(bench, tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [{"instruction": CLEAN_ITEM, "output": "The ducks lay eggs and the eggs are sold. " * 30},
            {"instruction": ITEM, "output": ANSWER}, {"instruction": "Name a colour of the sky.", "output": "Blue."}]
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    summary = curate(pipeline(bench), [src], tmp_path / "out")
    assert summary["reasons"] == {"rejected:contaminated": 1, "rejected:repetitive": 1}
    assert summary["reasons_carried"] == {"rejected:contaminated": 2, "rejected:repetitive": 1}
    assert summary["stages"]["decontam"]["rejected"] == {"contaminated": 2}  # it checked the repetitive one too


def test_score_mode_runs_decontamination_once_per_example(bench):
    scoring = pipeline(bench, score_mode=True)
    (d,) = decide(scoring, {"instruction": CLEAN_ITEM, "output": "The ducks lay eggs and the eggs are sold. " * 30})
    assert d.reasons == ["repetitive", "contaminated"]
    assert scoring.stats()["decontam"]["seen"] == 1


def test_an_operator_s_force_accept_stands_without_further_reasons(bench):
    from quality.overrides import FORCE_ACCEPT, OverrideBook, make_override

    example = {"messages": [{"role": "user", "content": CLEAN_ITEM},
                            {"role": "assistant", "content": "The ducks lay eggs and the eggs are sold. " * 30}]}
    p = pipeline(bench)
    p.overrides = OverrideBook([make_override("rep", FORCE_ACCEPT, note="a fine loop", who="ana", at=1.0,
                                              example=example)])
    (d,) = decide(p, {"id": "rep", "instruction": CLEAN_ITEM, "output": example["messages"][1]["content"]})
    assert (d.decision, d.reasons) == ("accepted", []) and d.overridden["reasons_was"] == ["repetitive"]
