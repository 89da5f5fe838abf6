"""Publishing: one envelope per decision to its output topic, every acknowledgement awaited.

Envelopes are built and encoded by the core (:mod:`quality.envelope`), as in file mode;
here they go to Kafka through an idempotent producer (acks=all), and the offsets the
broker acknowledged move the worker's :class:`~streams.worker.progress.Progress`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping, Sequence

from quality.envelope import Decision, encode_decision, safe_origin
from streams.config import KafkaSettings
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
    """

    def __init__(self, kafka: KafkaSettings, topics: Mapping[str, str], versions: Mapping[str, Any],
                 progress: Progress) -> None:
        self.kafka, self.topics, self.versions, self.progress = kafka, dict(topics), versions, progress
        self.producer: Any = None

    async def start(self) -> None:
        """Start the producer: acks=all, idempotent, messages up to ``max_output_bytes``."""
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5,
                                         max_request_size=self.kafka.max_output_bytes,
                                         client_id="sieve-worker", **client_kwargs(self.kafka, aio=True))
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    def encode(self, d: Decision) -> tuple[Decision, bytes, bytes]:
        """The decision actually written, its key and its envelope's bytes; never raises.

        An envelope too large for one Kafka message even after shrinking becomes a small
        ``too_large`` dead letter, one that orjson cannot write an ``unencodable`` one
        (:func:`quality.envelope.encode_decision`); either is logged with the input's
        topic, partition and offset.
        """
        key = d.id.encode("utf-8", "surrogatepass")
        limit = self.kafka.max_output_bytes - len(key) - RECORD_OVERHEAD_BYTES
        written, value = encode_decision(d, self.versions, limit)
        if written is not d:
            log.warning("the envelope of the input at %s was dead-lettered as %s: %s", safe_origin(d.origin),
                        written.reasons[0], written.error)
            key = written.id.encode("utf-8")
        return written, key, value

    async def publish(self, decisions: Sequence[Decision]) -> None:
        """Produce one envelope per decision (key = example id) and await every acknowledgement.

        An envelope that cannot fit in one Kafka message even after shrinking goes to the
        dead-letter topic as a small ``too_large`` envelope instead, and one orjson cannot write
        as an ``unencodable`` one (:meth:`encode`).
        """
        futures, sent_to = [], []
        for d in decisions:
            written, key, value = self.encode(d)
            topic = self.topics[written.decision]
            futures.append(await self.producer.send(topic, value=value, key=key))
            sent_to.append(topic)
        for topic, meta in zip(sent_to, await asyncio.gather(*futures)):
            self.progress.written(topic, meta.partition, meta.offset)
