"""Which incarnation of the raw topic the worker reads: Kafka topic ids (KIP-516).

A topic deleted and created again under the same name is a new topic: its offsets
start again at 0, so an origin ``(topic, partition, offset)`` no longer names one
input. Kafka gives every topic a random id at creation (Metadata v10+, Kafka 2.8+);
ids are never reused, so two checks that both see id ``A`` prove that the topic was
``A`` for the whole time between them. The worker uses that to know which topic each
input came from (``origin.topic_id`` on every envelope) without any help from its
consumer, which does not see ids (aiokafka 0.14 asks Metadata v1): see
:class:`RawTopicIdentity`.

kafka-python 3.0.12's admin client returns ``topic_id`` from ``describe_topics``
(one Metadata request, ~1-10 ms on a kept connection here); aiokafka exposes none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from streams.config import KafkaSettings
from streams.topics import client_kwargs

log = logging.getLogger(__name__)

#: Milliseconds one metadata check may take before the broker counts as unreachable.
CHECK_TIMEOUT_MS = 5_000
#: Seconds between checks while the broker is unreachable or the topic is missing, in a batch.
RETRY_S = 1.0
#: The id brokers send for "no id" (a topic created before the cluster had ids).
ZERO_ID = "00000000-0000-0000-0000-000000000000"
#: kafka-python's error code for a topic the broker does not know.
UNKNOWN_TOPIC_OR_PARTITION = 3


class TopicCheckFailed(RuntimeError):
    """The broker did not answer a metadata request (down, unreachable, or refusing us)."""


@dataclass(frozen=True)
class TopicState:
    """One answer of the broker about a topic: its id (None: no such topic) and partition count."""

    topic: str
    topic_id: str | None
    partitions: int
    id_supported: bool = True  # False: the broker knows the topic but gives no id (Kafka < 2.8)

    @property
    def exists(self) -> bool:
        return self.partitions > 0


class TopicWatch:
    """Asks the broker for topics' ids and partition counts over one kept admin connection.

    Not thread-safe: call it from one thread (the worker uses a one-thread executor).
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._admin: Any = None

    def describe(self) -> TopicState:
        """The watched topic as the broker sees it now.

        Raises:
            TopicCheckFailed: the broker did not answer within ``CHECK_TIMEOUT_MS``.
        """
        return self.describe_many([self.topic])[self.topic]

    def describe_many(self, topics: list[str]) -> dict[str, TopicState]:
        """Several topics in one request; see :meth:`describe`."""
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError, for_code

        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(client_id="sieve-topic-id", request_timeout_ms=CHECK_TIMEOUT_MS,
                                               bootstrap_timeout_ms=CHECK_TIMEOUT_MS, **client_kwargs(self.kafka))
            answers = self._admin.describe_topics(list(topics))
        except (KafkaError, OSError, ValueError) as exc:
            self.close()
            raise TopicCheckFailed(f"{type(exc).__name__}: {exc}") from exc
        out = {}
        for topic in answers:
            name = topic.get("name")
            if topic.get("error_code") == UNKNOWN_TOPIC_OR_PARTITION:  # deleted, or not created yet
                out[name] = TopicState(name, None, 0)
                continue
            if topic.get("error_code"):
                raise TopicCheckFailed(f"metadata of {name!r}: {for_code(topic['error_code']).__name__}")
            partitions = topic.get("partitions") or ()
            if not partitions or any(p.get("leader_id", -1) < 0 for p in partitions):
                out[name] = TopicState(name, None, 0)  # being created: not usable yet, wait for its leaders
                continue
            topic_id = str(topic["topic_id"]) if topic.get("topic_id") else None
            supported = topic_id is not None and topic_id != ZERO_ID
            out[name] = TopicState(name, topic_id if supported else None, len(partitions), id_supported=supported)
        missing = [t for t in topics if t not in out]
        if missing:
            raise TopicCheckFailed(f"the broker's metadata answer lacks {missing}")
        return out

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:  # noqa: BLE001 - closing a broken client must not hide why it broke
                log.debug("closing the topic-id admin client failed", exc_info=True)
            self._admin = None


def describe_once(kafka: KafkaSettings, topics: list[str]) -> dict[str, TopicState]:
    """One check of ``topics`` with a client of its own (recovery, start-up)."""
    watch = TopicWatch(kafka, topics[0])
    try:
        return watch.describe_many(topics)
    finally:
        watch.close()


class RawTopicIdentity:
    """The raw topic's confirmed id, kept true while the worker runs.

    An input may be decided only once a check *sent after it was fetched* saw the same
    id as the check before: then it came from that topic. :meth:`confirm` is that check;
    the worker awaits it at the start of every batch, holding :attr:`lock`, so it costs
    one metadata round trip per batch. :meth:`run` checks every ``interval_s`` too, so a
    topic recreated while no input flows is noticed, and so that readiness knows whether
    the broker answers.

    When the id changes (or the topic reappears after being missing), ``on_change`` is
    awaited with the new state and the old id while the lock is held; it must make the
    consumer read the new topic from its beginning and forget what the worker knew
    about the old one.

    Args:
        watch: the broker side.
        topic_id: the id recovery confirmed before the worker started consuming.
        on_change: the switch to a new topic (see :mod:`streams.worker.topic_switch`).
        interval_s: seconds between background checks.
    """

    def __init__(self, watch: TopicWatch, topic_id: str | None,
                 on_change: Callable[[TopicState, str | None], Awaitable[None]], interval_s: float = 5.0) -> None:
        self.watch = watch
        self.topic_id = topic_id
        self.on_change = on_change
        self.interval_s = interval_s
        self.lock = asyncio.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sieve-topic-id")
        self.last_ok: float | None = None       # monotonic time of the last answer
        self.last_error: str | None = None      # why the last check failed, if it did
        self.missing = False                    # the last answer: no such topic
        self.switches = 0
        self._warned_no_ids = False

    @property
    def topic(self) -> str:
        return self.watch.topic

    def reachable(self, within_s: float) -> bool:
        """Whether the last check succeeded, less than ``within_s`` seconds ago."""
        return self.last_error is None and self.last_ok is not None and time.monotonic() - self.last_ok < within_s

    async def check(self) -> TopicState:
        """One metadata request, on the executor. Records reachability.

        Raises:
            TopicCheckFailed: no answer.
        """
        loop = asyncio.get_running_loop()
        try:
            state = await loop.run_in_executor(self.executor, self.watch.describe)
        except TopicCheckFailed as exc:
            self.last_error = str(exc)
            raise
        self.last_ok, self.last_error, self.missing = time.monotonic(), None, not state.exists
        if state.exists and not state.id_supported and not self._warned_no_ids:
            self._warned_no_ids = True
            log.warning("the broker gives no topic id for %s (Kafka older than 2.8?): a raw topic deleted and "
                        "created again cannot be told apart from the old one; recreate the output topics with it",
                        self.topic)
        return state

    async def still_confirmed(self) -> bool:
        """Whether the broker answers now with the confirmed id (False when it does not answer)."""
        try:
            state = await self.check()
        except TopicCheckFailed:
            return False
        return state.exists and (state.topic_id == self.topic_id or not state.id_supported)

    async def confirm(self) -> tuple[str | None, bool]:
        """Block until the broker names the raw topic's id; switch first if it changed.

        Call with :attr:`lock` held. Returns ``(topic_id, switched)``: when ``switched``,
        every input fetched before is stale (it may be of the old topic) and must not be
        decided. While the broker does not answer, or the topic does not exist, it waits
        (checking every ``RETRY_S``): nothing can be decided or delivered meanwhile.
        """
        while True:
            try:
                state = await self.check()
            except TopicCheckFailed as exc:
                log.warning("cannot check the raw topic %s (%s); holding the batch until the broker answers",
                            self.topic, exc)
                await asyncio.sleep(RETRY_S)
                continue
            if not state.exists:
                log.warning("the raw topic %s does not exist (deleted?); holding the batch until it is created "
                            "again", self.topic)
                await asyncio.sleep(RETRY_S)
                continue
            if state.topic_id == self.topic_id or not state.id_supported:
                return self.topic_id, False
            await self.on_change(state, self.topic_id)
            self.topic_id = state.topic_id
            self.switches += 1
            return self.topic_id, True

    async def run(self) -> None:
        """Check every ``interval_s``, batches or not; switch between batches when the id changed.

        Runs until cancelled. A check does not need the lock (it only reads); a switch
        does, and a batch running meanwhile confirms the id itself before deciding anything.
        """
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                state = await self.check()
            except TopicCheckFailed as exc:
                log.warning("cannot check the raw topic %s: %s", self.topic, exc)
                continue
            if not state.exists:
                log.warning("the raw topic %s does not exist (deleted?); waiting for it to be created again",
                            self.topic)
            elif state.id_supported and state.topic_id != self.topic_id and not self.lock.locked():
                async with self.lock:
                    await self.confirm()  # checks again under the lock, then switches

    def close(self) -> None:
        self.executor.submit(self.watch.close)
        self.executor.shutdown(wait=True)
