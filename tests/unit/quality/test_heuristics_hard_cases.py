"""Labelled hard cases for the heuristic stages, through the whole cheap pipeline.

``tests/data/heuristics_hard_cases.jsonl`` holds good structured answers that must be
accepted (a song with a chorus, short functions, HTML and markdown tables, a truth table,
GSM8K solutions, enumerated lists, IPA, many scripts, roleplay as an AI character) and
degenerate or broken ones that must be rejected with the right reason and rule (sentence,
paragraph, list-item and phrase loops, mojibake, canned refusals, AI disclaimers). Each row
cites its source: a row of ../shared/data (MIT or Apache-2.0 sources only) or "written".
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import orjson
import pytest

from quality.build import build_pipeline
from quality.config import PipelineSettings
from quality.dedup.semantic import SemanticDedupSettings
from quality.records import RawRecord
from quality.scoring.gate import ScoringSettings

CASES_FILE = Path(__file__).parents[2] / "data" / "heuristics_hard_cases.jsonl"
CASES = [json.loads(line) for line in CASES_FILE.read_text().splitlines() if line.strip()]
HEURISTIC_STAGES = {"empty", "length", "encoding", "repetition", "refusal"}


@pytest.fixture(scope="module")
def pipeline():
    settings = dataclasses.replace(PipelineSettings(), scoring=ScoringSettings(enabled=False),
                                   semantic_dedup=SemanticDedupSettings(enabled=False))
    return build_pipeline(settings)


def test_the_slice_has_both_kinds_and_every_heuristic_reason():
    expected = {c["expect"] for c in CASES}
    assert {None, "repetitive", "bad_encoding", "refusal"} <= expected
    assert sum(c["expect"] is None for c in CASES) >= 15 and sum(c["expect"] is not None for c in CASES) >= 15
    assert all(c["source"] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_hard_case(pipeline, case):
    (decision,) = pipeline.process([RawRecord(orjson.dumps(case["record"]), {"file": "hard_cases", "line": 0})])
    heuristic = {stage: detail for stage, detail in decision.details.items() if stage in HEURISTIC_STAGES}
    if case["expect"] is None:
        assert decision.decision == "accepted", (case["why"], decision.reasons, decision.details)
        return
    assert decision.decision == "rejected" and decision.reasons[0] == case["expect"], (
        case["why"], decision.reasons, decision.details)
    if case["detail"]:
        assert any(d and d.startswith(case["detail"]) for d in heuristic.values()), (case["detail"], heuristic)
