"""Move faust's consumer to a raw topic that was deleted and created again, in place.

Left alone, faust-streaming 0.15.3 (aiokafka 0.14 underneath) mistakes the new topic
for the old one in four ways, measured or read in its consumer (``faust/transport/
consumer.py``):

* aiokafka notices a topic only through metadata, refreshed every 5 minutes unless a
  fetch fails: the worker consumed nothing for ~5 minutes after a recreation;
* faust's fetch loop drops every message below the last offset it read
  (``_read_offset``: "DROPPED MESSAGE ROFF"), and aiokafka keeps the old position when
  the new topic already has more messages, so the new topic's first inputs are never
  seen;
* ``Consumer.ack`` ignores offsets below the last committed one, and commits only move
  forward (``_should_commit``), so acks of the new topic's inputs would never commit;
* acked but uncommitted offsets of the old topic are committed onto the new one;
* a commit that was under way when the topic was deleted never ends when the new topic
  has fewer partitions: aiokafka retries ``UnknownTopicOrPartitionError`` until the group
  rebalances, and faust's rebalance waits for that commit (measured: stuck for good,
  ~10 log lines a second).

:class:`ConsumerRewind` makes the switch explicit instead, between two batches:

1. it closes a gate in front of faust's fetches (``Consumer._getmany``) and counts a new
   epoch: records of a fetch that was under way come back empty;
2. it moves ``app.consumer_generation_id`` to a value of its own (negative: aiokafka's
   generations are >= 0). faust's streams already skip messages fetched under another
   generation (they exist for rebalances), and :meth:`split` drops the ones already
   buffered for the next batch, marking them acked so faust never commits them;
3. it forgets faust's per-partition bookkeeping of the raw topic (acked, read and
   committed offsets, gaps), seeks every assigned partition that exists in the new topic
   to offset 0 (aiokafka resets to the earliest offset if 0 is gone), and commits 0
   there (best effort: a rebalance under way refuses it, and then seeks to the committed
   offsets, which Kafka deleted with the old topic: the earliest);
4. it asks aiokafka to refresh its metadata: a new partition count starts a rebalance
   now rather than in 5 minutes;
5. it opens the gate. The first fetch after it forgets, once more, the read offsets and
   gaps a fetch loop blocked during the switch may have written back.

And always: before faust commits offsets of the raw topic, a metadata check confirms
that the topic is still the one they were read from (one request per commit interval),
so the old topic's offsets never land on a new one; and a commit naming a partition
that does not exist gives up (as a commit after a rebalance does) instead of retrying
forever. (A topic deleted and created again within one commit's round trip could still
take one commit of the old offsets: the switch then commits 0 over it.)

The module reaches into faust's consumer (``_getmany``, ``_acked``, ``_read_offset``,
``_committed_offset``, ``_gap``, ``_commit_fut``); ``faust-streaming`` is pinned, and the
integration tests recreate the raw topic under a running worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Awaitable, Callable, Iterable, Sequence

from streams.exit_codes import EXIT_TOPIC_SWITCH_FAILED, describe_error

log = logging.getLogger(__name__)

#: Seconds the seek and the commit of the new topic's start may take.
SWITCH_TIMEOUT_S = 30.0


class ConsumerRewind:
    """The faust side of a raw topic switch (see the module docstring).

    Args:
        app: the faust app whose consumer reads ``topic``.
        topic: the raw topic.
    """

    def __init__(self, app: Any, topic: str,
                 still_confirmed: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.app = app
        self.topic = topic
        self.still_confirmed = still_confirmed
        self.epoch = 0
        self._cleaned_epoch = 0
        self._gate = asyncio.Event()
        self._gate.set()
        self._generation = 0  # ours count down from -1; aiokafka's count up from 0
        self._installed = False

    def install(self) -> None:
        """Put the gate in front of the consumer's fetches. Call once the app has its consumer."""
        if self._installed:
            return
        consumer = self.app.consumer
        fetch = consumer._getmany

        async def gated_getmany(active_partitions: Any, timeout: float) -> Any:
            _commits_give_up_on_missing_partitions(consumer)
            await self._gate.wait()
            epoch = self.epoch
            if self._cleaned_epoch != epoch:  # the first fetch after a switch
                self._forget(self._raw_partitions(consumer), read_only=True)
                self._cleaned_epoch = epoch
            records = await fetch(active_partitions, timeout)
            if self.epoch == epoch:
                return records
            # This fetch ran across a switch: its records may be of either topic, and aiokafka's
            # positions moved past them. faust fetches one call at a time, so nothing of the new
            # topic was decided yet: drop them and put the positions back where the switch left them.
            await self._gate.wait()
            try:
                await self._reposition(consumer)
            except Exception as exc:  # noqa: BLE001 - positions unknown: stop rather than skip inputs
                _fail(f"could not seek {self.topic} back after dropping a fetch that ran across the switch", exc)
            self._cleaned_epoch = -1  # forget read offsets again on the next call
            return {}

        consumer._getmany = gated_getmany
        self._commit_now = consumer._commit

        async def guarded_commit(offsets: Any) -> bool:
            raw = [tp for tp in offsets if tp.topic == self.topic]
            if raw and self.still_confirmed is not None and not await self.still_confirmed():
                # acked offsets of a topic that is gone (or unreachable): they must never land on a
                # topic created under its name. faust counts them as committed and moves on.
                log.info("not committing offsets of %s: the topic is not the one they were read from "
                         "(or the broker does not answer)", self.topic)
                others = {tp: o for tp, o in offsets.items() if tp.topic != self.topic}
                return await self._commit_now(others) if others else False
            return await self._commit_now(offsets)

        consumer._commit = guarded_commit
        self._installed = True

    def split(self, events: Sequence[Any]) -> tuple[list[Any], int]:
        """The events fetched under the consumer's current generation, and how many were not.

        The others were fetched before a switch (or a rebalance): they are dropped here and
        marked acked, so that faust neither commits their offsets nor waits for them.
        """
        current = self.app.consumer_generation_id
        fresh, stale = [], 0
        for event in events:
            message = event.message
            if getattr(message, "generation_id", current) == current:
                fresh.append(event)
            else:
                message.acked = True
                stale += 1
        return fresh, stale

    async def rewind(self, partitions: int) -> dict[int, int]:
        """Make the consumer read the raw topic, now with ``partitions`` partitions, from its beginning.

        Call between batches. Returns the start offset committed per assigned partition.
        """
        consumer = self.app.consumer
        self.epoch += 1
        self._gate.clear()
        self._generation -= 1
        self.app.consumer_generation_id = self._generation
        try:
            assigned = self._raw_partitions(consumer)
            starts = {tp: 0 for tp in assigned if tp.partition < partitions}
            await self._wait_for_commit(consumer)
            self._forget(assigned)
            if starts:
                await asyncio.wait_for(self._seek_start(consumer, starts), SWITCH_TIMEOUT_S)
                if not await asyncio.wait_for(self._commit(consumer, starts), SWITCH_TIMEOUT_S):
                    # a rebalance under way: it seeks to the committed offsets, which the commit
                    # guard kept free of the old topic's (absent: aiokafka starts at the earliest)
                    log.info("committing offset 0 of the new %s did not happen (rebalance under way); the "
                             "rebalance starts it from its earliest offsets", self.topic)
            await self._refresh_metadata(consumer)
        finally:
            self._gate.set()
        return {tp.partition: offset for tp, offset in starts.items()}

    @staticmethod
    async def _seek_start(consumer: Any, starts: dict) -> None:
        """Seek ``starts`` in the consumer's thread, skipping partitions a rebalance took meanwhile."""
        thread = consumer._thread

        async def seek() -> None:
            aio = thread._ensure_consumer()
            assigned = aio.assignment()
            for tp, offset in starts.items():
                if tp in assigned:
                    aio.seek(tp, offset)

        await thread.call_thread(seek)

    async def _reposition(self, consumer: Any) -> None:
        """Seek every assigned raw partition to its committed offset (0 where none is committed)."""
        thread = consumer._thread
        topic = self.topic

        async def seek_to_committed_or_start() -> None:
            aio = thread._ensure_consumer()
            for tp in [tp for tp in aio.assignment() if tp.topic == topic]:
                offset = await aio.committed(tp)
                aio.seek(tp, offset if offset is not None else 0)  # 0 gone: aiokafka resets to the earliest

        await asyncio.wait_for(thread.call_thread(seek_to_committed_or_start), SWITCH_TIMEOUT_S)
        self._forget(self._raw_partitions(consumer), read_only=True)

    def _raw_partitions(self, consumer: Any) -> set:
        return {tp for tp in consumer.assignment() if tp.topic == self.topic}

    def _forget(self, tps: Iterable[Any], *, read_only: bool = False) -> None:
        consumer = self.app.consumer
        books = [consumer._read_offset, consumer._gap]
        if not read_only:
            books += [consumer._acked, consumer._acked_index, consumer._committed_offset]
        for tp in tps:
            for book in books:
                book.pop(tp, None)

    @staticmethod
    async def _wait_for_commit(consumer: Any) -> None:
        """Let a commit that is under way finish (it may carry the old topic's offsets)."""
        await consumer.maybe_wait_for_commit_to_finish()

    async def _commit(self, consumer: Any, starts: dict) -> bool:
        """Commit ``starts`` as faust's own commit does: one commit at a time (``_commit_fut``)."""
        await consumer.maybe_wait_for_commit_to_finish()
        consumer._commit_fut = asyncio.get_running_loop().create_future()
        try:
            return bool(await self._commit_now(starts))  # not through the guard: the id changes right after
        finally:
            fut, consumer._commit_fut = consumer._commit_fut, None
            if not fut.done():
                fut.set_result(None)

    @staticmethod
    async def _refresh_metadata(consumer: Any) -> None:
        thread = consumer._thread

        async def refresh() -> None:
            thread._ensure_consumer()._client.force_metadata_update()

        await asyncio.wait_for(thread.call_thread(refresh), SWITCH_TIMEOUT_S)


def _commits_give_up_on_missing_partitions(consumer: Any) -> None:
    """Make aiokafka's commit of a partition that does not exist fail (see the module docstring)."""
    coordinator = getattr(consumer._thread._ensure_consumer(), "_coordinator", None)
    if coordinator is None or getattr(coordinator, "_sieve_gives_up", False):
        return
    from aiokafka.errors import CommitFailedError, UnknownTopicOrPartitionError

    commit = coordinator._do_commit_offsets

    async def commit_or_give_up(assignment: Any, offsets: Any) -> Any:
        try:
            return await commit(assignment, offsets)
        except UnknownTopicOrPartitionError as exc:
            # faust treats "already rebalanced" as a commit that did not happen, and tries again later
            raise CommitFailedError("Commit cannot be completed since the group has already rebalanced: a "
                                    f"partition of {sorted(offsets)} does not exist (topic deleted?)") from exc

    coordinator._do_commit_offsets = commit_or_give_up
    coordinator._sieve_gives_up = True


def _fail(what: str, exc: BaseException) -> None:
    """Exit with :data:`EXIT_TOPIC_SWITCH_FAILED` (no commit): the restart's recovery reads the new topic."""
    log.critical("%s (%s); exiting with %d: restart the worker, whose recovery reads the new topic from its "
                 "beginning", what, describe_error(exc), EXIT_TOPIC_SWITCH_FAILED, exc_info=True)
    logging.shutdown()
    os._exit(EXIT_TOPIC_SWITCH_FAILED)


def attach_topic_identity(worker: Any, app: Any) -> None:
    """Give ``worker`` its raw topic check (:class:`streams.worker.topic_identity.RawTopicIdentity`) and
    the switch it runs when the topic was recreated; :func:`streams.worker.loop.register_agent` starts both."""
    from streams.worker.topic_identity import RawTopicIdentity, TopicState, TopicWatch

    kafka = worker.kafka
    rewind = ConsumerRewind(app, kafka.raw_topic, still_confirmed=lambda: worker.identity.still_confirmed())

    async def switch(state: TopicState, old_id: str | None) -> None:
        log.warning("the raw topic %s was deleted and created again (topic id %s, now %s, %d partitions): the "
                    "worker forgets what it decided of the old topic and reads the new one from its beginning; "
                    "inputs of the old topic it had not decided yet went with it", kafka.raw_topic, old_id,
                    state.topic_id, state.partitions)
        try:
            starts = await rewind.rewind(state.partitions)
        except Exception as exc:  # noqa: BLE001 - any failure here leaves faust's offsets unknown: stop
            _fail(f"could not move the consumer to the new {kafka.raw_topic}", exc)
        worker.forget_raw_topic(state.topic_id)
        worker.metrics.topic_switches.inc()
        log.info("consuming %s (topic id %s) from offset 0 of partitions %s", kafka.raw_topic, state.topic_id,
                 sorted(starts) or "none assigned yet")

    worker.rewind = rewind
    worker.identity = RawTopicIdentity(TopicWatch(kafka, kafka.raw_topic), worker.raw_topic_id, switch,
                                       kafka.topic_check_interval_s)
