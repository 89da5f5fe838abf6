"""Preference-pair checks: one minimal input per reason code, plus the passes."""

from __future__ import annotations

import math

import orjson
import pytest

from quality.filters.pairs import PairStructureFilter, length_bias
from quality.normalize import normalize_example
from quality.pipeline import Pipeline
from quality.reasons import Reason
from quality.records import Example, RawRecord, parse
from quality.scoring.margin import PairMarginCheck


def ex(obj: dict) -> Example:
    parsed = parse(RawRecord(orjson.dumps(obj), {"file": "t", "line": 1}))
    assert isinstance(parsed, Example), parsed
    return normalize_example(parsed)


PAIR = {"id": "p", "prompt": "Name a colour.", "chosen": "Blue is a colour.", "rejected": "Dogs bark."}


def test_valid_pair_passes_with_length_bias():
    v = PairStructureFilter()([ex(PAIR)])[0]
    assert v.keep
    assert v.scores["length_bias"] == pytest.approx(math.log(18 / 11), abs=1e-6)


def test_identical_sides_up_to_whitespace():
    v = PairStructureFilter()([ex({**PAIR, "rejected": "  Blue is a\ncolour. "})])[0]
    assert v.reason is Reason.PAIR_IDENTICAL


def test_sides_that_differ_only_in_case_are_a_real_preference():
    v = PairStructureFilter()([ex({**PAIR, "rejected": "blue is a colour."})])[0]
    assert v.keep


def test_prompt_mismatch_from_rejected_prompt_field():
    v = PairStructureFilter()([ex({**PAIR, "rejected_prompt": "Name an animal."})])[0]
    assert v.reason is Reason.PAIR_PROMPT_MISMATCH


def test_prompt_mismatch_from_two_transcripts():
    obj = {"chosen": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
           "rejected": [{"role": "user", "content": "Bye now"}, {"role": "assistant", "content": "Goodbye."}]}
    v = PairStructureFilter()([ex(obj)])[0]
    assert v.reason is Reason.PAIR_PROMPT_MISMATCH


def test_same_prompt_up_to_whitespace_is_no_mismatch():
    v = PairStructureFilter()([ex({**PAIR, "rejected_prompt": "Name  a colour. "})])[0]
    assert v.keep


def test_empty_side():
    v = PairStructureFilter()([ex({**PAIR, "rejected": "   "})])[0]
    assert v.reason is Reason.PAIR_EMPTY_SIDE


def test_sft_examples_pass_untouched():
    v = PairStructureFilter()([ex({"instruction": "Say hi", "output": "Say hi"})])[0]
    assert v.keep and not v.scores


def test_margin_check_reads_the_model_stage_feature():
    stage = PairMarginCheck(min_margin=0.5)
    low, high, none = ex(PAIR), ex({**PAIR, "id": "q"}), ex({**PAIR, "id": "r"})
    low.features.reward_margin = 0.2
    high.features.reward_margin = 0.5
    verdicts = stage([low, high, none])
    assert [v.reason for v in verdicts] == [Reason.PAIR_LOW_MARGIN, None, None]
    assert stage.stats.rejected == {"pair_low_margin": 1}
    assert stage.version() == {"min_margin": 0.5}


def test_margin_check_rejects_bad_settings():
    with pytest.raises(ValueError, match="min_margin"):
        PairMarginCheck(min_margin=float("nan"))


def test_structure_filter_in_a_pipeline_counts_reasons():
    rows = [PAIR, {**PAIR, "id": "i", "rejected": PAIR["chosen"]}, {**PAIR, "id": "m", "rejected_prompt": "Other?"}]
    pipe = Pipeline([PairStructureFilter()])
    out = pipe.process([RawRecord(orjson.dumps(r), {"file": "t", "line": i}) for i, r in enumerate(rows)])
    assert [(d.decision, d.reasons) for d in out] == [("accepted", []), ("rejected", ["pair_identical"]),
                                                      ("rejected", ["pair_prompt_mismatch"])]
    assert all("length_bias" in d.scores for d in out)


def test_length_bias_sign():
    assert length_bias(ex({**PAIR, "rejected": "x"})) > 0
    assert length_bias(ex({**PAIR, "chosen": "x"})) < 0


def test_quality_never_imports_torch_at_import_time():
    import subprocess
    import sys

    code = ("import sys, quality.build, quality.filters.pairs, quality.scoring.thresholds, models, models.stage, "
            "streams.assemble; "
            "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
