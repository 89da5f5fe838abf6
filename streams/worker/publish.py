"""Publishing: one envelope per decision to its output topic, every acknowledgement awaited.

Envelopes are built and encoded by the core (:mod:`quality.envelope`), as in file mode;
here they go to Kafka through an idempotent producer (acks=all), and the offsets the
broker acknowledged move the worker's :class:`~streams.worker.progress.Progress`.
Accepted envelopes carry their state features (the embedding) so that any process can
rebuild the dedup state from ``sieve.accepted`` without the model.

With a ``transactional_id`` (``--role all``) each batch's envelopes are one Kafka
transaction: consumers reading ``read_committed`` see all of them or none, and a newer
process with the same id fences this one (its next write fails with ``ProducerFenced``,
see :mod:`streams.roles.fencing`). :class:`ScoredPublisher` is the scorer's: one scored
record per input to ``kafka.scored_topic``, no transaction (stage 1 is at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping, Sequence

from quality.envelope import Decision, encode_decision, safe_origin
from streams.config import KafkaSettings
from streams.recovery.envelopes import state_features
from streams.topics import client_kwargs
from streams.worker.progress import Progress

log = logging.getLogger(__name__)

#: Bytes a Kafka record needs beyond its key and value (headers, batch framing), kept free.
RECORD_OVERHEAD_BYTES = 512


class Publisher:
    """The worker's output producer.

    Args:
        kafka: brokers and ``max_output_bytes``.
        topics: decision -> output topic.
        versions: the pipeline's versions, on every envelope.
        progress: where acknowledged offsets are recorded.
        transactional_id: write each batch as one transaction under this fixed id (None: no
            transactions).
    """

    def __init__(self, kafka: KafkaSettings, topics: Mapping[str, str], versions: Mapping[str, Any],
                 progress: Progress, transactional_id: str | None = None) -> None:
        self.kafka, self.topics, self.versions, self.progress = kafka, dict(topics), versions, progress
        self.transactional_id = transactional_id
        self.producer: Any = None

    async def start(self) -> None:
        """Start the producer: acks=all, idempotent, messages up to ``max_output_bytes``; a
        transactional one initialises its id here (fencing any older holder of it)."""
        from aiokafka import AIOKafkaProducer

        extra = {"transactional_id": self.transactional_id} if self.transactional_id else {}
        self.producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5,
                                         max_request_size=self.max_request_size(),
                                         client_id="sieve-worker", **extra, **client_kwargs(self.kafka, aio=True))
        await self.producer.start()

    def max_request_size(self) -> int:
        return self.kafka.max_output_bytes

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    def encode(self, d: Decision) -> tuple[Decision, bytes, bytes]:
        """The decision actually written, its key and its envelope's bytes; never raises.

        An envelope too large for one Kafka message even after shrinking becomes a small
        ``too_large`` dead letter, one that orjson cannot write an ``unencodable`` one
        (:func:`quality.envelope.encode_decision`); either is logged with the input's
        topic, partition and offset. An accepted envelope carries its state features.
        """
        key = d.id.encode("utf-8", "surrogatepass")
        limit = self.kafka.max_output_bytes - len(key) - RECORD_OVERHEAD_BYTES
        written, value = encode_decision(d, self.versions, limit, state_features(d))
        if written is not d:
            log.warning("the envelope of the input at %s was dead-lettered as %s: %s", safe_origin(d.origin),
                        written.reasons[0], written.error)
            key = written.id.encode("utf-8")
        return written, key, value

    async def publish(self, decisions: Sequence[Decision]) -> None:
        """Produce one envelope per decision (key = example id) and await every acknowledgement.

        An envelope that cannot fit in one Kafka message even after shrinking goes to the
        dead-letter topic as a small ``too_large`` envelope instead, and one orjson cannot write
        as an ``unencodable`` one (:meth:`encode`). In a transaction, the acknowledgements
        come before the commit, and the commit before this returns: the caller (and faust's
        offset commit) only goes on once the outputs are visible to ``read_committed`` consumers.
        """
        if not decisions:
            return
        if self.transactional_id:
            await self.producer.begin_transaction()
        futures, sent_to = [], []
        for d in decisions:
            written, key, value = self.encode(d)
            topic = self.topics[written.decision]
            futures.append(await self.producer.send(topic, value=value, key=key))
            sent_to.append(topic)
        metas = await asyncio.gather(*futures)
        if self.transactional_id:
            await self.producer.commit_transaction()
        for topic, meta in zip(sent_to, metas):
            self.progress.written(topic, meta.partition, meta.offset)


class ScoredPublisher(Publisher):
    """A scorer's producer: one scored record per input to ``kafka.scored_topic`` (see
    :mod:`streams.roles.scored`), idempotent (so the decider sees each scorer's records of
    one raw partition in order, without gaps), no transaction."""

    def __init__(self, kafka: KafkaSettings, versions: Mapping[str, Any], progress: Progress) -> None:
        super().__init__(kafka, {}, versions, progress)

    def max_request_size(self) -> int:
        from streams.roles.scored import SCORED_EXTRA_BYTES

        return self.kafka.max_output_bytes + SCORED_EXTRA_BYTES

    def encode(self, d: Decision) -> tuple[Decision, bytes, bytes]:
        from streams.roles.scored import encode_scored

        key = d.id.encode("utf-8", "surrogatepass")
        return d, key, encode_scored(d, self.versions, self.kafka.max_output_bytes - len(key) - RECORD_OVERHEAD_BYTES)

    async def publish(self, decisions: Sequence[Decision]) -> None:
        futures = []
        for d in decisions:
            _d, key, value = self.encode(d)
            futures.append(await self.producer.send(self.kafka.scored_topic, value=value, key=key))
        await asyncio.gather(*futures)
