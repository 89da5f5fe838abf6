"""The stream worker's loop: raw events in, one acknowledged envelope per event out.

One faust agent (``score``, ``concurrency=1``: faust-streaming issue #606 commits
past in-flight messages with more) takes micro-batches of raw events, runs the
pipeline core in a thread, produces one envelope per input to the accepted,
rejected or dead-letter topic and awaits the broker's acknowledgement of every
one of them before the loop body returns. Faust acks a ``take_events`` batch only
after that, and commits only acked offsets, so a committed input always has its
output on a topic.

**Fail-stop.** faust's ``take_events`` also acks the batch when the loop body
*raises* (its ``finally`` clause), and the consumer commits acked offsets when it
stops. A failed delivery would therefore commit inputs whose outputs never
landed. So the batch handler never lets an exception out: it logs it and ends the
process at once with :data:`EXIT_DELIVERY_FAILED` (``os._exit``, no commit). The
restarted worker redelivers the uncommitted inputs and recovery skips those
already decided (:mod:`streams.recovery`).

**Topic identity.** Every input is known by ``(topic, topic id, partition, offset)``
(``origin.topic_id`` on its envelope): before deciding a batch the worker confirms the
raw topic's Kafka id (:class:`streams.worker.topic_identity.RawTopicIdentity`), and when
the topic was deleted and created again it moves the consumer to the new topic's
beginning and forgets the old one's skip state (:mod:`streams.worker.topic_switch`).

This module is the consume loop; publishing is :mod:`streams.worker.publish`,
snapshots :mod:`streams.worker.checkpoint`, the skip set and frontier
:mod:`streams.worker.progress`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from quality.envelope import Decision
from quality.pipeline import Pipeline
from quality.records import RawRecord
from streams.config import KafkaSettings, Settings
from streams.exit_codes import EXIT_DELIVERY_FAILED, describe_error
from streams.metrics import SieveMetrics
from streams.recovery import Frontier, RecoveryResult, snapshot_dir
from streams.topics import output_topics
from streams.worker.checkpoint import Checkpointer
from streams.worker.progress import Progress
from streams.roles.fencing import exit_fenced, is_fenced
from streams.worker.publish import Publisher, ScoredPublisher

log = logging.getLogger(__name__)

#: Readiness needs an answer from the broker within this many topic check intervals.
READY_CHECK_INTERVALS = 3
#: Longest message key kept in an envelope's origin (the rest is cut).
MAX_ORIGIN_KEY_BYTES = 1024


def raw_from_event(event: Any, topic_id: str | None = None) -> RawRecord:
    """A raw record of a faust event: its value bytes and origin (topic, topic id, partition, offset, key)."""
    m = event.message
    origin: dict[str, Any] = {"topic": m.topic, "partition": m.partition, "offset": m.offset}
    if topic_id is not None:  # the incarnation of the topic (Kafka topic id): see streams.worker.topic_identity
        origin["topic_id"] = topic_id
    if getattr(m, "timestamp", None):  # Kafka record time (ms): the dedup time window's clock
        origin["timestamp"] = m.timestamp
    if m.key is not None:
        key = m.key if isinstance(m.key, bytes) else str(m.key).encode()
        origin["key"] = key[:MAX_ORIGIN_KEY_BYTES].decode("utf-8", "backslashreplace")
        if len(key) > MAX_ORIGIN_KEY_BYTES:
            origin["key_truncated"] = True
    value = m.value if m.value is not None else b""
    return RawRecord(bytes(value) if not isinstance(value, bytes) else value, origin)


def offsets_of(events: Sequence[Any]) -> str:
    """``topic[partition] offsets first..last`` of a batch's events, for a log line."""
    spans: dict[tuple[str, int], list[int]] = {}
    for event in events:
        m = getattr(event, "message", None)
        if m is not None:
            span = spans.setdefault((m.topic, m.partition), [m.offset, m.offset])
            span[0], span[1] = min(span[0], m.offset), max(span[1], m.offset)
    return ", ".join(f"{t}[{p}] offsets {a}..{b}" for (t, p), (a, b) in sorted(spans.items())) or "no offsets"


class Stage1:
    """``--role score``: the score half of the pipeline, then the stateless half of the decide
    stages (``annotate``: content hash, MinHash signature), so the decider recomputes nothing.
    Decisions of inputs that pass are ``accepted`` here, meaning "passed stage 1"."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.score, self.decide = pipeline.phase("score"), pipeline.phase("decide")

    def process(self, raws: list[RawRecord]) -> list[Decision]:
        decisions = self.score.process(raws)
        passed = [d.example for d in decisions if d.decision == "accepted" and d.example is not None]
        for stage in self.decide.stages:
            stage.annotate(passed)
        return decisions


class StreamWorker:
    """Drives the pipeline over the raw topic's batches: skip what is decided, decide, publish, checkpoint.

    Args:
        settings: the process settings (topics, limits, state_dir, snapshot_interval_s).
        pipeline: the pipeline core, already warmed by recovery.
        metrics: where batch metrics go.
        recovered: what start-up recovery found (skip set, ends, topic ids); None for a fresh start.
        highwater: ``(topic, partition) -> highwater`` of the raw topic, for the lag gauge.

    :attr:`identity` and :attr:`rewind` (set by
    :func:`streams.worker.topic_switch.attach_topic_identity`) confirm the raw topic's id
    before every batch and switch to a recreated topic; :attr:`assigned` says whether
    any raw partition is assigned (readiness). All three stay None in unit use.
    """

    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: SieveMetrics,
                 recovered: RecoveryResult | None = None,
                 highwater: Callable[[str, int], int | None] | None = None, *, role: str = "all",
                 kafka: KafkaSettings | None = None, transactional_id: str | None = None) -> None:
        kafka = kafka or settings.kafka
        self.kafka, self.pipeline, self.metrics, self.highwater = kafka, pipeline, metrics, highwater
        self.role, self.transactional_id = role, transactional_id
        topics = output_topics(kafka)
        self.progress = Progress.recovered(kafka.raw_topic, list(topics.values()), recovered)
        self.process: Callable[[list[RawRecord]], list[Decision]] = pipeline.process
        directory = snapshot_dir(settings.state_dir, kafka)
        if role == "score":  # stage 1 only: no state, no snapshots; one scored record per input
            self.process = Stage1(pipeline).process
            self.publisher: Publisher = ScoredPublisher(kafka, pipeline.versions(), self.progress)
            directory = None
        else:
            self.publisher = Publisher(kafka, topics, pipeline.versions(), self.progress, transactional_id)
        self.checkpointer = Checkpointer(kafka, directory, settings.snapshot_interval_s,
                                         recovered.output_topic_ids if recovered is not None else None)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sieve-pipeline")
        self.batches = 0
        self.ready = False
        self.identity: Any = None  # streams.worker.topic_identity.RawTopicIdentity
        self.rewind: Any = None    # streams.worker.topic_switch.ConsumerRewind
        self.assigned: Callable[[], bool] | None = None  # whether any raw partition is assigned (readiness)
        self._lock = asyncio.Lock()  # one batch or one topic check at a time

    @property
    def raw_topic_id(self) -> str | None:
        return self.progress.raw_topic_id

    async def start(self) -> None:
        await self.publisher.start()

    async def stop(self) -> None:
        await self.publisher.stop()
        self.executor.shutdown(wait=True)
        if self.identity is not None:
            self.identity.close()

    def readiness(self) -> tuple[bool, str]:
        """``(ready, why not)`` for ``/readyz``: recovered and consuming, the broker answering the
        topic checks, the raw topic there, and at least one of its partitions assigned."""
        if not self.ready:
            return False, "recovering or not consuming yet"
        ident = self.identity
        if ident is not None:
            if not ident.reachable(READY_CHECK_INTERVALS * ident.interval_s):
                return False, f"Kafka at {self.kafka.brokers} does not answer ({ident.last_error or 'no answer yet'})"
            if ident.missing:
                return False, f"the raw topic {self.kafka.raw_topic} does not exist (deleted?)"
        if self.assigned is not None and not self.assigned():
            return False, f"no partition of {self.kafka.raw_topic} is assigned to this worker"
        return True, "ready"

    def frontier(self) -> Frontier:
        return self.progress.frontier()

    async def maybe_snapshot(self, force: bool = False) -> None:
        await self.checkpointer.maybe_snapshot(self.pipeline, self.progress, self.executor, force)

    async def handle_batch(self, events: Sequence[Any]) -> list[Decision]:
        """Decide and publish one batch; return when every output is acknowledged.

        Any exception ends the process (fail-stop, see the module docstring).
        """
        try:
            async with self.lock:
                events = await self._confirm_topic(events)
                if not events:  # all fetched before a switch: nothing to decide
                    return []
                self.checkpointer.in_batch = True
                decisions = await self._handle_batch(events)
                self.checkpointer.in_batch = False
                await self.maybe_snapshot()
            return decisions
        except BaseException as exc:  # noqa: BLE001 - nothing may reach faust's ack-in-finally
            if is_fenced(exc):
                exit_fenced(self.role, self.transactional_id or "?", self.kafka.group_id, self.metrics)
            log.critical("batch of %d at %s failed (%s); exiting with %d before faust can commit it: restart the "
                         "worker (recovery skips the inputs already decided)", len(events), offsets_of(events),
                         describe_error(exc, self.kafka), EXIT_DELIVERY_FAILED, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_DELIVERY_FAILED)

    @property
    def lock(self) -> asyncio.Lock:
        """Held for a whole batch, and by a topic check between batches."""
        return self.identity.lock if self.identity is not None else self._lock

    async def _confirm_topic(self, events: Sequence[Any]) -> Sequence[Any]:
        """Confirm the raw topic's id (switching first if it changed) and drop events fetched before a switch."""
        if self.identity is not None:
            self.progress.raw_topic_id, _switched = await self.identity.confirm()
        if self.rewind is not None:
            events, stale = self.rewind.split(events)
            if stale:
                self.metrics.stale_inputs.inc(stale)
                log.info("dropped %d input(s) fetched before the consumer moved (raw topic switch or rebalance); "
                         "they are read again from their committed offsets", stale)
        return events

    def forget_raw_topic(self, topic_id: str | None) -> None:
        """The raw topic is another one now (deleted and created again): forget what was decided of the old one."""
        self.metrics.forget_partitions(self.progress.forget_raw_topic(topic_id))

    async def _handle_batch(self, events: Sequence[Any]) -> list[Decision]:
        t0 = time.perf_counter()
        raws: list[RawRecord] = []
        last_offset: dict[tuple[str, int], int] = {}
        for event in events:
            m = event.message
            last_offset[(m.topic, m.partition)] = m.offset
            topic_id = self.progress.topic_id_of(m.topic)
            if self.progress.already_decided((m.topic, topic_id, m.partition, m.offset)):  # its envelope is out
                self.metrics.skipped.inc()
                continue
            raws.append(raw_from_event(event, topic_id))
        decisions: list[Decision] = []
        if raws:
            loop = asyncio.get_running_loop()
            decisions = await loop.run_in_executor(self.executor, self.process, raws)
            await self.publisher.publish(decisions)
        self.progress.decided([(o["topic"], o.get("topic_id"), o["partition"], o["offset"])
                               for o in (r.origin for r in raws)], last_offset)
        self.batches += 1
        lag = {}
        if self.highwater is not None:
            for (topic, partition), offset in last_offset.items():
                hw = self.highwater(topic, partition)
                if hw is not None:
                    lag[partition] = hw - (offset + 1)
        self.metrics.observe_batch(self.pipeline, decisions, time.perf_counter() - t0, lag,
                                   count_decisions=self.role != "score")
        return decisions


def register_agent(app: Any, raw_topic: Any, worker: StreamWorker) -> Any:
    """Attach the ``score`` agent to the app; it drives ``worker`` over micro-batches."""
    kafka = worker.kafka

    @app.agent(raw_topic, name="score", concurrency=1)
    async def score(stream):  # noqa: ANN001 - faust's stream
        await worker.start()
        checks = None
        if worker.identity is not None:
            worker.rewind.install()
            checks = asyncio.ensure_future(worker.identity.run())
        worker.ready = True
        try:
            async for events in stream.take_events(kafka.batch_max, within=kafka.batch_within_s):
                await worker.handle_batch(events)
        finally:
            if checks is not None:
                checks.cancel()
            if worker.publisher.producer is not None:  # drained cleanly: leave a fresh snapshot for the next start
                await worker.maybe_snapshot(force=True)
            worker.ready = False
            await worker.stop()

    @app.on_partitions_assigned.connect
    async def forget_lag(sender: Any, assigned: Any, **kwargs: Any) -> None:  # noqa: ARG001 - faust's signature
        # a rebalance revokes every partition first (eager protocol): the new assignment says which stay
        worker.metrics.keep_partitions(tp.partition for tp in assigned if tp.topic == kafka.raw_topic)

    return score
