"""`sieve run --role score | decide | all` against a real broker: scorers, a fenced decider, one `all` per group.

Every check reads the outputs ``read_committed``, as every consumer of Sieve's outputs must.
Processes are killed (SIGKILL) and frozen (SIGSTOP) at moments chosen by the outputs seen so
far, never by sleeps tuned to this machine; the waits are named and generous.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter

import orjson
import pytest
from stream_utils import (Names, WorkerProcess, bad_payloads, create_topics, file_mode_decisions, output_count,
                          produce, read_outputs, slice_lines, wait_for_outputs)


pytestmark = pytest.mark.integration

#: Seconds a decider may take to become the owner (group join, fencing, state rebuilt).
TAKEOVER_TIMEOUT = 120.0
#: Seconds for every output of a run with kills and restarts.
ROLES_RECV_TIMEOUT = 240.0
#: Seconds a fenced process may take to notice and exit.
FENCED_EXIT_TIMEOUT = 90.0
#: Seconds to keep watching after the last expected output, for duplicates that come late.
LATE_DUPLICATE_WAIT_S = 12.0
#: The exit status of a fenced process (streams.exit_codes.EXIT_FENCED).
EXIT_FENCED = 77


def inputs(copies_every: int = 4, limit: int | None = None) -> list[bytes]:
    """Real rows, exact copies of some of them under new ids (later in the stream), and bad payloads."""
    rows = slice_lines()[:limit] if limit else slice_lines()
    payloads = list(rows)
    for line in rows[:60:copies_every]:
        obj = orjson.loads(line)
        obj["id"] = f"{obj['id']}-again"
        payloads.append(orjson.dumps(obj))
    return payloads + [p for p, _reason in bad_payloads()]


def content(env: dict) -> bytes:
    return orjson.dumps(env["example"], option=orjson.OPT_SORT_KEYS)


def check_exactly_once(outputs, n_inputs: int, raw_topic: str) -> None:
    """One envelope per input (by origin), on the topic its decision names; no content accepted twice."""
    origins = Counter((o.envelope["origin"]["topic"], o.envelope["origin"]["partition"],
                       o.envelope["origin"]["offset"]) for o in outputs)
    doubled = [k for k, c in origins.items() if c > 1]
    assert not doubled, f"{len(doubled)} inputs have two envelopes, e.g. {doubled[:3]}"
    assert len(outputs) == n_inputs and all(k[0] == raw_topic for k in origins)
    topic_of = {"accepted": ".accepted", "rejected": ".rejected", "dead_letter": ".dead-letter"}
    assert all(o.topic.endswith(topic_of[o.envelope["decision"]]) for o in outputs)
    accepted = Counter(content(o.envelope) for o in outputs if o.envelope["decision"] == "accepted")
    assert max(accepted.values()) == 1, "a content was accepted twice"
    assert all(o.envelope["origin"].get("topic_id") for o in outputs), "an origin without the raw topic's id"


def start(names: Names, kafka, tmp, name: str, role: str, partitions: int = 1, **extra) -> WorkerProcess:
    env = {**names.env(kafka.bootstrap, partitions), **extra}
    return WorkerProcess(env, tmp / f"{name}.log", tmp, role=role)


def wait_active(deciders: list[WorkerProcess], timeout: float = TAKEOVER_TIMEOUT) -> WorkerProcess:
    """The decider whose /readyz says ready (the owner); the others must say standby."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in deciders:
            if d.proc.poll() is None:
                d.wait_serving()
                if d.ready():
                    return d
        time.sleep(0.2)
    raise AssertionError("no decider became the owner:\n" + "\n".join(d.log()[-2000:] for d in deciders))


def owner_and_standby(deciders: list[WorkerProcess], timeout: float = TAKEOVER_TIMEOUT
                      ) -> tuple[WorkerProcess, WorkerProcess]:
    """The two deciders once one owns the scored partition (/readyz 200) and the other says it is a
    standby (503 "standby: ..."), seen in the same poll twice in a row: while both join, the
    group may move the partition from the first to the second."""
    deadline = time.monotonic() + timeout
    seen, last = None, []
    while time.monotonic() < deadline:
        for d in deciders:
            assert d.proc.poll() is None, d.log()[-3000:]
            d.wait_serving()
        last = [d.http("/readyz") for d in deciders]
        ready = [d for d, (status, _body) in zip(deciders, last) if status == 200]
        standby = [d for d, (status, body) in zip(deciders, last) if status == 503 and "standby" in body]
        now = (ready[0], standby[0]) if len(ready) == 1 and len(standby) == 1 else None
        if now is not None and now == seen:
            return now
        seen = now
        time.sleep(0.5)
    raise AssertionError(f"no owner and standby after {timeout}s: {last}\n" +
                         "\n".join(d.log()[-1500:] for d in deciders))


def fenced_or_standby(zombie: WorkerProcess, timeout: float = FENCED_EXIT_TIMEOUT) -> int | str:
    """A thawed owner either writes first (fenced: exit 77) or hears first that the group took its
    partition (it gives it up: standby). Either way it commits nothing; which comes first is a race."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if zombie.proc.poll() is not None:
            return zombie.proc.returncode
        status, body = zombie.http("/readyz")
        if status == 503 and "standby" in body:
            return "standby"
        time.sleep(0.2)
    raise AssertionError(f"the thawed owner neither exited nor stood by:\n{zombie.log()[-3000:]}")


# -- one scorer, one decider: decisions equal `sieve curate` -------------------------------------------------


def test_one_scorer_and_a_decider_decide_as_file_mode(kafka, tmp_path, monkeypatch):
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    payloads = inputs()
    create_topics(names, kafka.bootstrap)
    produce(kafka.bootstrap, f"{names.base}.raw", payloads)
    decider = start(names, kafka, tmp_path, "decider", "decide")
    scorer = start(names, kafka, tmp_path, "scorer", "score")
    try:
        assert wait_active([decider]) is decider
        scorer.wait_ready()
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), decider, timeout=ROLES_RECV_TIMEOUT)
        metrics = decider.http("/metrics")[1]
        assert scorer.terminate() == 0, scorer.log()[-3000:]
        assert decider.terminate() == 0, decider.log()[-3000:]
    finally:
        scorer.kill()
        decider.kill()
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    check_exactly_once(outputs, len(payloads), f"{names.base}.raw")
    assert 'sieve_role{role="decide"} 1.0' in metrics and "sieve_decider_active 1.0" in metrics
    assert "sieve_decider_takeovers_total 1.0" in metrics

    file_decisions = file_mode_decisions(payloads, names, tmp_path, monkeypatch)
    stream = {o.envelope["origin"]["offset"]: o.envelope for o in outputs}
    assert len(stream) == len(payloads)
    assert sum(e["decision"] == "accepted" for e in stream.values()) > len(payloads) // 2
    assert sum("duplicate_exact" in e["reasons"] for e in stream.values()) >= 10
    for i, s in stream.items():
        if i not in file_decisions:
            assert s["reasons"] == ["invalid_json"] and payloads[i] == b""
            continue
        f = file_decisions[i]
        assert (s["decision"], s["reasons"]) == (f["decision"], f["reasons"]), (i, s["id"])
        assert s["example"] == f["example"]
        if not s["id"].startswith(names.base):
            assert s["id"] == f["id"]


# -- two scorers, two deciders, kill -9 of a scorer and of the owner -----------------------------------------


def test_kill_9_a_scorer_and_the_owner_mid_run_every_input_once(kafka, tmp_path):
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    create_topics(names, kafka.bootstrap, partitions=4)
    payloads = inputs()
    half = len(payloads) // 2
    raw = f"{names.base}.raw"
    deciders = [start(names, kafka, tmp_path, f"decider-{i}", "decide", 4) for i in range(2)]
    scorers = [start(names, kafka, tmp_path, f"scorer-{i}", "score", 4, SIEVE_KAFKA__BATCH_MAX="8")
               for i in range(2)]
    spare: list[WorkerProcess] = []
    try:
        owner, standby = owner_and_standby(deciders)
        for s in scorers:
            s.wait_ready()
        produce(kafka.bootstrap, raw, payloads[:half])
        wait_for_outputs(kafka.bootstrap, names.outputs, half // 3, owner, timeout=ROLES_RECV_TIMEOUT)
        owner, standby = owner_and_standby(deciders)  # the owner now (a rebalance may have moved it)
        scorers[0].proc.send_signal(signal.SIGKILL)  # mid-run: its uncommitted inputs are scored again
        owner.proc.send_signal(signal.SIGKILL)       # its open transaction is aborted by the next owner
        scorers[0].proc.wait(10)
        owner.proc.wait(10)
        produce(kafka.bootstrap, raw, payloads[half:])
        spare = [start(names, kafka, tmp_path, "scorer-2", "score", 4, SIEVE_KAFKA__BATCH_MAX="8"),
                 start(names, kafka, tmp_path, "decider-2", "decide", 4)]
        new_owner = wait_active([standby, spare[1]])
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), new_owner, timeout=ROLES_RECV_TIMEOUT)
        time.sleep(LATE_DUPLICATE_WAIT_S)  # any late duplicate would show by now (there must be none)
        metrics = new_owner.http("/metrics")[1]
    finally:
        for p in scorers + deciders + spare:
            p.kill()
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    check_exactly_once(outputs, len(payloads), raw)
    assert len({o.envelope["origin"]["partition"] for o in outputs}) == 4
    takeovers = [float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith("sieve_decider_takeovers_total")]
    assert takeovers and takeovers[0] >= 1, metrics[:2000]  # more when a rebalance moved it while both joined
    assert "sieve_decider_active 1.0" in metrics


# -- a frozen owner (SIGSTOP past the session timeout) is a zombie: nothing it writes is committed -----------


def test_a_frozen_owner_is_fenced_and_nothing_it_writes_is_committed(kafka, tmp_path):
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    create_topics(names, kafka.bootstrap, partitions=2)
    payloads = inputs(limit=200)
    raw = f"{names.base}.raw"
    deciders = [start(names, kafka, tmp_path, f"decider-{i}", "decide", 2) for i in range(2)]
    scorer = start(names, kafka, tmp_path, "scorer", "score", 2)
    try:
        owner, other = owner_and_standby(deciders)
        scorer.wait_ready()
        produce(kafka.bootstrap, raw, payloads[:60])
        wait_for_outputs(kafka.bootstrap, names.outputs, 60, owner, timeout=ROLES_RECV_TIMEOUT)
        owner, other = owner_and_standby(deciders)  # the owner now (a rebalance may have moved it)
        owner.proc.send_signal(signal.SIGSTOP)  # frozen: no heartbeats; the group gives its partition away
        produce(kafka.bootstrap, raw, payloads[60:])
        assert wait_active([other]) is other  # took over (and fenced the frozen one) while it was frozen
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), other, timeout=ROLES_RECV_TIMEOUT)
        before = read_outputs(kafka.bootstrap, names.outputs)
        owner.proc.send_signal(signal.SIGCONT)  # thawed: it still thinks it owns the partition
        rc = fenced_or_standby(owner)
        produce(kafka.bootstrap, raw, [orjson.dumps({"id": "after-thaw", "instruction": "Name a prime.",
                                                     "output": "Seven is a prime number."})])
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads) + 1, other, timeout=ROLES_RECV_TIMEOUT)
    finally:
        for p in [*deciders, scorer]:
            if p.proc.poll() is None and p.proc.returncode is None:
                p.proc.send_signal(signal.SIGCONT)
            p.kill()
    log = owner.log()
    assert rc in (EXIT_FENCED, "standby"), log[-3000:]
    if rc == EXIT_FENCED:
        assert "fenced: another decider took over" in log
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    check_exactly_once(outputs, len(payloads) + 1, raw)
    assert {o.value for o in before} <= {o.value for o in outputs} and len(outputs) == len(before) + 1


# -- two `--role all` in one group: the newcomer fences the first ------------------------------------------------


def test_a_second_all_in_the_same_group_fences_the_first(kafka, tmp_path):
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    create_topics(names, kafka.bootstrap, partitions=2)
    payloads = inputs()
    half = len(payloads) // 2
    raw = f"{names.base}.raw"
    first = start(names, kafka, tmp_path, "first", "all", 2)
    second = None
    try:
        first.wait_ready()
        produce(kafka.bootstrap, raw, payloads[:half])
        wait_for_outputs(kafka.bootstrap, names.outputs, half, first, timeout=ROLES_RECV_TIMEOUT)
        second = start(names, kafka, tmp_path, "second", "all", 2)
        second.wait_ready()
        produce(kafka.bootstrap, raw, payloads[half:])
        rc = first.proc.wait(FENCED_EXIT_TIMEOUT)  # its next batch fails: fenced
        wait_for_outputs(kafka.bootstrap, names.outputs, len(payloads), second, timeout=ROLES_RECV_TIMEOUT)
        assert second.proc.poll() is None, second.log()[-3000:]
    finally:
        first.kill()
        if second is not None:
            second.kill()
    log = first.log()
    assert rc == EXIT_FENCED, log[-3000:]
    assert "another `sieve run --role all` started in consumer group" in log and "--role score" in log
    outputs = read_outputs(kafka.bootstrap, names.outputs)
    check_exactly_once(outputs, len(payloads), raw)
    assert output_count(kafka.bootstrap, names.outputs) == len(payloads)


# -- the broker down mid-run under a scorer and two deciders ----------------------------------------------------

#: Seconds the broker stays down (the outages of issue 10 lasted 38-45 s).
OUTAGE_S = 40.0
#: Seconds a broker of the test's own may take to start (a busy 2-core machine).
BROKER_START_TIMEOUT = 120.0
#: Exit statuses a supervisor (Compose's `restart: unless-stopped`) restarts a process after.
RESTARTED_AFTER = (69, 75, EXIT_FENCED)


def test_the_broker_down_mid_run_under_the_roles_every_input_once(tmp_path):
    """A broker of its own (the session's must stay up) stopped for 40 s while a scorer and two
    deciders work through a backlog, then started again. A process that exits on the way (75: an
    output not delivered; 69: Kafka unreachable at start) is restarted, as Compose does: after
    it, every input has exactly one committed envelope and no content is accepted twice."""
    import socket

    from streams.local_kafka import LocalKafka

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = LocalKafka(port=port, data_dir=tmp_path / "kafka", start_timeout=BROKER_START_TIMEOUT)
    broker.start()
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    payloads = inputs()
    raw = f"{names.base}.raw"
    procs: dict[str, WorkerProcess] = {}
    restarts: list[tuple[str, int]] = []

    def launch(name: str, role: str) -> None:
        n = sum(1 for k, _ in restarts if k == name)
        procs[name] = start(names, broker, tmp_path, f"{name}-{n}", role, 2, SIEVE_KAFKA__BATCH_MAX="8")

    def supervise() -> None:
        for name, p in list(procs.items()):
            rc = p.proc.poll()
            if rc is not None:
                assert rc in RESTARTED_AFTER, f"{name} exited {rc}:\n{p.log()[-3000:]}"
                restarts.append((name, rc))
                launch(name, "score" if name.startswith("scorer") else "decide")

    try:
        create_topics(names, broker.bootstrap, partitions=2)
        for name, role in (("decider-a", "decide"), ("decider-b", "decide"), ("scorer", "score")):
            launch(name, role)
        owner_and_standby([procs["decider-a"], procs["decider-b"]])
        procs["scorer"].wait_ready()
        produce(broker.bootstrap, raw, payloads)
        wait_for_outputs(broker.bootstrap, names.outputs, len(payloads) // 4, procs["scorer"],
                         timeout=ROLES_RECV_TIMEOUT)
        broker.stop(remove_data=False)  # mid-run: the scorer and the owner hold uncommitted work
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_S:
            time.sleep(1.0)
        broker.start()
        deadline = time.monotonic() + ROLES_RECV_TIMEOUT
        while _count_or_zero(broker.bootstrap, names.outputs) < len(payloads):
            assert time.monotonic() < deadline, "\n".join(p.log()[-2000:] for p in procs.values())
            supervise()
            time.sleep(1.0)
        time.sleep(LATE_DUPLICATE_WAIT_S)  # any late duplicate would show by now (there must be none)
        supervise()
        outputs = read_outputs(broker.bootstrap, names.outputs)
    finally:
        for p in procs.values():
            p.kill()
        broker.stop()
    check_exactly_once(outputs, len(payloads), raw)
    print(f"restarts after the outage: {restarts}")


def _count_or_zero(bootstrap: str, topics: list[str]) -> int:
    """The committed outputs, or 0 while the restarted broker does not answer yet."""
    try:
        return output_count(bootstrap, topics)
    except Exception:  # noqa: BLE001 - kafka-python raises several kinds while the broker starts
        return 0


# -- `all` beside the split roles of the same group_id: the newcomer refuses (exit 2) -------------------------


def test_an_all_worker_and_the_split_roles_of_one_group_id_never_run_together(kafka, tmp_path):
    """Different consumer groups, the same outputs: a decider (or a scorer) and an `all` of one
    kafka.group_id would each decide every input, each with its own dedup state. Whichever
    starts second refuses, exit 2, naming the live group; once the first stops it starts."""
    names = Names(f"sieve-it-{uuid.uuid4().hex}", f"sieve-it-group-{uuid.uuid4().hex}")
    create_topics(names, kafka.bootstrap, partitions=2)
    decider = start(names, kafka, tmp_path, "decider", "decide", 2)
    procs = [decider]
    try:
        wait_active([decider])
        late_all = start(names, kafka, tmp_path, "late-all", "all", 2)
        procs.append(late_all)
        assert late_all.proc.wait(FENCED_EXIT_TIMEOUT) == 2, late_all.log()[-3000:]
        assert f"'{names.group}-decide'" in late_all.log() and "refusing to start" in late_all.log()
        assert decider.terminate() == 0, decider.log()[-3000:]

        first_all = start(names, kafka, tmp_path, "first-all", "all", 2)  # the group is empty again: it starts
        procs.append(first_all)
        first_all.wait_ready()
        late_scorer = start(names, kafka, tmp_path, "late-scorer", "score", 2)
        procs.append(late_scorer)
        assert late_scorer.proc.wait(FENCED_EXIT_TIMEOUT) == 2, late_scorer.log()[-3000:]
        assert f"'{names.group}'" in late_scorer.log() and "Stop the `all` worker first" in late_scorer.log()
        produce(kafka.bootstrap, f"{names.base}.raw", inputs(limit=20))
        wait_for_outputs(kafka.bootstrap, names.outputs, len(inputs(limit=20)), first_all,
                         timeout=ROLES_RECV_TIMEOUT)
        assert first_all.proc.poll() is None, first_all.log()[-3000:]
    finally:
        for p in procs:
            p.kill()
    check_exactly_once(read_outputs(kafka.bootstrap, names.outputs), len(inputs(limit=20)), f"{names.base}.raw")
