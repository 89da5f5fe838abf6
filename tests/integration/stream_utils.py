"""Helpers of the stream-worker integration tests: inputs, a `sieve run` subprocess, output readers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.config import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
SLICE = ROOT / "tests" / "data" / "stream_slice.jsonl"

#: Seconds to wait for every output of a run to appear.
RECV_TIMEOUT = 90.0
#: Seconds a worker may take to start (python imports, recovery, group join).
WORKER_START_TIMEOUT = 60.0
#: Seconds a worker may take to stop after SIGTERM.
WORKER_STOP_TIMEOUT = 30.0
#: Poll interval while waiting for outputs.
POLL_S = 0.05

#: The payload limit the tests run the pipeline with, so a `too_large` message is cheap to make.
MAX_MESSAGE_BYTES = 65_536


def slice_lines() -> list[bytes]:
    """The real-data slice (tests/data/stream_slice.jsonl), one payload per row, each with an id."""
    return [line for line in SLICE.read_bytes().splitlines() if line.strip()]


def bad_payloads() -> list[tuple[bytes, str]]:
    """(payload, expected dead-letter reason): one or more per kind, built around real rows."""
    real = json.loads(slice_lines()[0])
    big = {"id": "it-too-large", "instruction": "Repeat the text.", "output": "x" * (MAX_MESSAGE_BYTES + 10)}
    # just under the broker's 1 MiB message limit: the consumer must fetch it whole
    huge = {"id": "it-huge", "instruction": "Repeat the text.", "output": "y" * 1_000_000}
    return [
        (b'{"id": "it-bad-json", "instruction": "Summarize", "output": "A summary."', "invalid_json"),
        (b"", "invalid_json"),
        (orjson.dumps([real.get("instruction", "q"), "a list"]), "not_an_object"),
        (orjson.dumps({"id": "it-missing-output", "instruction": "Say hi"}), "schema_error"),
        (orjson.dumps({"id": "it-wrong-type", "instruction": "Say hi", "output": 7}), "schema_error"),
        (orjson.dumps({"id": "it-unknown", "text": "no known format here"}), "unknown_format"),
        (b'{"id": "it-bad-utf8", "instruction": "Translate", "output": "caf\xe9 \xff"}', "invalid_utf8"),
        (orjson.dumps(big), "too_large"),
        (orjson.dumps(huge), "too_large"),
    ]


@dataclass
class Names:
    """Topic and group names of one test, from the unique topic/group fixtures."""

    base: str
    group: str

    def env(self, bootstrap: str, partitions: int = 1) -> dict[str, str]:
        return {
            "SIEVE_KAFKA__BROKERS": bootstrap,
            "SIEVE_KAFKA__RAW_TOPIC": f"{self.base}.raw",
            "SIEVE_KAFKA__ACCEPTED_TOPIC": f"{self.base}.accepted",
            "SIEVE_KAFKA__REJECTED_TOPIC": f"{self.base}.rejected",
            "SIEVE_KAFKA__DEAD_LETTER_TOPIC": f"{self.base}.dead-letter",
            "SIEVE_KAFKA__SCORED_TOPIC": f"{self.base}.scored",
            "SIEVE_KAFKA__GROUP_ID": self.group,
            "SIEVE_KAFKA__PARTITIONS": str(partitions),
            "SIEVE_KAFKA__BATCH_MAX": "32",
            "SIEVE_KAFKA__BATCH_WITHIN_S": "0.1",
            "SIEVE_KAFKA__COMMIT_INTERVAL_S": "1.0",
            "SIEVE_KAFKA__SESSION_TIMEOUT_S": "6",
            "SIEVE_PIPELINE__MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
            # the stream mechanics are tested on the CPU-cheap stages; tests/models covers the model stage
            "SIEVE_PIPELINE__SCORING__ENABLED": "false",
            "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false",
            "SIEVE_METRICS__PORT": "0",
        }

    def kafka(self, bootstrap: str, partitions: int = 1) -> KafkaSettings:
        e = self.env(bootstrap, partitions)
        return KafkaSettings(brokers=bootstrap, raw_topic=e["SIEVE_KAFKA__RAW_TOPIC"],
                             accepted_topic=e["SIEVE_KAFKA__ACCEPTED_TOPIC"],
                             rejected_topic=e["SIEVE_KAFKA__REJECTED_TOPIC"],
                             dead_letter_topic=e["SIEVE_KAFKA__DEAD_LETTER_TOPIC"], group_id=self.group,
                             scored_topic=e["SIEVE_KAFKA__SCORED_TOPIC"], partitions=partitions)

    @property
    def outputs(self) -> list[str]:
        return [f"{self.base}.accepted", f"{self.base}.rejected", f"{self.base}.dead-letter"]


class WorkerProcess:
    """`sieve run` as a real subprocess, its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path, role: str | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")}
        full_env.update(env)
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.log_path = log_path
        self._log = open(log_path, "ab")
        role_args = ["--role", role] if role else []
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-progress", *role_args],
                                     env=full_env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)
        self.metrics_port: int | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = WORKER_START_TIMEOUT) -> None:
        """Wait until /readyz answers 200 (recovery done, consuming)."""
        self._wait_readyz((200,), "ready", timeout)

    def wait_serving(self, timeout: float = WORKER_START_TIMEOUT) -> None:
        """Wait until the process serves /readyz at all (a standby decider answers 503)."""
        self._wait_readyz((200, 503), "serving", timeout)

    def _wait_readyz(self, statuses: tuple[int, ...], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self.metrics_port is None:
                m = re.search(r"metrics on http://[^:]+:(\d+)/metrics", self.log())
                self.metrics_port = int(m.group(1)) if m else None
            if self.metrics_port is not None and self.http("/readyz")[0] in statuses:
                return
            time.sleep(0.1)
        raise AssertionError(f"worker not {what} after {timeout}s:\n{self.log()[-4000:]}")

    def ready(self) -> bool:
        return self.metrics_port is not None and self.http("/readyz")[0] == 200

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def terminate(self, timeout: float = WORKER_STOP_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def produce(bootstrap: str, topic: str, payloads: list[bytes], *, partition: int | None = None) -> None:
    """Send payloads in order (no key) and wait until the broker acknowledged all of them."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=1_100_000, linger_ms=5)
    try:
        for p in payloads:
            producer.send(topic, value=p, partition=partition)
        producer.flush(timeout=RECV_TIMEOUT)
    finally:
        producer.close()


def output_count(bootstrap: str, topics: list[str]) -> int:
    """How many committed records the output topics hold now (read ``read_committed``: the
    workers write in transactions, so end offsets also count commit markers and aborted records)."""
    return len(read_outputs(bootstrap, topics))


def wait_for_outputs(bootstrap: str, topics: list[str], expected: int, worker: WorkerProcess | None = None,
                     timeout: float = RECV_TIMEOUT) -> int:
    """Wait until the output topics hold at least ``expected`` records; return the count."""
    deadline = time.monotonic() + timeout
    n = output_count(bootstrap, topics)
    while n < expected and time.monotonic() < deadline:
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited with {worker.proc.returncode}:\n{worker.log()[-4000:]}")
        time.sleep(POLL_S)
        n = output_count(bootstrap, topics)
    assert n >= expected, f"only {n} of {expected} outputs after {timeout}s"
    return n


@dataclass
class Output:
    topic: str
    key: bytes | None
    value: bytes
    envelope: dict


def read_outputs(bootstrap: str, topics: list[str]) -> list[Output]:
    """Every committed record of the output topics, from the beginning to the current end
    (``read_committed``, as every consumer of Sieve's outputs reads)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed",
                             max_partition_fetch_bytes=2 * 1024 * 1024)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        end = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Output] = []
        deadline = time.monotonic() + RECV_TIMEOUT
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                out += [Output(tp.topic, r.key, r.value, orjson.loads(r.value)) for r in records if r.offset < end[tp]]
        return out
    finally:
        consumer.close()


def committed(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic)}
    finally:
        consumer.close()


def create_topics(names: Names, bootstrap: str, partitions: int = 1) -> None:
    from streams.topics import ensure_topics

    ensure_topics(names.kafka(bootstrap, partitions))


def file_mode_decisions(payloads: list[bytes], names: Names, out: Path, monkeypatch) -> dict[int, dict]:
    """``sieve curate`` of the same payloads under the same settings as the workers (the names'
    environment): payload index -> its file-mode envelope. File mode skips blank lines (a Kafka
    message has no such thing), so an empty payload has no entry: compare it on its own."""
    from quality.filemode import curate
    from streams.assemble import build_pipeline
    from streams.config import load_settings

    lines = [i for i, p in enumerate(payloads) if p.strip()]
    src = out / "input.jsonl"
    src.write_bytes(b"".join(payloads[i] + b"\n" for i in lines))
    for key, value in names.env("unused").items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.pipeline.max_message_bytes == MAX_MESSAGE_BYTES
    curate(build_pipeline(settings.pipeline), [src], out / "out", batch_size=100)
    decisions = {}
    for name in ("accepted", "rejected", "dead_letter"):
        for line in (out / "out" / f"{name}.jsonl").read_bytes().splitlines():
            env = orjson.loads(line)
            decisions[lines[env["origin"]["line"] - 1]] = env
    assert len(decisions) == len(lines)
    return decisions
