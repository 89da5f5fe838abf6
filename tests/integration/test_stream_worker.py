"""The stream worker (`sieve run`) against a real broker: every input decided once, like file mode."""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
import pytest
from stream_utils import (MAX_MESSAGE_BYTES, Names, WorkerProcess, bad_payloads, create_topics, file_mode_decisions,
                          produce, read_outputs, slice_lines, wait_for_outputs)

from quality.envelope import DEAD_LETTER_RAW_BYTES

pytestmark = pytest.mark.integration

#: Kafka's default max.message.bytes; every envelope must stay below it.
KAFKA_DEFAULT_MAX_MESSAGE = 1_048_588


def build_inputs() -> tuple[list[bytes], dict[int, str]]:
    """Real rows, exact duplicates of some under new ids, and one bad payload of every kind.

    Returns the payloads in produce order and, for the bad ones, index -> expected reason.
    """
    rows = slice_lines()
    payloads = list(rows)
    for i, line in enumerate(rows[:40:4]):  # 10 exact duplicates, later in the stream
        obj = orjson.loads(line)
        obj["id"] = f"{obj['id']}-again"
        payloads.append(orjson.dumps(obj))
    expected = {}
    for payload, reason in bad_payloads():
        expected[len(payloads)] = reason
        payloads.append(payload)
    return payloads, expected


@pytest.fixture(scope="module")
def stream_run(kafka, tmp_path_factory):
    """One worker run over the inputs on a 1-partition topic; outputs, metrics and exit code."""
    tmp = tmp_path_factory.mktemp("stream")
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    payloads, expected = build_inputs()
    create_topics(names, kafka.bootstrap)
    produce(kafka.bootstrap, f"{names.base}.raw", payloads)
    worker = WorkerProcess(names.env(kafka.bootstrap), tmp / "worker.log", tmp)
    try:
        worker.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), worker)
        status = {p: worker.http(p) for p in ("/metrics", "/healthz", "/readyz")}
        rc = worker.terminate()
    finally:
        worker.kill()
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    return {"names": names, "payloads": payloads, "expected": expected, "outputs": outputs, "rc": rc,
            "http": status, "tmp": tmp, "log": worker.log()}


def by_offset(outputs) -> dict[int, object]:
    out = {}
    for o in outputs:
        off = o.envelope["origin"]["offset"]
        assert off not in out, f"input offset {off} decided twice: {out[off].envelope['id']}"
        out[off] = o
    return out


def test_every_input_is_decided_exactly_once(stream_run):
    outputs, payloads = stream_run["outputs"], stream_run["payloads"]
    assert stream_run["rc"] == 0, stream_run["log"][-3000:]
    assert len(outputs) == len(payloads)
    decided = by_offset(outputs)
    assert sorted(decided) == list(range(len(payloads)))
    topic_of = {"accepted": ".accepted", "rejected": ".rejected", "dead_letter": ".dead-letter"}
    for o in outputs:
        assert o.topic.endswith(topic_of[o.envelope["decision"]])
        assert o.key == o.envelope["id"].encode()
        assert len(o.value) < KAFKA_DEFAULT_MAX_MESSAGE
    explicit = [orjson.loads(p)["id"] for p in slice_lines()]
    ids = Counter(o.envelope["id"] for o in outputs)
    assert all(ids[i] == 1 for i in explicit)
    accepted = Counter(o.envelope["id"] for o in outputs if o.envelope["decision"] == "accepted")
    assert accepted and max(accepted.values()) == 1


def test_bad_inputs_get_the_expected_reasons(stream_run):
    decided = by_offset(stream_run["outputs"])
    for index, reason in stream_run["expected"].items():
        env = decided[index].envelope
        assert (env["decision"], env["reasons"]) == ("dead_letter", [reason]), env.get("error")
        assert env["origin"]["topic"] == f"{stream_run['names'].base}.raw"
    big = [decided[i].envelope for i, r in stream_run["expected"].items() if r == "too_large"]
    assert {e["raw_bytes"] > MAX_MESSAGE_BYTES for e in big} == {True}
    huge = max(big, key=lambda e: e["raw_bytes"])
    assert huge["raw_bytes"] > 1_000_000 and huge["raw_truncated"] is True
    assert len(huge["raw"]) == DEAD_LETTER_RAW_BYTES
    utf8 = [decided[i].envelope for i, r in stream_run["expected"].items() if r == "invalid_utf8"]
    assert utf8[0]["raw"] is None and len(utf8[0]["raw_sha256"]) == 64  # not UTF-8: cannot be redacted, dropped
    again = [o.envelope for o in stream_run["outputs"] if o.envelope["id"].endswith("-again")]
    assert len(again) == 10 and {tuple(e["reasons"]) for e in again} == {("duplicate_exact",)}


def test_stream_and_file_mode_decide_alike(stream_run, tmp_path, monkeypatch):
    payloads = stream_run["payloads"]
    file_decisions = file_mode_decisions(payloads, stream_run["names"], tmp_path, monkeypatch)
    stream = by_offset(stream_run["outputs"])
    assert len(stream) == len(payloads)
    for i, out in stream.items():
        if i not in file_decisions:
            assert out.envelope["reasons"] == ["invalid_json"] and payloads[i] == b""
            continue
        s, f = out.envelope, file_decisions[i]
        assert (s["decision"], s["reasons"]) == (f["decision"], f["reasons"]), (i, s["id"])
        if not s["id"].startswith(stream_run["names"].base):  # explicit ids (not derived from the origin)
            assert s["id"] == f["id"]
        assert s["example"] == f["example"]


def test_metrics_and_health_endpoints(stream_run):
    code, text = stream_run["http"]["/metrics"]
    assert code == 200
    totals = Counter()
    for line in text.splitlines():
        if line.startswith("sieve_examples_total{"):
            labels, value = line.rsplit(" ", 1)
            totals[labels.split('decision="')[1].split('"')[0]] += float(value)
    decisions = Counter(o.envelope["decision"] for o in stream_run["outputs"])
    assert totals == {k: float(v) for k, v in decisions.items()}
    assert 'sieve_dedup_index_size{kind="exact"}' in text
    assert 'sieve_consumer_lag{partition="0"} 0.0' in text
    assert stream_run["http"]["/healthz"][0] == 200
    assert stream_run["http"]["/readyz"][0] == 200


def test_three_partitions_every_input_once(kafka, unique_topic, unique_group, tmp_path):
    names = Names(unique_topic, unique_group)
    payloads = slice_lines()[:90] + [p for p, _ in bad_payloads()]
    create_topics(names, kafka.bootstrap, partitions=3)
    for i, chunk in enumerate((payloads[0::3], payloads[1::3], payloads[2::3])):
        produce(kafka.bootstrap, f"{names.base}.raw", chunk, partition=i)
    worker = WorkerProcess(names.env(kafka.bootstrap, partitions=3), tmp_path / "worker.log", tmp_path)
    try:
        worker.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), worker)
        assert worker.terminate() == 0
    finally:
        worker.kill()
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    origins = Counter((o.envelope["origin"]["partition"], o.envelope["origin"]["offset"]) for o in outputs)
    assert len(origins) == len(payloads) and set(origins.values()) == {1}
    assert {p for p, _ in origins} == {0, 1, 2}


def test_an_envelope_too_large_for_kafka_is_dead_lettered_and_the_worker_goes_on(kafka, unique_topic, unique_group,
                                                                                 tmp_path):
    """A valid example whose envelope exceeds kafka.max_output_bytes must not stop the worker
    (a restart would meet the same input again): it becomes a small too_large dead letter."""
    names = Names(unique_topic, unique_group)
    rows = [orjson.loads(line) for line in slice_lines()]
    long_answer = "\n\n".join(r["output"] for r in rows if isinstance(r.get("output"), str))[:40_000]
    big = orjson.dumps({"id": "big-1", "instruction": "Write a very long recipe.", "output": long_answer})
    payloads = [big] + slice_lines()[:10]
    create_topics(names, kafka.bootstrap)
    produce(kafka.bootstrap, f"{names.base}.raw", payloads)
    env = {**names.env(kafka.bootstrap), "SIEVE_KAFKA__MAX_OUTPUT_BYTES": "20000"}
    assert 20_000 < len(big) < MAX_MESSAGE_BYTES
    worker = WorkerProcess(env, tmp_path / "worker.log", tmp_path)
    try:
        worker.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), worker)
        assert worker.terminate() == 0, worker.log()[-2000:]
    finally:
        worker.kill()
    outputs = {o.envelope["origin"]["offset"]: o.envelope for o in read_outputs(kafka.bootstrap, names.outputs)}
    assert sorted(outputs) == list(range(len(payloads)))
    assert outputs[0]["decision"] == "dead_letter" and outputs[0]["reasons"] == ["too_large"]
    assert outputs[0]["id"] == "big-1" and "max_output_bytes" in outputs[0]["error"]
    assert "pipeline decision was accepted" in outputs[0]["error"]
