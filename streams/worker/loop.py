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
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import orjson

from pathlib import Path

from quality.pipeline import Decision, Pipeline
from quality.records import RawRecord
from quality.state import DedupWindow, save_snapshot
from streams.config import Settings
from streams.metrics import SieveMetrics
from streams.recovery import DecidedInputs, Frontier, Origin, quota_state
from streams.topics import client_kwargs, output_topics

log = logging.getLogger(__name__)

#: Exit status when an output could not be delivered (EX_TEMPFAIL): restart the worker.
EXIT_DELIVERY_FAILED = 75
#: Error text kept in an envelope that had to be shrunk.
MAX_ERROR_CHARS = 4096
#: Bytes a Kafka record needs beyond its key and value (headers, batch framing), kept free.
RECORD_OVERHEAD_BYTES = 512
#: Longest message key kept in an envelope's origin (the rest is cut).
MAX_ORIGIN_KEY_BYTES = 1024


class OutputTooLarge(RuntimeError):
    """An accepted envelope does not fit in one Kafka message even without its metadata."""


def encode_envelope(env: dict[str, Any], limit: int) -> bytes:
    """The envelope as JSON bytes of at most ``limit`` bytes.

    Rejected and dead-letter envelopes that are too large lose, in turn, their
    example, their raw payload and most of their error text, and say so in an
    ``omitted`` field. An accepted envelope can only lose its metadata; an accepted
    example that alone is too large raises :class:`OutputTooLarge` (lower
    ``pipeline.filters.max_total_chars`` or raise ``kafka.max_output_bytes``).
    """
    data = orjson.dumps(env, option=orjson.OPT_SERIALIZE_NUMPY)
    if len(data) <= limit:
        return data
    size = len(data)
    env = dict(env)
    steps = ["metadata"] if env.get("decision") == "accepted" else ["example", "raw", "error", "metadata"]
    dropped = []
    for key in steps:
        if env.get(key) is None:
            continue
        env[key] = env[key][:MAX_ERROR_CHARS] if key == "error" else None
        dropped.append(key)
        env["omitted"] = (f"envelope was {size} bytes, over kafka.max_output_bytes={limit}; "
                          f"dropped or cut: {', '.join(dropped)}")
        data = orjson.dumps(env, option=orjson.OPT_SERIALIZE_NUMPY)
        if len(data) <= limit:
            return data
    raise OutputTooLarge(f"the {env.get('decision')} envelope of {env.get('id')!r} is {len(data)} bytes, over "
                         f"kafka.max_output_bytes={limit}; lower pipeline.filters.max_total_chars or raise "
                         "kafka.max_output_bytes (and the topic's max.message.bytes)")


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


class RecentOrigins:
    """The origins of the last ``maxlen`` decided inputs, to ignore a redelivery without a restart.

    Inside one process an input comes back only if its offset was not committed yet
    (a rebalance, or a commit that failed as the group moved); that window is a few
    commit intervals of traffic, far below ``maxlen``.
    """

    def __init__(self, maxlen: int = 100_000) -> None:
        self.maxlen = maxlen
        self._set: set[Origin] = set()
        self._order: deque[Origin] = deque()

    def add(self, origin: Origin) -> None:
        if origin in self._set:
            return
        self._set.add(origin)
        self._order.append(origin)
        if len(self._order) > self.maxlen:
            self._set.discard(self._order.popleft())

    def __contains__(self, origin: object) -> bool:
        return origin in self._set

    def __len__(self) -> int:
        return len(self._set)


class StreamWorker:
    """Holds the pipeline, the output producer, the skip set and the metrics of one worker.

    Args:
        settings: the process settings (topics, limits).
        pipeline: the pipeline core, already warmed by recovery.
        metrics: where batch metrics go.
        skip: inputs already decided before a restart (from :func:`streams.recovery.recover`).
        highwater: ``(topic, partition) -> highwater`` of the raw topic, for the lag gauge.
        output_end: output topic -> partition -> end offset the recovered state covers.
        decided_end: raw partition -> end of the inputs decided before the restart (the
            restored snapshot's frontier).
        snapshot_dir: where dedup snapshots go every ``settings.snapshot_interval_s``
            (None: no snapshots).
    """

    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: SieveMetrics,
                 skip: DecidedInputs | None = None,
                 highwater: Callable[[str, int], int | None] | None = None,
                 output_end: dict[str, dict[int, int]] | None = None, decided_end: dict[int, int] | None = None,
                 snapshot_dir: Path | None = None) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.pipeline = pipeline
        self.metrics = metrics
        self.skip = skip if skip is not None else DecidedInputs(settings.kafka.raw_topic)
        self.recent = RecentOrigins()
        self.highwater = highwater
        self.topics = output_topics(self.kafka)
        self.versions = pipeline.versions()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sieve-pipeline")
        self.producer: Any = None
        self.batches = 0
        self.ready = False
        # what this worker has decided and written, saved with each snapshot (its frontier):
        # output topic -> partition -> end offset, and raw partition -> end of the decided inputs
        self.output_end: dict[str, dict[int, int]] = {t: dict((output_end or {}).get(t, {}))
                                                      for t in self.topics.values()}
        self.decided_end: dict[int, int] = dict(decided_end or {})
        self.snapshot_dir = snapshot_dir
        self.snapshot_interval_s = settings.snapshot_interval_s
        self._last_snapshot = time.monotonic()
        self._in_batch = False  # a batch decided but not yet fully acknowledged
        self.window = DedupWindow(pipeline.stages, settings.pipeline.dedup_window_s)

    async def start(self) -> None:
        """Start the output producer: acks=all, idempotent, messages up to ``max_output_bytes``."""
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5,
                                         max_request_size=self.kafka.max_output_bytes,
                                         client_id="sieve-worker", **client_kwargs(self.kafka, aio=True))
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        self.executor.shutdown(wait=True)

    async def handle_batch(self, events: Sequence[Any]) -> list[Decision]:
        """Decide and publish one batch; return when every output is acknowledged.

        Any exception ends the process (fail-stop, see the module docstring).
        """
        try:
            self._in_batch = True
            decisions = await self._handle_batch(events)
            self._in_batch = False
            await self.maybe_snapshot()
            return decisions
        except BaseException as exc:  # noqa: BLE001 - nothing may reach faust's ack-in-finally
            log.critical("batch of %d failed (%s: %s); exiting with %d before faust can commit it",
                         len(events), type(exc).__name__, exc, EXIT_DELIVERY_FAILED, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_DELIVERY_FAILED)

    async def _handle_batch(self, events: Sequence[Any]) -> list[Decision]:
        t0 = time.perf_counter()
        raws: list[RawRecord] = []
        last_offset: dict[tuple[str, int], int] = {}
        for event in events:
            m = event.message
            last_offset[(m.topic, m.partition)] = m.offset
            origin = (m.topic, m.partition, m.offset)
            if origin in self.skip or origin in self.recent:  # already decided: its envelope is out
                self.skip.discard(origin)
                self.recent.add(origin)  # a second redelivery (rebalance before a commit) is skipped too
                self.metrics.skipped.inc()
                continue
            raws.append(raw_from_event(event))
        decisions: list[Decision] = []
        if raws:
            loop = asyncio.get_running_loop()
            decisions = await loop.run_in_executor(self.executor, self.pipeline.process, raws)
            await self.publish(decisions)
            if self.window.window_s > 0:  # forget accepted examples older than pipeline.dedup_window_s
                expired = await loop.run_in_executor(self.executor, self.window.tick)
                if expired:
                    log.info("dedup window: forgot %s", expired)
            for raw in raws:
                self.recent.add((raw.origin["topic"], raw.origin["partition"], raw.origin["offset"]))
        for (topic, partition), offset in last_offset.items():  # every input up to here is decided and out
            if topic == self.kafka.raw_topic:
                self.decided_end[partition] = max(self.decided_end.get(partition, 0), offset + 1)
        self.batches += 1
        lag = {}
        if self.highwater is not None:
            for (topic, partition), offset in last_offset.items():
                hw = self.highwater(topic, partition)
                if hw is not None:
                    lag[partition] = hw - (offset + 1)
        self.metrics.observe_batch(self.pipeline, decisions, time.perf_counter() - t0, lag)
        return decisions

    async def maybe_snapshot(self, force: bool = False) -> None:
        """Snapshot the dedup state between batches, when every output so far is acknowledged.

        It runs on the pipeline's own thread, so no batch mutates the indexes meanwhile;
        ``output_end`` then names exactly the accepted records the state contains, and
        ``decided_end`` the inputs whose envelopes are all out (recovery skips those).
        """
        if self.snapshot_dir is None or self.snapshot_interval_s <= 0 or self._in_batch:
            return  # mid-batch the state may hold examples whose envelopes are not out yet
        if not force and time.monotonic() - self._last_snapshot < self.snapshot_interval_s:
            return
        accepted_end = self.output_end[self.kafka.accepted_topic]
        meta = {"accepted_topic": self.kafka.accepted_topic, "raw_topic": self.kafka.raw_topic,
                "group_id": self.kafka.group_id,
                "accepted_end_offsets": {str(p): o for p, o in accepted_end.items()},
                **self.frontier().meta()}
        quotas = quota_state(self.pipeline)
        if quotas is not None:  # taken between batches: the windows match the frontier
            meta["quota_windows"] = quotas
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        self._last_snapshot = time.monotonic()
        try:
            path = await loop.run_in_executor(self.executor, save_snapshot, self.pipeline.stages,
                                              self.snapshot_dir, meta)
        except Exception:  # noqa: BLE001 - a snapshot is a shortcut; the accepted topic stays the truth
            log.exception("dedup snapshot to %s failed; recovery will replay more of %s", self.snapshot_dir,
                          self.kafka.accepted_topic)
            return
        log.info("dedup snapshot %s in %.2fs", path.name, time.perf_counter() - t0)

    def frontier(self) -> Frontier:
        """What is decided and written now; recovery trusts it (see :mod:`streams.recovery`).

        Inputs that recovery found decided but that have not come back yet (the worker
        consumes a partition from its committed offset) are kept as pending spans: a
        snapshot taken before they are met again must still name them decided.
        """
        return Frontier(dict(self.decided_end), {t: dict(ends) for t, ends in self.output_end.items()},
                        self.skip.beyond(self.decided_end))

    async def publish(self, decisions: Sequence[Decision]) -> None:
        """Produce one envelope per decision (key = example id) and await every acknowledgement.

        An envelope that cannot fit in one Kafka message even after shrinking goes to the
        dead-letter topic as a small ``too_large`` envelope instead: bad input must not stop
        the worker (a restart would meet the same input again).
        """
        futures, sent_to = [], []
        for d in decisions:
            key = d.id.encode("utf-8", "surrogatepass")
            topic = self.topics[d.decision]
            try:
                value = encode_envelope(d.envelope(self.versions), self.kafka.max_output_bytes - len(key)
                                        - RECORD_OVERHEAD_BYTES)
            except OutputTooLarge as exc:
                log.warning("envelope of an input at %s too large for Kafka; dead-lettered", dict(d.origin))
                topic = self.topics["dead_letter"]
                value = orjson.dumps({"id": d.id, "decision": "dead_letter", "reasons": ["too_large"],
                                      "scores": {}, "example": None, "origin": dict(d.origin), "raw": None,
                                      "error": f"{exc} (pipeline decision was {d.decision}: {d.reasons})",
                                      "versions": self.versions})
            futures.append(await self.producer.send(topic, value=value, key=key))
            sent_to.append(topic)
        for topic, meta in zip(sent_to, await asyncio.gather(*futures)):
            ends = self.output_end[topic]
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)


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
            if worker.producer is not None:  # drained cleanly: leave a fresh snapshot for the next start
                await worker.maybe_snapshot(force=True)
            worker.ready = False
            await worker.stop()

    return score
