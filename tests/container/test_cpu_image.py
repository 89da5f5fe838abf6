"""The CPU image (docker/Dockerfile.cpu), built from the repository with podman, runs Sieve against a real broker.

Built over a Debian bookworm base bootstrapped here (no registry image can be pulled), it runs
`sieve run` with its default pipeline, model stages included (the bundled all-MiniLM-L6-v2, so
the image is proven to carry and load the real model offline), on the host network against the
session broker: real records and poison payloads in, exactly one envelope each out. Its
HEALTHCHECK goes healthy on the running worker and fails where nothing serves. Then `sieve
batcher` from the image cuts a batch on an operator's `sieve batches cut` (run inside the
container), and the host loads the announced batch with `datasets` from the manifest alone.
Compose's roles run from the image too: a scorer and a decider, one committed envelope per input.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from podman_images import PODMAN_TIMEOUT, TIMINGS, Podman
from stream_utils import Names, bad_payloads, create_topics, produce, read_outputs, slice_lines, wait_for_outputs

pytestmark = [pytest.mark.container, pytest.mark.integration,
              # the first test builds the image: minutes cold (GBs of wheels), seconds warm
              pytest.mark.timeout(3600)]

#: Seconds a container may take to answer /readyz (python imports, the encoder's load, recovery, group join).
CONTAINER_READY_TIMEOUT = 240.0
#: Seconds to wait for every envelope (the CPU encoder does ~20 examples/s on 2 cores).
RECV_TIMEOUT = 300.0
#: Seconds `podman stop` gives a container to drain after SIGTERM before it kills it.
STOP_GRACE_S = 60
#: The uid the Dockerfiles give their unprivileged user; host directories the containers write are its.
IMAGE_UID = 10001


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def writable_dir(path: Path) -> Path:
    """A host directory the image's user may write (bind-mounted into a container)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, IMAGE_UID, IMAGE_UID)
    return path


class Container:
    """One detached container of the image on the host network, removed on exit."""

    def __init__(self, podman: Podman, image: str, command: list[str], env: dict[str, str],
                 volumes: list[Path] = (), metrics_port: int | None = None) -> None:
        self.podman, self.name = podman, f"sieve-test-{uuid.uuid4().hex[:12]}"
        self.metrics_port = metrics_port
        args = ["run", "--detach", "--name", self.name, "--network", "host"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        for path in volumes:  # the same path inside, so paths in manifests resolve on the host too
            args += ["--volume", f"{path}:{path}"]
        started = podman.run(*args, image, *command, check=False)
        if started.returncode != 0:
            self.__exit__()
            raise AssertionError(f"podman run {image} {' '.join(command)} exited {started.returncode}:\n"
                                 f"{started.stderr[-3000:]}")

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.podman.run("rm", "--force", "--volumes", "--time", "0", self.name, check=False)

    def running(self) -> bool:
        state = self.podman.run("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        return self.podman.logs(self.name)

    def wait_ready(self, timeout: float = CONTAINER_READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http(self.metrics_port, "/readyz")[0] == 200:
                return
            if not self.running():
                raise AssertionError(f"{self.name} exited before it was ready:\n{self.logs()}")
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.logs()}")

    def stop(self) -> int:
        """SIGTERM, as `docker stop` sends it; the exit code."""
        self.podman.run("stop", "--time", str(STOP_GRACE_S), self.name, timeout=STOP_GRACE_S + PODMAN_TIMEOUT)
        code = self.podman.run("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip()
        return int(code)

    def health(self) -> tuple[int, str]:
        """Run the image's HEALTHCHECK now: its exit code and the status podman records."""
        run = self.podman.run("healthcheck", "run", self.name, check=False)
        state = self.podman.run("inspect", "--format", "{{.State.Health.Status}}", self.name).stdout.strip()
        return run.returncode, state


def sieve_env(names: Names, bootstrap: str, port: int, *, models: bool) -> dict[str, str]:
    env = names.env(bootstrap) | {"SIEVE_METRICS__PORT": str(port), "SIEVE_METRICS__HOST": "127.0.0.1",
                                  "SIEVE_KAFKA__BATCHES_TOPIC": f"{names.base}.batches",
                                  "SIEVE_KAFKA__CONTROL_TOPIC": f"{names.base}.control"}
    if models:  # the image's default pipeline: the encoder, its quality head and semantic dedup
        for key in ("SIEVE_PIPELINE__SCORING__ENABLED", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED"):
            del env[key]
    return env


@pytest.fixture(scope="module")
def worker_run(podman, cpu_image, kafka):
    """`sieve run` from the image over the real slice plus poison payloads; outputs and health."""
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    poison = bad_payloads()
    payloads = slice_lines() + [p for p, _ in poison]
    expected_dead = {len(payloads) - len(poison) + i: reason for i, (_, reason) in enumerate(poison)}
    create_topics(names, kafka.bootstrap)
    produce(kafka.bootstrap, f"{names.base}.raw", payloads)
    port = free_port()
    env = sieve_env(names, kafka.bootstrap, port, models=True)  # state in the image's /data volume
    t0 = time.monotonic()
    with Container(podman, cpu_image, ["sieve", "run", "--no-progress"], env, metrics_port=port) as worker:
        worker.wait_ready()
        TIMINGS["worker_ready_s"] = time.monotonic() - t0
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), timeout=RECV_TIMEOUT)
        TIMINGS["worker_decided_s"] = time.monotonic() - t0
        health = worker.health()
        metrics = http(port, "/metrics")
        log = worker.logs()
        rc = worker.stop()
    return {"names": names, "payloads": payloads, "expected_dead": expected_dead, "health": health, "rc": rc,
            "metrics": metrics, "log": log, "outputs": read_outputs(kafka.bootstrap, names.outputs)}


def test_worker_from_the_image_decides_every_input_exactly_once(worker_run):
    outputs, payloads = worker_run["outputs"], worker_run["payloads"]
    assert worker_run["rc"] == 0, f"`sieve run` did not stop cleanly on SIGTERM:\n{worker_run['log']}"
    offsets = [o.envelope["origin"]["offset"] for o in outputs]
    assert sorted(offsets) == list(range(len(payloads))), "an input has no envelope or more than one"
    suffix = {"accepted": ".accepted", "rejected": ".rejected", "dead_letter": ".dead-letter"}
    ids = {}
    for o in outputs:
        env = o.envelope
        assert o.topic.endswith(suffix[env["decision"]]), (o.topic, env["decision"])
        assert env["id"] and env["origin"]["topic"] == f"{worker_run['names'].base}.raw"
        ids[env["origin"]["offset"]] = env["id"]
    for offset, line in enumerate(slice_lines()):  # real rows keep their own ids
        assert ids[offset] == orjson.loads(line)["id"]


def test_poison_payloads_become_dead_letters_naming_their_reason(worker_run):
    by_offset = {o.envelope["origin"]["offset"]: o.envelope for o in worker_run["outputs"]}
    for offset, reason in worker_run["expected_dead"].items():
        assert by_offset[offset]["decision"] == "dead_letter", by_offset[offset]["reasons"]
        assert by_offset[offset]["reasons"][0] == reason


def test_the_image_carries_and_runs_the_bundled_model(worker_run):
    """The default pipeline ran the encoder in the container: quality scores, the model stage's metrics."""
    scored = [o.envelope for o in worker_run["outputs"] if "quality" in o.envelope.get("scores", {})]
    parsed = [o for o in worker_run["outputs"] if o.envelope["decision"] != "dead_letter"]
    assert len(scored) >= len(parsed) // 2, f"only {len(scored)} of {len(parsed)} parsed inputs have a quality score"
    status, metrics = worker_run["metrics"]
    assert status == 200
    assert max(samples(metrics, "sieve_model_examples_per_second").values()) > 0  # per model stage
    assert samples(metrics, "sieve_dedup_index_size")['{kind="semantic"}'] > 0  # the encoder's embeddings


def samples(metrics: str, name: str) -> dict[str, float]:
    """Every series of metric ``name`` in a /metrics page: its labels (``""`` for none) to its value."""
    out = {}
    for line in metrics.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name or series.startswith(name + "{"):
            out[series[len(name):]] = float(value)
    assert out, f"{name} is not in /metrics"
    return out


def test_healthcheck_of_the_image_goes_healthy_on_the_worker(worker_run):
    code, status = worker_run["health"]
    assert (code, status) == (0, "healthy"), worker_run["log"]


def test_healthcheck_fails_where_nothing_serves_the_metrics_port(podman, cpu_image):
    """The check is not vacuous: a container of the image that runs no Sieve process is not healthy."""
    env = {"SIEVE_METRICS__PORT": str(free_port())}
    with Container(podman, cpu_image, ["sleep", "300"], env) as idle:
        code, status = idle.health()
    assert code != 0 and status != "healthy"


def test_batcher_from_the_image_cuts_a_batch_the_host_loads_with_datasets(worker_run, podman, cpu_image, kafka,
                                                                          tmp_path):
    from datasets import load_dataset

    names = worker_run["names"]
    accepted = {o.envelope["id"]: o.envelope for o in worker_run["outputs"] if o.envelope["decision"] == "accepted"}
    assert accepted, "the worker accepted nothing"
    batch_dir = writable_dir(tmp_path / "batches")
    port = free_port()
    env = sieve_env(names, kafka.bootstrap, port, models=False) | {
        "SIEVE_BATCHES__DIR": str(batch_dir),
        "SIEVE_BATCHES__MAX_EXAMPLES": "0", "SIEVE_BATCHES__MAX_AGE_S": "0"}  # only a cut closes
    with Container(podman, cpu_image, ["sieve", "batcher"], env, [batch_dir], metrics_port=port) as batcher:
        batcher.wait_ready()
        wait_until_batched(port, len(accepted), batcher)
        # the operator's cut, from the image too (the container's environment names the topics)
        cut = podman.run("exec", batcher.name, "sieve", "batches", "cut", "--wait", "120", "--note", "image test",
                         timeout=120 + PODMAN_TIMEOUT, check=False)
        assert cut.returncode == 0, cut.stdout + cut.stderr + batcher.logs()
        rc = batcher.stop()
    assert rc == 0, batcher.logs()
    (manifest,) = announcements(kafka.bootstrap, f"{names.base}.batches")
    assert manifest["trigger"] == "request" and manifest["batch_id"] in cut.stdout
    assert manifest["counts"]["examples"] == len(accepted)
    ids = []
    for kind, formats in manifest["datasets"].items():  # what a trainer does: the manifest alone
        data = load_dataset("json", data_files=formats["json"], cache_dir=str(tmp_path / "hf"))
        assert sum(d.num_rows for d in data.values()) == sum(manifest["counts"]["by_kind"][kind].values())
        ids += [i for d in data.values() for i in d["id"]]
    assert sorted(ids) == sorted(accepted), "the batch does not hold exactly the accepted examples"
    assert all(Path(p).is_relative_to(batch_dir) for f in manifest["datasets"].values() for p in sum(
        f["json"].values(), []))


def wait_until_batched(port: int, expected: int, container: Container) -> None:
    """Wait until the batcher's open batch holds ``expected`` examples (its metric says so)."""
    deadline, seen = time.monotonic() + RECV_TIMEOUT, None
    while time.monotonic() < deadline:
        status, text = http(port, "/metrics")
        if status == 200:
            seen = samples(text, "sieve_finetune_open_batch_examples")[""]
        if seen == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"the open batch holds {seen}, not {expected}, after {RECV_TIMEOUT}s:\n{container.logs()}")


def announcements(bootstrap: str, topic: str) -> list[dict]:
    """Every manifest announced on ``topic`` so far."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        end = consumer.end_offsets([tp])[tp]
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out, deadline = [], time.monotonic() + 60
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out += [json.loads(r.value) for r in records]
        return out
    finally:
        consumer.close()


def test_the_compose_roles_from_the_image_decide_every_input_once(podman, cpu_image, kafka):
    """docker/compose.yaml's topology from the image: a scorer (`sieve run --role score`, the
    encoder and its heads) and a decider (`--role decide`, the only writer of the outputs, in
    transactions) over the real slice and poison payloads: one committed envelope per input."""
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    poison = bad_payloads()
    payloads = slice_lines() + [p for p, _ in poison]
    create_topics(names, kafka.bootstrap)
    ports = {"decide": free_port(), "score": free_port()}
    t0 = time.monotonic()
    with Container(podman, cpu_image, ["sieve", "run", "--role", "decide", "--no-progress"],
                   sieve_env(names, kafka.bootstrap, ports["decide"], models=True),
                   metrics_port=ports["decide"]) as decider, \
            Container(podman, cpu_image, ["sieve", "run", "--role", "score", "--no-progress"],
                      sieve_env(names, kafka.bootstrap, ports["score"], models=True) | {"OMP_NUM_THREADS": "1"},
                      metrics_port=ports["score"]) as scorer:
        decider.wait_ready()  # the owner of the scored partition
        scorer.wait_ready()
        produce(kafka.bootstrap, f"{names.base}.raw", payloads)
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), timeout=RECV_TIMEOUT)
        TIMINGS["roles_decided_s"] = time.monotonic() - t0
        metrics = http(ports["decide"], "/metrics")[1]
        codes = {"score": scorer.stop(), "decide": decider.stop()}
        logs = scorer.logs() + decider.logs()
    assert codes == {"score": 0, "decide": 0}, logs[-6000:]
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    assert sorted(o.envelope["origin"]["offset"] for o in outputs) == list(range(len(payloads))), \
        "an input has no envelope or more than one"
    by_offset = {o.envelope["origin"]["offset"]: o.envelope for o in outputs}
    for i, (_, reason) in enumerate(poison):
        env = by_offset[len(payloads) - len(poison) + i]
        assert env["decision"] == "dead_letter" and env["reasons"][0] == reason, env["reasons"]
    accepted = [e for e in by_offset.values() if e["decision"] == "accepted"]
    assert accepted and all("quality" in e["scores"] for e in accepted), "the scorer's model did not score"
    assert samples(metrics, "sieve_role")['{role="decide"}'] == 1.0
    assert samples(metrics, "sieve_decider_active")[""] == 1.0
