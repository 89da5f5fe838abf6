"""A stage that raises: one poison example is isolated, a broken stage stops everything.

The stages here are fakes on purpose: a real stage cannot be broken on demand.
"""

from __future__ import annotations

import orjson
import pytest

from quality.pipeline import Pipeline
from quality.reasons import Reason
from quality.records import RawRecord
from quality.stage import CANARIES, KEEP, Stage, StageBroken


def raws(outputs: list[str]) -> list[RawRecord]:
    return [RawRecord(orjson.dumps({"instruction": "Say something.", "output": o}), {"topic": "t", "partition": 0,
                                                                                      "offset": k})
            for k, o in enumerate(outputs)]


class PoisonSensitive(Stage):
    """Raises on any example whose response holds 'boom' (a bug that one input trips)."""

    name = "poison_sensitive"
    reasons = frozenset({Reason.TOO_SHORT})

    def check(self, ex):
        if "boom" in ex.response_text:
            raise KeyError("boom")
        return KEEP


class Broken(Stage):
    """Raises on everything, like a model whose weights are gone."""

    name = "broken"
    reasons = frozenset()

    def check_batch(self, batch):
        raise OSError("model file missing: /models/head.safetensors")


def test_one_poison_example_is_isolated_naming_the_stage_and_the_exception():
    p = Pipeline([PoisonSensitive()])
    out = p.process(raws(["fine answer", "boom", "also fine"]))
    assert [d.decision for d in out] == ["accepted", "dead_letter", "accepted"]
    assert out[1].reasons == [Reason.PROCESSING_ERROR.value]
    assert out[1].error == "stage poison_sensitive: KeyError: 'boom'"
    assert out[1].origin == {"topic": "t", "partition": 0, "offset": 1}
    assert p.stats()["poison_sensitive"]["seen"] == 2  # the failed attempts are not counted


def test_a_batch_of_only_poison_is_dead_lettered_when_the_canary_passes():
    p = Pipeline([PoisonSensitive()])
    out = p.process(raws(["boom", "boom again"]))
    assert [(d.decision, d.reasons) for d in out] == [("dead_letter", [Reason.PROCESSING_ERROR.value])] * 2
    (single,) = p.process(raws(["boom"]))  # a batch of one (the stream worker's usual poison case)
    assert single.decision == "dead_letter" and "stage poison_sensitive: KeyError" in single.error
    assert p.stats()["poison_sensitive"] == {"seen": 0, "passed": 0, "rejected": {}, "seconds": 0.0}


def test_a_broken_stage_stops_the_pipeline_with_a_clear_error():
    p = Pipeline([PoisonSensitive(), Broken()])
    with pytest.raises(StageBroken, match=r"stage 'broken' failed on all 3 example\(s\).*OSError: model file "
                                          r"missing.*canary.*fix the stage"):
        p.process(raws(["a fine answer", "another one", "a third"]))
    assert sum(p.decisions.values()) == 0  # nothing of the batch was decided


def test_a_broken_stage_is_found_for_preference_pairs_too():
    p = Pipeline([Broken()])
    pair = RawRecord(orjson.dumps({"prompt": "q?", "chosen": "good answer", "rejected": "bad"}), {"file": "f",
                                                                                                 "line": 1})
    with pytest.raises(StageBroken):
        p.process([pair])
    assert CANARIES["preference"].kind == "preference" and CANARIES["sft"].kind == "sft"


def test_parse_and_normalize_bugs_are_isolated_too(monkeypatch):
    import quality.pipeline as pipeline_module

    real = pipeline_module.normalize_example

    def flaky(ex):
        if "trip" in ex.response_text:
            raise UnicodeError("normalizer bug")
        return real(ex)

    monkeypatch.setattr(pipeline_module, "normalize_example", flaky)
    out = Pipeline([]).process(raws(["ok answer", "trip it"]))
    assert [d.decision for d in out] == ["accepted", "dead_letter"]
    assert out[1].error == "stage normalize: UnicodeError: normalizer bug" and out[1].id == "t/0/1"
    assert orjson.loads(out[1].raw)["output"] == "trip it"
