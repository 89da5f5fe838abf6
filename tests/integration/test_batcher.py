"""`sieve batcher` against a real broker: accepted envelopes in, verified and loadable batches out."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from batches.assembler import BatchAssembler, BatchSettings
from quality.filemode import read_records
from streams.batcher import Batcher, batcher_group
from streams.config import KafkaSettings, Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: Seconds to wait for batches to be announced.
RECV_TIMEOUT = 60.0
#: Seconds a `sieve batches cut` subprocess may take (imports, connect, wait for the announcement).
CLI_TIMEOUT = 120.0


def _trainer():
    spec = importlib.util.spec_from_file_location("trainer_consumer", ROOT / "examples" / "trainer_consumer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


trainer = _trainer()


def settings_for(bootstrap: str, base: str, group: str, batch_dir: Path, **batches) -> Settings:
    kafka = KafkaSettings(brokers=bootstrap, raw_topic=f"{base}.raw", accepted_topic=f"{base}.accepted",
                          rejected_topic=f"{base}.rejected", dead_letter_topic=f"{base}.dead-letter",
                          batches_topic=f"{base}.batches", control_topic=f"{base}.control", partitions=1,
                          group_id=group)
    return Settings(kafka=kafka, batches=replace(BatchSettings(), dir=str(batch_dir), **batches))


def env_for(s: Settings) -> dict[str, str]:
    k = s.kafka
    return {**os.environ, "SIEVE_KAFKA__BROKERS": k.brokers, "SIEVE_KAFKA__CONTROL_TOPIC": k.control_topic,
            "SIEVE_KAFKA__BATCHES_TOPIC": k.batches_topic, "SIEVE_KAFKA__PARTITIONS": "1",
            "SIEVE_BATCHES__DIR": s.batches.dir}


def real_envelopes(pipeline) -> tuple[list[dict], list[dict]]:
    """Accepted and rejected envelopes of the real test slice, as the worker would publish them."""
    decisions = pipeline.process(list(read_records([ROOT / "tests" / "data" / "mit_sample.jsonl"])))
    versions = pipeline.versions()
    envs = [orjson.loads(orjson.dumps(d.envelope(versions), option=orjson.OPT_SERIALIZE_NUMPY)) for d in decisions]
    return [e for e in envs if e["decision"] == "accepted"], [e for e in envs if e["decision"] != "accepted"]


def produce(bootstrap: str, topic: str, envelopes: list[dict]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for env in envelopes:
            producer.send(topic, key=str(env.get("id")).encode(), value=orjson.dumps(env))
        producer.flush(timeout=30)
    finally:
        producer.close()


def read_announcements(bootstrap: str, topic: str, expected: int, timeout: float = RECV_TIMEOUT) -> list[dict]:
    """Every manifest on the batches topic, waiting until at least ``expected`` arrived."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                got += [(r.key.decode(), orjson.loads(r.value)) for r in records]
            if len(got) >= expected and not consumer.poll(timeout_ms=500):
                break
    finally:
        consumer.close()
    for key, manifest in got:
        assert key == manifest["batch_id"]
    return [m for _, m in got]


class BatcherThread:
    """A real Batcher polling in a background thread, stopped like SIGTERM stops `sieve batcher`."""

    def __init__(self, settings: Settings) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self.batcher = Batcher(settings, registry=self.registry, poll_timeout_s=0.2)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.batcher.run(self.stop_event)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> "BatcherThread":
        self.batcher.start()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the batcher did not stop"
        if self.error is not None:
            raise self.error


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close()


def end_offset(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def test_batches_from_the_topic_load_verify_and_hold_each_id_once(kafka, tmp_path, cheap_pipeline):
    base, group = f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}"
    s = settings_for(kafka.bootstrap, base, group, tmp_path / "batches", max_examples=20, max_age_s=0)
    accepted, rejected = real_envelopes(cheap_pipeline())
    assert len(accepted) > 40
    first, rest = accepted[:30], accepted[30:]

    # run 1: 30 accepted -> one batch of 20 announced, 10 left open; then the batcher stops
    with BatcherThread(s):
        produce(kafka.bootstrap, s.kafka.accepted_topic, first)
        produce(kafka.bootstrap, s.kafka.rejected_topic, rejected)
        assert len(read_announcements(kafka.bootstrap, s.kafka.batches_topic, 1)) == 1
        deadline = time.monotonic() + RECV_TIMEOUT
        while committed(kafka.bootstrap, batcher_group(s), s.kafka.accepted_topic) != len(first):
            assert time.monotonic() < deadline, "the batcher never committed its input offsets"
            time.sleep(0.2)

    # run 2 (a restart): the rest, plus 10 redelivered envelopes the first run already holds
    with BatcherThread(s) as run2:
        assert run2.batcher.assembler.open_count == 10
        produce(kafka.bootstrap, s.kafka.accepted_topic, rest + first[5:15])
        expected = len(accepted) // 20
        read_announcements(kafka.bootstrap, s.kafka.batches_topic, expected)
        # the operator cuts the partial batch: `sieve batches cut` through the control topic
        cut = subprocess.run([sys.executable, "-m", "streams.cli", "batches", "cut", "--wait", "60",
                              "--note", "integration test"], env=env_for(s), cwd=ROOT, capture_output=True,
                             text=True, timeout=CLI_TIMEOUT)
        assert cut.returncode == 0, cut.stderr
        assert '"announced"' in cut.stdout
        metrics = run2.registry.get_sample_value
        assert metrics("sieve_finetune_batches_total", {"trigger": "request"}) == 1
        assert metrics("sieve_finetune_redelivered_total") == 10

    manifests = read_announcements(kafka.bootstrap, s.kafka.batches_topic, expected + 1)
    assert [m["trigger"] for m in manifests] == ["count"] * expected + ["request"]
    assert [m["seq"] for m in manifests] == list(range(1, expected + 2))
    ids = []
    for manifest in manifests:  # what a trainer does: the manifest alone, checksums, then datasets
        assert trainer.verify(manifest) == []
        for kind in manifest["datasets"]:
            ds = trainer.load(manifest, kind, cache_dir=str(tmp_path / "hf"))
            assert sum(d.num_rows for d in ds.values()) == sum(manifest["counts"]["by_kind"][kind].values())
            ids += [i for d in ds.values() for i in d["id"]]
    assert len(ids) == len(set(ids)), "an example is in two batches"
    assert sorted(ids) == sorted(e["id"] for e in accepted), "an accepted example is missing from the batches"
    assert sum(m["window"]["decisions"].get("rejected", 0) for m in manifests) == len(rejected)
    assert committed(kafka.bootstrap, batcher_group(s), s.kafka.accepted_topic) == \
        end_offset(kafka.bootstrap, s.kafka.accepted_topic)


def test_a_batch_closed_offline_is_announced_on_start_and_a_trainer_follows(kafka, tmp_path, cheap_pipeline):
    base, group = f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}"
    s = settings_for(kafka.bootstrap, base, group, tmp_path / "batches", max_examples=0, max_age_s=0)
    accepted, _ = real_envelopes(cheap_pipeline())
    with BatchAssembler.from_settings(s.batches) as assembler:  # e.g. closed before a crash, never announced
        assembler.feed(accepted[:12])
    cut = subprocess.run([sys.executable, "-m", "streams.cli", "batches", "cut", "--dir", s.batches.dir],
                         env=env_for(s), cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert cut.returncode == 0 and '"cut": "000001-' in cut.stdout, cut.stderr
    with BatcherThread(s):
        (announced,) = read_announcements(kafka.bootstrap, s.kafka.batches_topic, 1)
    assert announced["counts"]["examples"] == 12
    listing = subprocess.run([sys.executable, "-m", "streams.cli", "batches", "list", "--dir", s.batches.dir],
                             env=env_for(s), cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert f"{announced['batch_id']}" in listing.stdout and "yes" in listing.stdout, listing.stderr

    out = subprocess.run([sys.executable, "examples/trainer_consumer.py", "--brokers", kafka.bootstrap,
                          "--topic", s.kafka.batches_topic, "--group", f"{group}-trainer", "--max-batches", "1",
                          "--timeout", "30", "--cache-dir", str(tmp_path / "hf")],
                         cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert f"batch {announced['batch_id']}: 12 examples" in out.stdout and "files verified" in out.stdout
    assert "SFTTrainer" in out.stdout


class BatcherProcess:
    """`sieve batcher` as a real subprocess, its log in a file; ready once /readyz answers 200."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")} | env
        self.log_path, self._log = log_path, open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "batcher"], env=full_env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.port: int | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = RECV_TIMEOUT) -> None:
        import re

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the batcher exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
            if self.port is None and (m := re.search(r"metrics on http://[^:]+:(\d+)/metrics", self.log())):
                self.port = int(m.group(1))
            if self.port is not None and self.http("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"the batcher was not ready after {timeout}s:\n{self.log()[-3000:]}")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def test_end_to_end_raw_input_to_a_loadable_batch(kafka, tmp_path):
    """`sieve run` and `sieve batcher` as real processes: raw payloads in, announced batches a trainer loads."""
    from stream_utils import Names, WorkerProcess, create_topics, read_outputs
    from stream_utils import produce as produce_raw

    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    env = {**names.env(kafka.bootstrap), "SIEVE_KAFKA__BATCHES_TOPIC": f"{names.base}.batches",
           "SIEVE_KAFKA__CONTROL_TOPIC": f"{names.base}.control", "SIEVE_BATCHES__DIR": str(tmp_path / "batches"),
           "SIEVE_BATCHES__MAX_EXAMPLES": "25", "SIEVE_BATCHES__MAX_AGE_S": "0"}
    create_topics(names, kafka.bootstrap)
    payloads = (ROOT / "tests" / "data" / "mit_sample.jsonl").read_bytes().splitlines()
    worker = WorkerProcess(env, tmp_path / "worker.log", tmp_path)
    batcher = BatcherProcess(env, tmp_path / "batcher.log")
    try:
        worker.wait_ready()
        batcher.wait_ready()
        produce_raw(kafka.bootstrap, f"{names.base}.raw", payloads)
        deadline = time.monotonic() + RECV_TIMEOUT
        while len(read_announcements(kafka.bootstrap, f"{names.base}.batches", 0, timeout=1)) < 2:
            assert time.monotonic() < deadline, f"no batches announced:\n{batcher.log()[-3000:]}"
        cut = subprocess.run([sys.executable, "-m", "streams.cli", "batches", "cut", "--wait", "60"],
                             env={k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")} | env,
                             cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        assert cut.returncode == 0, cut.stderr + batcher.log()[-3000:]
        status, metrics = batcher.http("/metrics")
        assert status == 200 and 'sieve_finetune_batches_total{trigger="count"} 2.0' in metrics
        assert batcher.terminate() == 0, batcher.log()[-3000:]  # SIGTERM: a clean stop
        assert worker.terminate() == 0, worker.log()[-3000:]
    finally:
        worker.kill()
        batcher.kill()
    accepted = [o.envelope for o in read_outputs(kafka.bootstrap, [f"{names.base}.accepted"])]
    manifests = read_announcements(kafka.bootstrap, f"{names.base}.batches", 3)
    assert [m["trigger"] for m in manifests] == ["count", "count", "request"]
    ids = []
    for manifest in manifests:
        assert trainer.verify(manifest) == []
        for kind in manifest["datasets"]:
            ids += [i for d in trainer.load(manifest, kind, cache_dir=str(tmp_path / "hf")).values() for i in d["id"]]
    assert len(ids) == len(set(ids)) and set(ids) == {e["id"] for e in accepted} and len(ids) > 50
    log = batcher.log()
    for env_ in accepted:  # the batcher's INFO log carries ids and counts, never content
        text = (env_["example"].get("messages") or env_["example"]["chosen"])[-1]["content"]
        assert text[:60] not in log
    assert len(accepted) == sum(m["counts"]["examples"] for m in manifests)
