"""``sieve run --role score``: what a scorer needs before it consumes.

A scorer is the faust worker of ``--role all`` (:mod:`streams.worker.loop`) with the
score half of the pipeline (:class:`streams.worker.loop.Stage1`) and a
:class:`~streams.worker.publish.ScoredPublisher`, in group ``<group>-score``. It keeps
no state, so it recovers nothing: it only needs the raw topic's Kafka id for the
origins it forwards (and keeps the topic-identity switch of ``all``). It is
at-least-once: a scorer that dies mid-batch has its inputs scored again by the next
owner of the partition, and the decider recognises them (:mod:`streams.roles.takeover`).
"""

from __future__ import annotations

from streams.config import KafkaSettings
from streams.recovery import DecidedInputs, RecoveryResult, topic_ids


def scorer_start(kafka: KafkaSettings) -> RecoveryResult:
    """The empty recovery of a scorer: the raw topic's id and the output topics' ids, nothing decided.

    Raises:
        ValueError: the raw topic does not exist.
        KafkaUnreachable: the broker does not answer.
    """
    ids = topic_ids(kafka)
    raw_id = ids.pop(kafka.raw_topic)
    return RecoveryResult(skip=DecidedInputs(kafka.raw_topic, raw_id), raw_topic_id=raw_id, output_topic_ids=ids)
