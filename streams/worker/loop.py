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
from streams.config import Settings
from streams.metrics import SieveMetrics
from streams.recovery import Frontier, RecoveryResult, snapshot_dir
from streams.topics import output_topics
from streams.worker.checkpoint import Checkpointer
from streams.worker.progress import Progress
from streams.worker.publish import Publisher

log = logging.getLogger(__name__)

#: Exit status when an output could not be delivered (EX_TEMPFAIL): restart the worker.
EXIT_DELIVERY_FAILED = 75
#: Longest message key kept in an envelope's origin (the rest is cut).
MAX_ORIGIN_KEY_BYTES = 1024


def raw_from_event(event: Any) -> RawRecord:
    """A raw record of a faust event: its value bytes and origin (topic, partition, offset, key)."""
    m = event.message
    origin: dict[str, Any] = {"topic": m.topic, "partition": m.partition, "offset": m.offset}
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


class StreamWorker:
    """Drives the pipeline over the raw topic's batches: skip what is decided, decide, publish, checkpoint.

    Args:
        settings: the process settings (topics, limits, state_dir, snapshot_interval_s).
        pipeline: the pipeline core, already warmed by recovery.
        metrics: where batch metrics go.
        recovered: what start-up recovery found (skip set and ends); None for a fresh start.
        highwater: ``(topic, partition) -> highwater`` of the raw topic, for the lag gauge.
    """

    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: SieveMetrics,
                 recovered: RecoveryResult | None = None,
                 highwater: Callable[[str, int], int | None] | None = None) -> None:
        kafka = settings.kafka
        self.kafka, self.pipeline, self.metrics, self.highwater = kafka, pipeline, metrics, highwater
        topics = output_topics(kafka)
        self.progress = Progress.recovered(kafka.raw_topic, list(topics.values()), recovered)
        self.publisher = Publisher(kafka, topics, pipeline.versions(), self.progress)
        self.checkpointer = Checkpointer(kafka, snapshot_dir(settings.state_dir, kafka), settings.snapshot_interval_s)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sieve-pipeline")
        self.batches = 0
        self.ready = False

    async def start(self) -> None:
        await self.publisher.start()

    async def stop(self) -> None:
        await self.publisher.stop()
        self.executor.shutdown(wait=True)

    def frontier(self) -> Frontier:
        return self.progress.frontier()

    async def maybe_snapshot(self, force: bool = False) -> None:
        await self.checkpointer.maybe_snapshot(self.pipeline, self.progress, self.executor, force)

    async def handle_batch(self, events: Sequence[Any]) -> list[Decision]:
        """Decide and publish one batch; return when every output is acknowledged.

        Any exception ends the process (fail-stop, see the module docstring).
        """
        try:
            self.checkpointer.in_batch = True
            decisions = await self._handle_batch(events)
            self.checkpointer.in_batch = False
            await self.maybe_snapshot()
            return decisions
        except BaseException as exc:  # noqa: BLE001 - nothing may reach faust's ack-in-finally
            log.critical("batch of %d at %s failed (%s: %s); exiting with %d before faust can commit it",
                         len(events), offsets_of(events), type(exc).__name__, exc, EXIT_DELIVERY_FAILED,
                         exc_info=True)
            logging.shutdown()
            os._exit(EXIT_DELIVERY_FAILED)

    async def _handle_batch(self, events: Sequence[Any]) -> list[Decision]:
        t0 = time.perf_counter()
        raws: list[RawRecord] = []
        last_offset: dict[tuple[str, int], int] = {}
        for event in events:
            m = event.message
            last_offset[(m.topic, m.partition)] = m.offset
            if self.progress.already_decided((m.topic, m.partition, m.offset)):  # its envelope is out
                self.metrics.skipped.inc()
                continue
            raws.append(raw_from_event(event))
        decisions: list[Decision] = []
        if raws:
            loop = asyncio.get_running_loop()
            decisions = await loop.run_in_executor(self.executor, self.pipeline.process, raws)
            await self.publisher.publish(decisions)
        self.progress.decided([(r.origin["topic"], r.origin["partition"], r.origin["offset"]) for r in raws],
                              last_offset)
        self.batches += 1
        lag = {}
        if self.highwater is not None:
            for (topic, partition), offset in last_offset.items():
                hw = self.highwater(topic, partition)
                if hw is not None:
                    lag[partition] = hw - (offset + 1)
        self.metrics.observe_batch(self.pipeline, decisions, time.perf_counter() - t0, lag)
        return decisions


def register_agent(app: Any, raw_topic: Any, worker: StreamWorker) -> Any:
    """Attach the ``score`` agent to the app; it drives ``worker`` over micro-batches."""
    kafka = worker.kafka

    @app.agent(raw_topic, name="score", concurrency=1)
    async def score(stream):  # noqa: ANN001 - faust's stream
        await worker.start()
        worker.ready = True
        try:
            async for events in stream.take_events(kafka.batch_max, within=kafka.batch_within_s):
                await worker.handle_batch(events)
        finally:
            if worker.publisher.producer is not None:  # drained cleanly: leave a fresh snapshot for the next start
                await worker.maybe_snapshot(force=True)
            worker.ready = False
            await worker.stop()

    return score
