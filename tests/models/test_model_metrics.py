"""Model-level metrics from the real encoder and heads on CPU: batch size, throughput, score histograms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from quality.config import PipelineSettings, load
from quality.records import RawRecord
from streams.assemble import build_pipeline
from streams.metrics import SieveMetrics

pytestmark = pytest.mark.models

MIT_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "mit_sample.jsonl"


def test_model_stage_batch_throughput_and_scores_reach_the_registry(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    pipeline = build_pipeline(load(PipelineSettings, env={}))
    assert "model_score" in [s.name for s in pipeline.stages]
    lines = [line for line in MIT_SAMPLE.read_bytes().splitlines() if line.strip()]
    pairs = [line for line in lines if b'"chosen"' in line]
    sft = [line for line in lines if b'"chosen"' not in line]
    registry = CollectorRegistry()
    metrics = SieveMetrics(registry)
    for n, batch in enumerate((sft[:12], sft[12:18] + pairs[:6])):  # two worker batches of real rows
        raws = [RawRecord(line, {"file": "mit_sample", "line": 100 * n + i}) for i, line in enumerate(batch)]
        metrics.observe_batch(pipeline, pipeline.process(raws), 1.0)

    def value(name, **labels):
        return registry.get_sample_value(name, labels) or 0.0

    scored = pipeline.stats()["model_score"]["seen"]
    assert scored > 12
    assert value("sieve_model_batch_size_count", stage="model_score") == 2
    assert value("sieve_model_batch_size_sum", stage="model_score") == scored
    assert value("sieve_model_examples_per_second", stage="model_score") > 0
    quality = sum(value("sieve_score_count", score="quality", decision=d) for d in ("accepted", "rejected"))
    assert quality == scored  # every example the model saw has a quality score in the histogram
    assert value("sieve_score_count", score="semantic_similarity", decision="accepted") > 0
    rewards = sum(value("sieve_reward_score_count", score=s, decision=d)
                  for s in ("reward", "reward_margin") for d in ("accepted", "rejected"))
    assert rewards == scored  # SFT examples get `reward`, preference pairs `reward_margin`
    assert sum(value("sieve_reward_score_count", score="reward_margin", decision=d)
               for d in ("accepted", "rejected")) >= 1
