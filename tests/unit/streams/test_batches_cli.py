"""`sieve curate --batches` and `sieve batches`: file mode cuts batches; operators list, show, verify, cut."""

import json
import logging
from collections import namedtuple
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from batches.assembler import BatchAssembler
from streams.batcher import Batcher
from streams.cli import main
from streams.config import Settings
from streams.metrics.batcher import BatchMetrics


@pytest.fixture(autouse=True)
def no_reports(monkeypatch):
    monkeypatch.setenv("SIEVE_BATCHES__REPORT", "false")  # plots are tested in test_batch_report.py
    # batching does not depend on the model stages (tests/models covers them)
    monkeypatch.setenv("SIEVE_PIPELINE__SCORING__ENABLED", "false")
    monkeypatch.setenv("SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED", "false")


def curate(mit_sample, tmp_path, capsys, *extra):
    rc = main(["curate", str(mit_sample), "--out", str(tmp_path / "out"), "--no-progress",
               "--batches", str(tmp_path / "batches"), *extra])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_curate_cuts_batches_by_count_and_at_the_end(mit_sample, tmp_path, capsys):
    report = curate(mit_sample, tmp_path, capsys, "--batch-size-examples", "30")
    accepted = report["decisions"]["accepted"]
    assert [b["trigger"] for b in report["batches"]] == ["count", "count", "end_of_input"]
    assert sum(b["examples"] for b in report["batches"]) == accepted
    # a second run over the same file: every id is already batched, nothing new
    again = curate(mit_sample, tmp_path, capsys)
    assert again["batches"] == []

    assert main(["batches", "list", "--dir", str(tmp_path / "batches")]) == 0
    listing = capsys.readouterr().out
    assert all(b["batch_id"] in listing for b in report["batches"]) and "open batch: 0 examples" in listing

    first = report["batches"][0]["batch_id"]
    assert main(["batches", "show", first, "--verify", "--dir", str(tmp_path / "batches")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["batch_id"] == first and shown["counts"]["examples"] == 30
    shard = tmp_path / "batches" / first / shown["files"][0]["path"]
    shard.write_bytes(shard.read_bytes() + b"\n")
    assert main(["batches", "show", first, "--verify", "--dir", str(tmp_path / "batches")]) == 1
    assert "MISMATCH " + shown["files"][0]["path"] in capsys.readouterr().err


def test_keep_open_then_an_operator_cuts_the_directory(mit_sample, tmp_path, capsys):
    report = curate(mit_sample, tmp_path, capsys, "--batch-keep-open")
    assert report["batches"] == []
    assert main(["batches", "list", "--dir", str(tmp_path / "batches")]) == 0
    assert f"open batch: {report['decisions']['accepted']} examples" in capsys.readouterr().out
    assert main(["batches", "cut", "--dir", str(tmp_path / "batches")]) == 0
    cut = json.loads(capsys.readouterr().out)
    assert cut["examples"] == report["decisions"]["accepted"] and Path(cut["manifest"]).is_file()
    assert main(["batches", "cut", "--dir", str(tmp_path / "batches")]) == 0
    assert json.loads(capsys.readouterr().out) == {"cut": None, "why": "the open batch is empty"}


def test_a_directory_in_use_is_a_usage_error(mit_sample, tmp_path, capsys):
    owner = BatchAssembler(tmp_path / "batches", report=False)
    rc = main(["curate", str(mit_sample), "--out", str(tmp_path / "out"), "--no-progress",
               "--batches", str(tmp_path / "batches")])
    assert rc == 2 and "in use by another process" in capsys.readouterr().err
    assert main(["batches", "cut", "--dir", str(tmp_path / "batches")]) == 1
    owner.shutdown()


def test_unknown_batch_names_the_list_command(tmp_path, capsys):
    BatchAssembler(tmp_path / "b", report=False).shutdown()
    assert main(["batches", "show", "000009-deadbeef", "--dir", str(tmp_path / "b")]) == 2
    assert "sieve batches list" in capsys.readouterr().err


def test_batch_metrics_on_a_fresh_registry():
    registry = CollectorRegistry()
    metrics = BatchMetrics(registry)
    assert registry.get_sample_value("sieve_finetune_batches_total", {"trigger": "age"}) == 0
    metrics.observe_closed({"trigger": "count", "counts": {"examples": 120}, "refusals": {"share": 0.25}})
    metrics.observe_open(7, 42.5)
    get = registry.get_sample_value
    assert get("sieve_finetune_batches_total", {"trigger": "count"}) == 1
    assert get("sieve_finetune_batch_examples_count") == 1 and get("sieve_finetune_batch_examples_sum") == 120
    assert get("sieve_finetune_open_batch_examples") == 7 and get("sieve_finetune_batch_age_seconds") == 42.5
    assert get("sieve_finetune_last_batch_refusal_share") == 0.25


Record = namedtuple("Record", "value offset timestamp")


def test_no_example_content_in_logs_or_metrics(tmp_path, caplog):
    """Feed, cut and close through the batcher's own code paths; no text of an example may leak."""
    secret = "Zebra-7731 is the private answer"
    envelope = {"id": "ex-1", "decision": "accepted", "source": "app",
                "example": {"messages": [{"role": "user", "content": "What is the answer?"},
                                         {"role": "assistant", "content": secret}]}}
    settings = Settings()
    registry = CollectorRegistry()
    batcher = Batcher(settings, registry=registry,
                      assembler=BatchAssembler(tmp_path / "b", max_examples=0, max_age_s=0, report=False))
    closed: list = []
    with caplog.at_level(logging.DEBUG):
        batcher._feed(settings.kafka.accepted_topic, [Record(json.dumps(envelope).encode(), 0, 0)], closed)
        batcher._feed(settings.kafka.accepted_topic, [Record(b"not json " + secret.encode(), 1, 0)], closed)
        batcher._feed(settings.kafka.control_topic,
                      [Record(json.dumps({"command": "cut", "requested_at": 4e9}).encode(), 0, 0)], closed)
    assert len(closed) == 1 and closed[0]["counts"]["examples"] == 1
    batcher.metrics.observe_closed(closed[0])
    assert secret not in caplog.text and "Zebra" not in caplog.text
    exposition = generate_latest(registry).decode()
    assert "Zebra" not in exposition and "ex-1" not in exposition
    batcher.assembler.shutdown()
