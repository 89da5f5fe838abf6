"""``sieve run --role decide``: stage 2 as a consume-transform-produce loop on Kafka transactions.

One consumer in the group ``<group>-decide`` reads ``kafka.scored_topic`` with
``isolation_level=read_committed`` and no auto-commit. The decider that the group
assigns the scored partition to is its **owner**; the others are **standbys** (nothing
assigned, ``/readyz`` 503 "standby") that take over when the owner leaves the group or
is thrown out of it (session timeout). Taking over is :mod:`streams.roles.takeover`:
fence the previous owner, rebuild the state, seek to the committed offset.

Each batch of scored records is one transaction of the owner's producer: the envelopes
of every input (copied as they are for inputs stage 1 decided, decided here for the
rest), then the scored offsets (``send_offsets_to_transaction``), then the commit.
``read_committed`` readers see a batch's outputs and its offsets together or not at
all: a crash anywhere before the commit leaves nothing behind, and the next owner
starts again at the last committed offset. Inputs a scorer sent twice (stage 1 is
at-least-once) are recognised by their origin and produce nothing the second time.

Any failure inside a batch ends the process (the state already holds the batch's
accepted examples): ``ProducerFenced`` with :data:`~streams.exit_codes.EXIT_FENCED`,
anything else with :data:`~streams.exit_codes.EXIT_DELIVERY_FAILED`. A supervisor
restarts it; it comes back as a standby or as the owner.

faust's own ``processing_guarantee="exactly_once"`` is not used: it keys transactions
by output partition and has open issues (faust-streaming #177, #323, #517, #136).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from aiokafka import ConsumerRebalanceListener

from quality.envelope import Decision, encode_output
from quality.pipeline import Pipeline
from streams.config import KafkaSettings, Settings
from streams.exit_codes import EXIT_DELIVERY_FAILED, describe_error
from streams.metrics import SieveMetrics
from streams.recovery import recover, snapshot_dir
from streams.recovery.envelopes import state_features
from streams.roles.fencing import exit_fenced, is_fenced, transactional_producer
from streams.roles.groups import transactional_id
from streams.roles.scored import ScoredRecord, decode_scored
from streams.roles.takeover import DecidedOrigins
from streams.topics import client_kwargs, output_topics
from streams.worker.checkpoint import Checkpointer
from streams.worker.progress import Progress
from streams.worker.publish import RECORD_OVERHEAD_BYTES

log = logging.getLogger(__name__)


class Decider:
    """The decider process: a standby until the group assigns it the scored partition.

    Args:
        settings: the process settings.
        kafka: the role's Kafka settings (group ``<group>-decide``).
        base: the Kafka settings as configured (the transactional id is derived from them).
        build: builds a fresh pipeline of the decide stages (a new owner starts from empty state).
        metrics: where the series go.
    """

    def __init__(self, settings: Settings, kafka: KafkaSettings, base: KafkaSettings,
                 build: Callable[[], Pipeline], metrics: SieveMetrics) -> None:
        self.settings, self.kafka, self.base, self.build, self.metrics = settings, kafka, base, build, metrics
        self.topics = output_topics(kafka)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sieve-decider")
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.consumer: Any = None
        self.producer: Any = None
        self.owned: Any = None          # the TopicPartition this decider owns
        self.wanted: set = set()        # what the group assigned (taken over by the loop)
        self.pipeline: Pipeline | None = None
        self.decided = DecidedOrigins()
        self.progress: Progress | None = None
        self.checkpointer: Checkpointer | None = None
        self.state = "starting"
        self.batches = 0
        self.state_dir = Path(settings.state_dir) / "decider"

    # -- health -------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        if self.state == "active":
            return True, "ready"
        if self.state == "taking over":
            return False, f"taking over {self.kafka.scored_topic}: fencing the previous owner and rebuilding state"
        if self.state == "standby":
            return False, (f"standby: another decider of group {self.kafka.group_id} owns "
                           f"{self.kafka.scored_topic} (this one takes over if it goes)")
        return False, "starting"

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        k = self.kafka
        session_ms = int(k.session_timeout_s * 1000)
        self.consumer = AIOKafkaConsumer(
            group_id=k.group_id, isolation_level="read_committed", enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3), max_poll_interval_ms=max(300_000, 4 * session_ms),
            rebalance_timeout_ms=max(60_000, session_ms), max_partition_fetch_bytes=k.max_fetch_bytes + (64 << 10),
            client_id="sieve-decider", **client_kwargs(k, aio=True))
        self.consumer.subscribe([k.scored_topic], listener=_Listener(self))
        await self.consumer.start()
        self.state = "standby"
        self.metrics.decider_active.set(0)
        log.info("decider in group %s: standby until %s is assigned to it", k.group_id, k.scored_topic)
        try:
            while not self.stopping.is_set():
                if self.wanted and self.owned not in self.wanted:
                    await self._take_over(sorted(self.wanted, key=lambda tp: tp.partition)[0])
                fetch = asyncio.ensure_future(self.consumer.getmany(timeout_ms=int(k.batch_within_s * 1000),
                                                                    max_records=k.batch_max))
                stop = asyncio.ensure_future(self.stopping.wait())
                done, _ = await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if fetch not in done:
                    fetch.cancel()
                    break
                records = [r for tp, rs in fetch.result().items() if tp == self.owned for r in rs]
                if records and self.state == "active":
                    await self.handle_batch(records)
        finally:
            async with self.lock:
                await self._release(clean=True)
            await self.consumer.stop()
            self.executor.shutdown(wait=True)

    async def _take_over(self, tp: Any) -> None:
        async with self.lock:
            await self._release(clean=True)
            self.state = "taking over"
            t0 = time.perf_counter()
            tid = transactional_id(self.base, "decide", tp.partition)
            producer = transactional_producer(self.kafka, tid, max_request_size=self.kafka.max_output_bytes)
            await producer.start()  # init_transactions: the previous owner is fenced from here on
            self.producer, self.tid = producer, tid
            pipeline = self.build()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, lambda: recover(
                self.kafka, pipeline, state_dir=self.state_dir))
            self.pipeline = pipeline
            self.decided = DecidedOrigins.recovered(self.kafka.raw_topic, result)
            self.progress = Progress.recovered(self.kafka.raw_topic, list(self.topics.values()), result)
            self.checkpointer = Checkpointer(self.kafka, snapshot_dir(self.state_dir, self.kafka),
                                             self.settings.snapshot_interval_s, result.output_topic_ids)
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
            self.owned = tp
            self.state = "active"
            self.metrics.takeovers.inc()
            self.metrics.decider_active.set(1)
            self.metrics.observe_index_sizes(pipeline)
            log.info("decider now owns %s (transactional id %s) from offset %s; state rebuilt in %.1fs: %s",
                     tp, tid, committed, time.perf_counter() - t0, result.summary())

    async def _release(self, *, clean: bool) -> None:
        """Stop owning: snapshot (when clean and between batches), drop the producer and the state."""
        if self.owned is None and self.producer is None:
            return
        if clean and self.checkpointer is not None and self.pipeline is not None and self.progress is not None:
            await self.checkpointer.maybe_snapshot(self.pipeline, self.progress, self.executor, force=True)
        if self.producer is not None:
            try:
                await self.producer.stop()
            except Exception:  # noqa: BLE001 - a fenced producer may refuse to close cleanly
                log.debug("stopping the transactional producer failed", exc_info=True)
        log.info("decider gives up %s: standby", self.owned)
        self.producer, self.owned, self.pipeline, self.progress, self.checkpointer = None, None, None, None, None
        self.state = "standby"
        self.metrics.decider_active.set(0)

    async def handle_batch(self, records: list) -> None:
        """Decide and write one batch of scored records as one transaction (see the module docstring)."""
        try:
            async with self.lock:
                if self.state != "active":
                    return
                await self._handle_batch(records)
            await self._maybe_snapshot()
        except BaseException as exc:  # noqa: BLE001 - fail-stop: the state holds uncommitted work
            if is_fenced(exc):
                exit_fenced("decide", getattr(self, "tid", "?"), self.kafka.group_id, self.metrics)
            log.critical("decider batch of %d failed (%s); exiting with %d: nothing of it was committed, and the "
                         "next owner starts at the last committed offset", len(records),
                         describe_error(exc, self.kafka), EXIT_DELIVERY_FAILED, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_DELIVERY_FAILED)

    async def _handle_batch(self, records: list) -> None:
        t0 = time.perf_counter()
        plan: list[tuple[ScoredRecord, int | None]] = []  # (record, index among the pending ones)
        pending: list = []
        fresh = []
        for rec in records:
            sr = decode_scored(rec.value, {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset})
            origin = DecidedOrigins.key_of(sr.origin)
            if origin is not None and origin in self.decided:
                self.metrics.skipped.inc()  # a scorer sent it again: its envelope is out (or in this batch)
                continue
            if origin is not None:
                self.decided.add(origin)
                fresh.append(origin)
            if sr.final is not None:
                plan.append((sr, None))
            else:
                plan.append((sr, len(pending)))
                pending.append((sr.example, sr.scores, sr.details))
        decisions: list[Decision] = []
        if pending:
            loop = asyncio.get_running_loop()
            decisions = await loop.run_in_executor(self.executor, self.pipeline.process_examples, pending)
        await self.producer.begin_transaction()
        futures, sent_to, counted = [], [], []
        own_versions = self.pipeline.versions()
        for sr, i in plan:
            key = sr.id.encode("utf-8", "surrogatepass")
            if i is None:
                kind, value = sr.final
                counted.append(Decision(sr.id, kind, sr.reasons, sr.scores, sr.origin,
                                        example=SimpleNamespace(source=sr.source)))  # type: ignore[arg-type]
            else:
                d = decisions[i]
                limit = self.kafka.max_output_bytes - len(key) - RECORD_OVERHEAD_BYTES
                kind, value = encode_output(d, sr.versions or own_versions, limit, extra=state_features(d))
                counted.append(d)
            topic = self.topics[kind]
            futures.append(await self.producer.send(topic, value=value, key=key))
            sent_to.append(topic)
        metas = await asyncio.gather(*futures)
        last = records[-1]
        await self.producer.send_offsets_to_transaction({self.owned: last.offset + 1}, self.kafka.group_id)
        await self.producer.commit_transaction()
        for topic, meta in zip(sent_to, metas):
            self.progress.written(topic, meta.partition, meta.offset)
        raw = [o for o in fresh if o[0] == self.kafka.raw_topic and o[1] == self.progress.raw_topic_id]
        ends: dict[tuple[str, int], int] = {}
        for o in raw:
            ends[(o[0], o[2])] = max(ends.get((o[0], o[2]), 0), o[3])
        self.progress.decided(raw, ends)
        self.batches += 1
        hw = self.consumer.highwater(self.owned)
        if hw is not None:
            self.metrics.scored_lag.labels(str(self.owned.partition)).set(max(0, hw - (last.offset + 1)))
        self.metrics.observe_batch(self.pipeline, counted, time.perf_counter() - t0)

    async def _maybe_snapshot(self) -> None:
        async with self.lock:
            if self.checkpointer is not None and self.state == "active":
                await self.checkpointer.maybe_snapshot(self.pipeline, self.progress, self.executor)


class _Listener(ConsumerRebalanceListener):
    """The group's rebalance callbacks: a revoked partition is given up between batches; an
    assigned one is taken over by the loop (recovery can take long)."""

    def __init__(self, decider: Decider) -> None:
        self.decider = decider

    async def on_partitions_revoked(self, revoked: Any) -> None:
        d = self.decider
        if d.owned is not None and d.owned in set(revoked):
            async with d.lock:
                await d._release(clean=True)
        d.wanted = set()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.decider.wanted = {tp for tp in assigned if tp.topic == self.decider.kafka.scored_topic}
        if not self.decider.wanted:
            log.info("decider: nothing assigned (standby)")
