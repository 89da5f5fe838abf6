"""A real Prometheus scrapes a real `sieve run` worker while data flows; and nothing leaks.

One worker runs on unique topics with its metrics on a free port; the `prometheus`
binary scrapes it every second. Two slices of real examples (tests/data/mit_sample.jsonl,
plus an exact duplicate and bad payloads each) go to the raw topic one after the other.
The tests ask Prometheus's own query API whether the decisions, stage latency
histograms, consumer lag, duplicate and score series arrived, and whether they moved
with the second slice. The same run checks what must not leave the process: example
content in ``/metrics`` or in the INFO log.

In CI (``$CI`` set) a missing ``prometheus`` binary fails the Prometheus tests; locally
they skip with the install command. The security tests run either way.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from prom_utils import JOB, PrometheusServer, free_port, prometheus_binary
from stream_utils import Names, WorkerProcess, create_topics, produce, read_outputs, wait_for_outputs

pytestmark = pytest.mark.integration

MIT_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "mit_sample.jsonl"
#: Seconds for one slice's decisions to reach Prometheus (1 s scrapes, 0.1 s batches).
SERIES_TIMEOUT = 30.0
#: Seconds for every output of a slice to land on the output topics.
SLICE_TIMEOUT = 45.0
DECISIONS = ("accepted", "rejected", "dead_letter")
#: Distinctive words of the bad payloads; they must never show up in metrics or logs.
SECRET_WORDS = ("quokka marmalade", "wombat lantern", "prom-bad-1", "prom-bad-2")

EXAMPLES_BY_DECISION = f'sum by (decision) (sieve_examples_total{{job="{JOB}"}})'


def build_slices() -> tuple[list[bytes], list[bytes]]:
    """Two slices of real rows; each adds one exact duplicate (new id) and bad payloads."""
    rows = [line for line in MIT_SAMPLE.read_bytes().splitlines() if line.strip()]

    def again(line: bytes) -> bytes:
        obj = orjson.loads(line)
        obj["id"] = f"{obj['id']}-prom-again"
        return orjson.dumps(obj)

    first = rows[:30] + [again(rows[0]),
                         b'{"id": "prom-bad-1", "instruction": "Describe the quokka marmalade parade", "output": "It']
    second = rows[30:] + [again(rows[1]), b'{"id": "prom-bad-2", "instruction": "Name the wombat lantern',
                          b'{"id": "prom-bad-3", "output": "caf\xe9 \xff"}']
    return first, second


def content_needles(payloads: list[bytes]) -> set[str]:
    """Ids and 32-character openings of every text of the payloads, plus :data:`SECRET_WORDS`."""
    needles = set(SECRET_WORDS)

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key != "source":
            text = " ".join(value.split())
            if key == "id" or len(text) >= 24:
                needles.add(text[:32])

    for p in payloads:
        try:
            walk(orjson.loads(p))
        except orjson.JSONDecodeError:
            pass
    return needles


def prometheus_phase(prom: PrometheusServer, expected: int, before: dict[str, float] | None) -> dict[str, float]:
    """Wait until Prometheus reports ``expected`` decisions in all, each decision above ``before``."""
    floor = before or {d: 0.0 for d in DECISIONS}
    return prom.wait_for(
        f"{expected} decisions with every decision above {floor}",
        lambda: prom.values(EXAMPLES_BY_DECISION, "decision"),
        lambda v: sum(v.values()) == expected and all(v.get(d, 0) > floor[d] for d in DECISIONS),
        SERIES_TIMEOUT)


@pytest.fixture(scope="module")
def flow(kafka, tmp_path_factory) -> dict[str, Any]:
    """One worker run over two slices, scraped by Prometheus when the binary is installed."""
    tmp = tmp_path_factory.mktemp("prometheus")
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    first, second = build_slices()
    create_topics(names, kafka.bootstrap)
    port = free_port()
    env = {**names.env(kafka.bootstrap), "SIEVE_METRICS__PORT": str(port), "SIEVE_METRICS__HOST": "127.0.0.1"}
    binary = shutil.which("prometheus")
    out: dict[str, Any] = {"payloads": first + second, "prom_error": None, "names": names}
    worker = WorkerProcess(env, tmp / "worker.log", tmp)  # --log-level defaults to INFO
    prom = PrometheusServer(binary, f"127.0.0.1:{port}", tmp) if binary else None
    try:
        worker.wait_ready()
        out["health"] = {p: worker.http(p)[0] for p in ("/healthz", "/readyz")}
        if prom is not None:
            prom.wait_ready()
        produce(kafka.bootstrap, f"{names.base}.raw", first)
        wait_for_outputs(kafka.bootstrap, names.outputs, len(first), worker, SLICE_TIMEOUT)
        if prom is not None:
            try:
                out["first"] = prometheus_phase(prom, len(first), None)
                out["first_batches"] = prom.values(f'sieve_batch_size_count{{job="{JOB}"}}', "job")[JOB]
            except AssertionError as exc:  # the Prometheus tests report it; the security tests still run
                out["prom_error"] = exc
        produce(kafka.bootstrap, f"{names.base}.raw", second)
        wait_for_outputs(kafka.bootstrap, names.outputs, len(first) + len(second), worker, SLICE_TIMEOUT)
        if prom is not None and out["prom_error"] is None:
            try:
                out["second"] = prometheus_phase(prom, len(first) + len(second), out["first"])
                out["second_batches"] = prom.values(f'sieve_batch_size_count{{job="{JOB}"}}', "job")[JOB]
                out["rate"] = prom.query(f'sum(rate(sieve_examples_total{{job="{JOB}"}}[30s]))')
                out["stages"] = prom.values(f'sum by (stage) (sieve_stage_seconds_count{{job="{JOB}"}})', "stage")
                out["stage_buckets"] = prom.query(f'sieve_stage_seconds_bucket{{job="{JOB}",stage="exact_dedup"}}')
                out["p95"] = prom.query('histogram_quantile(0.95, sum by (le, stage) '
                                        f'(rate(sieve_stage_seconds_bucket{{job="{JOB}"}}[1m])))')
                out["lag"] = prom.wait_for("consumer lag 0 on partition 0",
                                           lambda: prom.values(f'sieve_consumer_lag{{job="{JOB}"}}', "partition"),
                                           lambda v: v.get("0") == 0, SERIES_TIMEOUT)
                out["duplicates"] = prom.values(f'sieve_duplicates_total{{job="{JOB}"}}', "kind")
                out["scores"] = prom.values(f'sum by (score) (sieve_score_count{{job="{JOB}"}})', "score")
                out["index"] = prom.values(f'sieve_dedup_index_size{{job="{JOB}"}}', "kind")
                out["up"] = prom.values(f'up{{job="{JOB}"}}', "job")
            except AssertionError as exc:
                out["prom_error"] = exc
        out["metrics_text"] = worker.http("/metrics")[1]
        out["rc"] = worker.terminate()
    finally:
        worker.kill()
        if prom is not None:
            prom.stop()
    out["log"] = worker.log()
    out["outputs"] = read_outputs(kafka.bootstrap, names.outputs)
    return out


def prometheus_results(flow: dict[str, Any]) -> dict[str, Any]:
    prometheus_binary()  # fails in CI, skips locally, when the binary is missing
    if flow["prom_error"] is not None:
        raise flow["prom_error"]
    return flow


@pytest.mark.prometheus
def test_decision_series_arrive_and_move_while_data_flows(flow):
    r = prometheus_results(flow)
    first, second = r["first"], r["second"]
    n_first = len(build_slices()[0])
    assert sum(first.values()) == n_first and set(first) == set(DECISIONS)
    assert sum(second.values()) == len(r["payloads"])
    for decision in DECISIONS:  # every decision moved with the second slice
        assert second[decision] > first[decision], (decision, first, second)
    assert r["second_batches"] > r["first_batches"]
    assert float(r["rate"][0]["value"][1]) > 0
    assert r["up"] == {JOB: 1.0}


@pytest.mark.prometheus
def test_stage_latency_lag_duplicate_and_score_series_reach_prometheus(flow):
    r = prometheus_results(flow)
    for stage in ("parse", "empty", "length", "exact_dedup", "near_dedup"):
        assert r["stages"].get(stage, 0) >= 2, f"stage {stage!r} latency histogram missing: {r['stages']}"
    assert len(r["stage_buckets"]) >= 10  # the le buckets of the histogram, +Inf included
    assert {s["metric"]["stage"] for s in r["p95"]} >= {"parse", "exact_dedup"}
    assert r["lag"]["0"] == 0
    assert r["duplicates"]["exact"] >= 2  # the two duplicates the test made (the sample has more)
    assert set(r["duplicates"]) >= {"exact", "near", "semantic"}
    assert r["scores"].get("near_jaccard", 0) > 0
    assert r["index"]["exact"] == r["second"]["accepted"]


def test_health_and_readiness_answer_while_consuming(flow):
    assert flow["health"] == {"/healthz": 200, "/readyz": 200}
    assert flow["rc"] == 0, flow["log"][-3000:]


def test_the_needles_are_content_the_worker_handled(flow):
    """Positive control: the strings the next tests look for do travel on the output topics."""
    texts = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            texts.append(" ".join(value.split()))

    for o in flow["outputs"]:
        walk({k: o.envelope.get(k) for k in ("id", "example", "raw")})
    blob = "\n".join(texts)
    needles = content_needles(flow["payloads"])
    found = {n for n in needles if n in blob}
    assert len(flow["outputs"]) == len(flow["payloads"])
    assert len(needles) > 100 and len(found) >= 0.9 * len(needles), sorted(needles - found)[:10]


def test_metrics_endpoint_exposes_no_example_content(flow):
    text = flow["metrics_text"]
    assert "sieve_examples_total{" in text
    leaked = sorted(n for n in content_needles(flow["payloads"]) if n in text)
    assert not leaked, f"/metrics shows example content: {leaked[:5]}"
    sources = {orjson.loads(p).get("source") for p in flow["payloads"][:30]} - {None}
    assert sources and not any(s in text for s in sources), "a source outside the allow-list became a label"
    assert 'source="other"' in text


def test_info_log_has_no_example_content(flow):
    log = flow["log"]
    assert " INFO " in log and "recovery:" in log  # the worker did log at INFO
    leaked = sorted(n for n in content_needles(flow["payloads"]) if n in log)
    assert not leaked, f"the INFO log shows example content: {leaked[:5]}"
