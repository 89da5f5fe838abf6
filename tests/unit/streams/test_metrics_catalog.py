"""The quality-level series of streams/metrics/worker.py on a fresh registry, and docs/metrics.md against the code."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from quality.envelope import Decision
from quality.records import RawRecord
from streams.metrics import DUPLICATE_KINDS, SieveMetrics
from streams.metrics.docs import catalog, render

ROOT = Path(__file__).resolve().parents[3]
ANSWER = ("Photosynthesis is the process by which green plants, algae and some bacteria turn light energy, "
          "water and carbon dioxide into glucose and oxygen. It happens in the chloroplasts, where chlorophyll "
          "absorbs mostly red and blue light, and it feeds nearly every food chain on the planet.")


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_duplicates_by_kind_start_at_zero_and_count_real_duplicates(cheap_pipeline):
    registry = CollectorRegistry()
    metrics = SieveMetrics(registry)
    assert set(DUPLICATE_KINDS.values()) == {"exact", "near", "semantic"}
    for kind in ("exact", "near", "semantic"):
        assert value(registry, "sieve_duplicates_total", kind=kind) == 0
    pipeline = cheap_pipeline()
    base = {"instruction": "Explain photosynthesis in one sentence.", "output": ANSWER}
    near = {**base, "output": ANSWER + " Indeed."}  # one word more
    payloads = [{**base, "id": "a"}, {**base, "id": "b"}, {**near, "id": "c"}]
    raws = [RawRecord(orjson.dumps(p), {"topic": "t", "partition": 0, "offset": i}) for i, p in enumerate(payloads)]
    decisions = pipeline.process(raws)
    assert [d.reasons for d in decisions] == [[], ["duplicate_exact"], ["duplicate_near"]]
    metrics.observe_batch(pipeline, decisions, 0.01)
    assert value(registry, "sieve_duplicates_total", kind="exact") == 1
    assert value(registry, "sieve_duplicates_total", kind="near") == 1
    assert value(registry, "sieve_duplicates_total", kind="semantic") == 0
    # near_jaccard reaches the score histogram for every example near dedup saw, by decision
    assert value(registry, "sieve_score_count", score="near_jaccard", decision="accepted") == 1
    assert value(registry, "sieve_score_count", score="near_jaccard", decision="rejected") == 1
    assert value(registry, "sieve_score_sum", score="near_jaccard", decision="rejected") >= 0.8


def decision(kind: str, scores: dict[str, float]) -> Decision:
    return Decision("x", kind, [] if kind == "accepted" else ["low_quality"], scores, {"file": "f", "line": 1})


def test_score_histograms_take_known_scores_only_with_their_buckets():
    registry = CollectorRegistry()
    metrics = SieveMetrics(registry)
    metrics.observe_decisions([
        decision("accepted", {"quality": 0.93, "semantic_similarity": 0.41, "reward_margin": 1.7}),
        decision("rejected", {"quality": 0.03, "reward": -2.5, "pii_email": 2.0, "length_bias": 0.3,
                              "contamination": float("nan")}),
    ])
    assert value(registry, "sieve_score_bucket", score="quality", decision="accepted", le="0.9") == 0
    assert value(registry, "sieve_score_bucket", score="quality", decision="accepted", le="0.95") == 1
    assert value(registry, "sieve_score_bucket", score="quality", decision="rejected", le="0.05") == 1
    assert value(registry, "sieve_score_sum", score="semantic_similarity", decision="accepted") == pytest.approx(0.41)
    assert value(registry, "sieve_reward_score_bucket", score="reward_margin", decision="accepted", le="1.0") == 0
    assert value(registry, "sieve_reward_score_bucket", score="reward_margin", decision="accepted", le="2.0") == 1
    assert value(registry, "sieve_reward_score_bucket", score="reward", decision="rejected", le="-2.0") == 1
    assert value(registry, "sieve_reward_score_bucket", score="reward", decision="rejected", le="-4.0") == 0
    # prometheus-client exposes no _sum for a histogram with negative buckets (OpenMetrics)
    assert value(registry, "sieve_reward_score_sum", score="reward", decision="rejected") is None
    names = {s.labels.get("score") for fam in registry.collect() for s in fam.samples}
    assert not names & {"pii_email", "length_bias"}  # counts and diagnostics are not score histograms
    assert value(registry, "sieve_score_count", score="contamination", decision="rejected") is None  # NaN skipped


def test_model_stage_batch_size_and_throughput_from_stage_stats():
    registry = CollectorRegistry()
    metrics = SieveMetrics(registry)
    stats = {"parse": {"seen": 40, "passed": 40, "rejected": {}, "seconds": 0.001},
             "model_score": {"seen": 32, "passed": 30, "rejected": {"low_quality": 2}, "seconds": 0.5}}
    metrics.observe_stages(stats)
    assert value(registry, "sieve_model_batch_size_count", stage="model_score") == 1
    assert value(registry, "sieve_model_batch_size_sum", stage="model_score") == 32
    assert value(registry, "sieve_model_examples_per_second", stage="model_score") == pytest.approx(64.0)
    assert value(registry, "sieve_model_batch_size_count", stage="parse") is None  # not a model stage
    later = {**stats, "model_score": {"seen": 48, "passed": 45, "rejected": {"low_quality": 3}, "seconds": 0.6}}
    metrics.observe_stages(later)  # cumulative stats: the second batch is 16 examples in 0.1 s
    assert value(registry, "sieve_model_batch_size_sum", stage="model_score") == 48
    assert value(registry, "sieve_model_examples_per_second", stage="model_score") == pytest.approx(160.0)


def test_catalog_lists_every_series_of_the_worker_and_the_batcher():
    rows = catalog()
    names = [r.name for r in rows]
    assert len(names) == len(set(names))
    registry = CollectorRegistry()
    from streams.metrics.batcher import BatchMetrics

    SieveMetrics(registry)
    BatchMetrics(registry)
    families = {f.name for f in registry.collect()}
    assert {r.family for r in rows} == families
    for expected in ("sieve_examples_total", "sieve_score", "sieve_consumer_lag", "sieve_model_batch_size",
                     "sieve_finetune_batches_total", "sieve_finetune_batch_age_seconds"):
        assert expected in names
    examples = next(r for r in rows if r.name == "sieve_examples_total")
    assert (examples.type, examples.labels, examples.process) == ("counter", ("decision", "reason", "source"),
                                                                  "sieve run")


def test_docs_metrics_md_is_generated_from_the_code():
    doc = ROOT / "docs" / "metrics.md"
    assert doc.read_text() == render(), \
        "docs/metrics.md is stale: run `python -m streams.metrics.docs > docs/metrics.md`"


def test_readme_metrics_section_has_one_line_per_metric():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^## Metrics\n(.*?)(?=^## )", readme, re.S | re.M)
    assert m, "README.md has no '## Metrics' section"
    listed = re.findall(r"^- `(sieve_[a-z0-9_]+)`", m.group(1), re.M)
    assert sorted(listed) == sorted(r.name for r in catalog())
