"""streams/metrics/worker.py on a fresh registry: series from real pipeline decisions, and the HTTP endpoints."""

from __future__ import annotations

import urllib.error
import urllib.request

import orjson
import pytest
from prometheus_client import CollectorRegistry

from quality.records import RawRecord
from streams.metrics import SieveMetrics, serve

GOOD = {"instruction": "Name three primary colors.", "output": "Red, yellow and blue are the primary colors."}
SOURCE = "teknium1/GPTeacher:Codegen/codegen-instruct.json"



def raws() -> list[RawRecord]:
    payloads = [
        orjson.dumps({**GOOD, "id": "a", "source": SOURCE}),
        orjson.dumps({**GOOD, "id": "b", "source": "someone/else"}),          # duplicate_exact, other source
        orjson.dumps({"id": "c", "instruction": "Say hi", "output": ""}),      # empty_response, no source
        b"{not json",                                                          # invalid_json
    ]
    return [RawRecord(p, {"topic": "t", "partition": 0, "offset": i}) for i, p in enumerate(payloads)]


@pytest.fixture
def observed(cheap_pipeline):
    registry = CollectorRegistry()
    metrics = SieveMetrics(registry, source_allowlist=[SOURCE])
    pipeline = cheap_pipeline()
    decisions = pipeline.process(raws())
    metrics.observe_batch(pipeline, decisions, 0.02, lag={0: 7, 1: -3})
    return registry, metrics, pipeline


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_examples_by_decision_reason_and_closed_source(observed):
    registry, _, _ = observed
    assert value(registry, "sieve_examples_total", decision="accepted", reason="none", source=SOURCE) == 1
    assert value(registry, "sieve_examples_total", decision="rejected", reason="duplicate_exact",
                 source="other") == 1
    assert value(registry, "sieve_examples_total", decision="rejected", reason="empty_response",
                 source="unknown") == 1
    assert value(registry, "sieve_examples_total", decision="dead_letter", reason="invalid_json",
                 source="unknown") == 1


def test_every_reason_carried_is_counted_beside_the_deciding_one(tmp_path, cheap_pipeline):
    """A contaminated example rejected first as repetitive counts once in sieve_examples_total
    (reason=repetitive) and under both codes in sieve_reasons_total."""
    item = ("Janet's ducks lay sixteen eggs per day and she eats three for breakfast every morning, how many "
            "eggs does she sell at the farmers market")
    bench = tmp_path / "bench.jsonl"
    bench.write_bytes(orjson.dumps({"id": "gsm-1", "text": item}) + b"\n")
    pipeline = cheap_pipeline(**{"decontam.benchmark_paths": (str(bench),)})
    registry = CollectorRegistry()
    metrics = SieveMetrics(registry)
    loop = orjson.dumps({"instruction": item, "output": "The ducks lay eggs and the eggs are sold. " * 30})
    metrics.observe_decisions(pipeline.process([RawRecord(loop, {"topic": "t", "partition": 0, "offset": 0})]))
    assert value(registry, "sieve_examples_total", decision="rejected", reason="repetitive", source="unknown") == 1
    assert value(registry, "sieve_examples_total", decision="rejected", reason="contaminated",
                 source="unknown") is None
    assert value(registry, "sieve_reasons_total", decision="rejected", reason="repetitive") == 1
    assert value(registry, "sieve_reasons_total", decision="rejected", reason="contaminated") == 1


def test_stage_batch_index_lag_and_timestamp_series(observed):
    registry, metrics, pipeline = observed
    assert value(registry, "sieve_batch_size_count") == 1 and value(registry, "sieve_batch_size_sum") == 4
    assert value(registry, "sieve_batch_seconds_sum") == pytest.approx(0.02)
    assert value(registry, "sieve_stage_examples_total", stage="parse", result="passed") == 3
    assert value(registry, "sieve_stage_examples_total", stage="parse", result="rejected") == 1
    assert value(registry, "sieve_stage_examples_total", stage="exact_dedup", result="rejected") == 1
    assert value(registry, "sieve_stage_seconds_count", stage="exact_dedup") == 1
    assert value(registry, "sieve_dedup_index_size", kind="exact") == 1
    assert value(registry, "sieve_consumer_lag", partition="0") == 7
    assert value(registry, "sieve_consumer_lag", partition="1") == 0  # never negative
    assert value(registry, "sieve_last_batch_timestamp_seconds") > 1.6e9
    # a second batch counts only what is new: stage counters move by the new batch alone
    more = pipeline.process([RawRecord(orjson.dumps({**GOOD, "id": "d"}), {"file": "f", "line": 1})])
    metrics.observe_batch(pipeline, more, 0.01)
    assert value(registry, "sieve_stage_examples_total", stage="parse", result="passed") == 4
    assert value(registry, "sieve_stage_seconds_count", stage="exact_dedup") == 2
    assert value(registry, "sieve_stage_examples_total", stage="exact_dedup", result="rejected") == 2


def test_labels_never_carry_ids_or_content(observed):
    registry, _, _ = observed
    from prometheus_client.exposition import generate_latest

    text = generate_latest(registry).decode()
    for needle in ('"a"', '"b"', '"c"', "primary colors", "someone/else", "Say hi"):
        assert needle not in text


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_http_metrics_health_and_readiness(observed):
    registry, _, _ = observed
    ready = {"value": False}
    server = serve(registry, "127.0.0.1", 0, ready=lambda: ready["value"])
    port = server.server_address[1]
    try:
        code, text = get(port, "/metrics")
        assert code == 200 and "sieve_examples_total{" in text
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz")[0] == 503
        ready["value"] = True
        assert get(port, "/readyz")[0] == 200
        assert get(port, "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_taken_port_error_names_the_setting(observed):
    registry, _, _ = observed
    server = serve(registry, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="SIEVE_METRICS__PORT"):
            serve(registry, "127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
