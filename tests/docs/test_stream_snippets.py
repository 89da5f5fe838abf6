"""The documented commands that need a broker, run against the session's real Kafka broker.

The topics are this module's own (``SIEVE_KAFKA__*`` in the environment, as a deployment sets
them; examples/trainer_consumer.py reads ``$SIEVE_KAFKA__BATCHES_TOPIC`` too). Before any
snippet runs, a real ``sieve batcher`` announces the sandbox's batches, closed in file mode:
the mixed batch, then the pairs-only one whose manifest revokes an id of the first. A trainer
in the docs' default group ``trainer`` starts from the beginning of the topic each time.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass

import orjson
import pytest
from docs_allowlist import allow_listed
from docs_sandbox import BATCH_SHAPES, REVOKED_ID
from kafka import KafkaAdminClient, KafkaConsumer
from docs_runner import (TRAINER, Service, batch_runs, clean_env, metrics_ready, needs_broker, run_id, run_once,
                    run_service, script, service_of)
from docs_snippets import shell_commands

pytestmark = [pytest.mark.docs, pytest.mark.integration]

STREAM_RUNS = batch_runs([c for c in shell_commands() if not allow_listed(c) and needs_broker(c)], BATCH_SHAPES)
#: Seconds to wait for the announcements on the batches topic.
RECV_TIMEOUT = 60.0


@dataclass
class Stream:
    env: dict[str, str]
    bootstrap: str
    batches_topic: str
    manifests: list[dict]


def announcements(bootstrap: str, topic: str, n: int) -> list[dict]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=int(RECV_TIMEOUT * 1000),
                             isolation_level="read_committed")
    out = []
    try:
        for record in consumer:
            out.append(orjson.loads(record.value))
            if len(out) >= n:
                break
    finally:
        consumer.close()
    return out


def reset_trainer_group(bootstrap: str) -> None:
    """The docs' trainer uses the group ``trainer``: forget its offsets so each run reads every batch.

    The group coordinator may still be loading, or the last trainer's leave not yet applied: such
    answers are retried until ``RECV_TIMEOUT``."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    deadline, result = time.monotonic() + RECV_TIMEOUT, None
    try:
        while time.monotonic() < deadline:
            results = admin.delete_groups(["trainer"])
            (result,) = dict(results).values()
            result = str(getattr(result, "__name__", result))
            if result in ("OK", "GroupIdNotFoundError"):
                return
            time.sleep(0.5)
    finally:
        admin.close()
    raise AssertionError(f"could not delete the consumer group 'trainer': {result}")


@pytest.fixture(scope="module")
def stream(sandbox, kafka, tmp_path_factory) -> Stream:
    base, group = f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}"
    topics = {"RAW": "raw", "ACCEPTED": "accepted", "REJECTED": "rejected", "DEAD_LETTER": "dead-letter",
              "BATCHES": "batches", "CONTROL": "control"}
    env = clean_env(sandbox.env, {
        "SIEVE_KAFKA__BROKERS": kafka.bootstrap, "SIEVE_KAFKA__GROUP_ID": group, "SIEVE_KAFKA__PARTITIONS": "1",
        "SIEVE_KAFKA__SESSION_TIMEOUT_S": "6", "SIEVE_KAFKA__BATCH_WITHIN_S": "0.1",
        **{f"SIEVE_KAFKA__{k}_TOPIC": f"{base}.{v}" for k, v in topics.items()},
        "SIEVE_BATCHES__DIR": "stream-batches"})
    shutil.copytree(sandbox.root / "sieve-batches", sandbox.root / "stream-batches", symlinks=True)
    announce = f"exec {sys.executable} -m streams.cli batcher\n"
    rc, log = run_service(announce, Service(metrics_ready, signal.SIGTERM), sandbox.root, env,
                          tmp_path_factory.mktemp("batcher") / "batcher.log")
    assert rc == 0, log[-4000:]
    manifests = announcements(kafka.bootstrap, f"{base}.batches", 2)
    assert [m["seq"] for m in manifests] == [1, 2], manifests
    assert [r["id"] for r in manifests[1]["revoked"]] == [REVOKED_ID]
    return Stream(env, kafka.bootstrap, f"{base}.batches", manifests)


@pytest.mark.parametrize(("command", "shape"), STREAM_RUNS, ids=[run_id(r) for r in STREAM_RUNS])
def test_documented_stream_command_runs(sandbox, stream, command, shape, tmp_path):
    batch = str(sandbox.batches[shape].relative_to(sandbox.root)) if shape else None
    code = script(command, batch=batch, bootstrap=stream.bootstrap)
    if command.program == TRAINER:
        reset_trainer_group(stream.bootstrap)
    service = service_of(command)
    if service is not None:
        rc, output = run_service(code, service, sandbox.root, stream.env, tmp_path / "service.log",
                                 expected=len(stream.manifests))
    else:
        proc = run_once(code, sandbox.root, stream.env)
        rc, output = proc.returncode, proc.stdout + proc.stderr
    assert rc == 0, f"{command.id}: `{command.text}` exited {rc}:\n{output[-4000:]}"
    if command.program == TRAINER:
        first = stream.manifests[0]["batch_id"]
        assert f"batch {first}: " in output and "files verified" in output, output
        if service is not None:  # it followed both batches: the second revokes an id of the first
            assert f"revoked: {REVOKED_ID} of batch {first}" in output, output
            assert f"dropped 1 revoked rows from batch {first}, loaded earlier" in output, output
