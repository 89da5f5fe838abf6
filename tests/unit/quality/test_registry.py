"""The stage registry: a stage registers itself and appears in the settings, the generated
tables and the assembled pipeline; pipeline.stages reorders; typed features round-trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pytest

from quality.build import build_pipeline
from quality.config import PipelineSettings, load, pipeline_settings_class
from quality.features import Features
from quality.reasons import Reason
from quality.records import RawRecord
from quality.registry import REGISTRY, reasons_table, stages_table
from quality.stage import KEEP, Stage, Verdict

ROOT = Path(__file__).resolve().parents[3]


@dataclasses.dataclass(frozen=True)
class ShoutSettings:
    """Settings of the toy filter."""

    max_caps_share: float = 0.5  # share of upper-case letters from which a response shouts


class ShoutFilter(Stage):
    """Rejects responses written mostly in capitals (a toy filter of docs/architecture.md)."""

    name = "shout"
    reasons = frozenset({Reason.BAD_ENCODING})

    def __init__(self, *, max_caps_share: float = 0.5) -> None:
        super().__init__()
        self.max_caps_share = max_caps_share

    def check(self, ex):
        letters = [c for c in ex.response_text if c.isalpha()]
        if letters and sum(c.isupper() for c in letters) / len(letters) > self.max_caps_share:
            return Verdict(Reason.BAD_ENCODING, detail="shouting")
        return KEEP


@pytest.fixture
def toy_registry():
    """The shipped registry plus the toy filter, registered as its module would (rank 35: after length)."""
    registry = REGISTRY.copy()
    registry.register(ShoutFilter, rank=35, section="shout", settings=ShoutSettings,
                      build=lambda s, _: ShoutFilter(max_caps_share=s.max_caps_share))
    return registry


def raw(output: str, i: int = 1) -> RawRecord:
    return RawRecord(orjson.dumps({"id": f"r{i}", "instruction": "Say something.", "output": output}),
                     {"file": "t", "line": i})


def test_a_registered_stage_is_in_the_settings_the_tables_and_the_pipeline(toy_registry):
    settings_cls = pipeline_settings_class(toy_registry)
    settings = load(settings_cls, env={"SIEVE_SHOUT__MAX_CAPS_SHARE": "0.9"},
                    overrides={"scoring.enabled": False, "semantic_dedup.enabled": False})
    assert settings.shout == ShoutSettings(max_caps_share=0.9)
    assert "| `shout` | score | Rejects responses written mostly in capitals" in stages_table(toy_registry)
    assert "`shout`" in reasons_table(toy_registry).split("`bad_encoding`")[1].split("\n")[0]

    from streams.config_docs import _rows
    assert ("shout.max_caps_share", "SIEVE_SHOUT__MAX_CAPS_SHARE", "float", "0.5",
            "share of upper-case letters from which a response shouts") in _rows(settings_cls, [])

    pipeline = build_pipeline(settings, registry=toy_registry)
    names = [s.name for s in pipeline.stages]
    assert names.index("length") < names.index("shout") < names.index("encoding")
    loud, calm = pipeline.process([raw("I AM SHOUTING AT YOU NOW", 1), raw("I am calm, Mostly.", 2)])
    assert (loud.reasons, loud.details["shout"]) == (["bad_encoding"], "shouting") and calm.decision == "accepted"
    assert pipeline.stats()["shout"]["rejected"] == {"bad_encoding": 1}
    assert "shout" not in PipelineSettings.__dataclass_fields__ and "shout" not in REGISTRY.default_order()


def test_pipeline_stages_reorders_and_names_unknown_stages():
    settings = load(PipelineSettings, env={}, overrides={"scoring.enabled": False, "stages": "pii,length,empty"})
    assert [s.name for s in build_pipeline(settings).stages] == ["pii", "length", "empty"]
    bad = dataclasses.replace(settings, stages=("length", "nope"))
    with pytest.raises(ValueError, match="unknown stage 'nope'; registered: .*length"):
        build_pipeline(bad)
    with pytest.raises(ValueError, match="more than once"):
        build_pipeline(dataclasses.replace(settings, stages=("length", "length")))


def test_default_order_is_cheapest_first_and_phases_are_declared():
    order = REGISTRY.default_order()
    assert order[0] == "pii" and order.index("refusal") < order.index("exact_dedup") < order.index("near_dedup")
    assert order.index("near_dedup") < order.index("quality_gate") < order.index("semantic_dedup") \
        < order.index("pair_margin")
    decide = {e.name for e in REGISTRY.entries() if e.cls.phase == "decide"}
    assert {"exact_dedup", "near_dedup", "semantic_dedup", "quality_gate", "pair_margin"} <= decide
    assert not decide & {"pii", "empty", "length", "encoding", "repetition", "refusal", "pair_structure", "decontam"}


def test_a_new_section_after_the_settings_are_assembled_is_an_error():
    class Late(Stage):
        name = "late"

    with pytest.raises(RuntimeError, match="new settings section 'late'"):
        REGISTRY.register(Late, rank=1, section="late", settings=ShoutSettings)
    assert "late" not in REGISTRY.default_order()


def test_generated_docs_are_current():
    from streams.docs import pages

    stale = [str(p.relative_to(ROOT)) for p, text in pages().items() if p.read_text(encoding="utf-8") != text]
    assert not stale, f"run: python -m streams.docs (stale: {stale})"


def test_features_round_trip_exactly_through_json():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=384).astype(np.float32)
    f = Features(content_hash=b"\x00\x01" * 8, minhash=rng.integers(0, 2**32, 128, dtype=np.uint64).astype(np.uint32),
                 minhash_key="num_perm=128,ngram=2", embedding=emb / np.linalg.norm(emb), quality=0.123456789,
                 reward_margin=-1.5)
    back = Features.from_dict(orjson.loads(orjson.dumps(f.to_dict())))
    assert back.content_hash == f.content_hash and back.quality == f.quality and back.reward_margin == -1.5
    assert back.minhash_key == f.minhash_key
    np.testing.assert_array_equal(back.minhash, f.minhash)
    np.testing.assert_array_equal(back.embedding, f.embedding)
    assert back.minhash.dtype == np.uint32 and back.embedding.dtype == np.float32
    assert Features.from_dict({}).to_dict() == {}
    with pytest.raises(ValueError, match="unknown feature"):
        Features.from_dict({"embeding": ""})
    with pytest.raises(ValueError, match="'embedding' has a bad value"):
        Features.from_dict({"embedding": "abc"})


def test_a_model_embedding_travels_as_float16_and_comes_back_bit_for_bit():
    """The model stage stores float16 values (half_precision): the wire form is half the bytes of
    float32, and the decider gets the very vector the scorer had, so the roles decide alike."""
    from quality.features import HALF_PREFIX, half_precision

    rng = np.random.default_rng(1)
    emb = rng.normal(size=384).astype(np.float32)
    emb = half_precision(emb / np.linalg.norm(emb))
    wire = Features(embedding=emb).to_dict()["embedding"]
    whole = Features(embedding=emb + 1e-7).to_dict()["embedding"]  # not float16 values: float32 on the wire
    assert wire.startswith(HALF_PREFIX) and len(wire) < 0.55 * len(whole)
    back = Features.from_dict(orjson.loads(orjson.dumps({"embedding": wire}))).embedding
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, emb)
    full = rng.normal(size=384).astype(np.float32)  # not float16 values: sent whole, still exact
    np.testing.assert_array_equal(Features.from_dict(Features(embedding=full).to_dict()).embedding, full)
    assert float(np.dot(emb, emb)) == pytest.approx(1.0, abs=2e-3)  # rounding keeps it a unit vector, nearly
