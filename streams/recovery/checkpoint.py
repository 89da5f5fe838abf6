"""The checkpoint: what a worker writes with each dedup snapshot, and what recovery reads back.

One type owns the snapshot's metadata both ways (:meth:`Checkpoint.to_meta` for the
worker, :meth:`Checkpoint.from_meta` for recovery), so the two cannot drift. It names
the topics and the group it was taken for, the accepted offsets the saved dedup state
covers, and the worker's **frontier**: per raw partition the end of the inputs it had
decided (every offset below was decided and its envelope acknowledged), inputs found
decided but not met again yet (pending spans), the end offsets of the three output
topics, and the Kafka topic ids of the raw and output topics (a topic deleted and
created again gets a new id: its offsets are not the ones recorded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from streams.config import KafkaSettings
from streams.recovery.decided import Span
from streams.topics import output_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frontier:
    """What a snapshot's worker had decided and written when the snapshot was taken.

    Every input of a raw partition below ``decided_end`` was decided and its envelope
    acknowledged; so were the ``pending`` spans past it (inputs recovery found decided that
    the worker had not consumed again yet). ``output_end`` is where each output topic ended.
    """

    decided_end: dict[int, int]              # raw partition -> end of the decided inputs
    output_end: dict[str, dict[int, int]]    # output topic -> partition -> end offset
    pending: dict[int, list[Span]] = field(default_factory=dict)
    raw_topic_id: str | None = None          # the incarnation of the raw topic the offsets are of

    def meta(self) -> dict:
        return {"raw_topic_id": self.raw_topic_id,
                "decided_end_offsets": {str(p): o for p, o in self.decided_end.items()},
                "pending_decided_spans": {str(p): [list(s) for s in spans] for p, spans in self.pending.items()},
                "output_end_offsets": {t: {str(p): o for p, o in ends.items()} for t, ends in self.output_end.items()}}


@dataclass(frozen=True)
class Checkpoint:
    """A snapshot's metadata: its topics and group, the accepted offsets its state covers, its frontier.

    ``frontier`` is None for a snapshot written by a Sieve that saved none (recovery then
    scans every output).
    """

    accepted_topic: str
    raw_topic: str
    group_id: str
    accepted_end: dict[int, int]             # accepted partition -> end offset the saved state covers
    frontier: Frontier | None = None
    output_topic_ids: dict[str, str | None] = field(default_factory=dict)  # output topic -> Kafka id then

    @classmethod
    def of(cls, kafka: KafkaSettings, frontier: Frontier,
           output_topic_ids: Mapping[str, str | None] | None = None) -> "Checkpoint":
        """The checkpoint of a worker's frontier: its state covers what it wrote to the accepted topic."""
        return cls(kafka.accepted_topic, kafka.raw_topic, kafka.group_id,
                   dict(frontier.output_end.get(kafka.accepted_topic, {})), frontier, dict(output_topic_ids or {}))

    def to_meta(self) -> dict[str, Any]:
        """The JSON the snapshot is saved with (the format of every Sieve since frontiers)."""
        meta: dict[str, Any] = {"accepted_topic": self.accepted_topic, "raw_topic": self.raw_topic,
                                "group_id": self.group_id, "output_topic_ids": dict(self.output_topic_ids),
                                "accepted_end_offsets": {str(p): o for p, o in self.accepted_end.items()}}
        if self.frontier is not None:
            meta.update(self.frontier.meta())
        return meta

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> "Checkpoint | None":
        """The checkpoint a snapshot was saved with, or None when it has no usable metadata."""
        if not meta or not isinstance(meta.get("accepted_topic"), str):
            return None
        covered = {int(p): int(o) for p, o in (meta.get("accepted_end_offsets") or {}).items()}
        decided, outputs = meta.get("decided_end_offsets"), meta.get("output_end_offsets")
        frontier = None
        if isinstance(decided, dict) and isinstance(outputs, dict):
            pending = meta.get("pending_decided_spans") or {}
            frontier = Frontier({int(p): int(o) for p, o in decided.items()},
                                {t: {int(p): int(o) for p, o in ends.items()} for t, ends in outputs.items()},
                                {int(p): [(int(a), int(b)) for a, b in spans] for p, spans in pending.items()},
                                meta.get("raw_topic_id"))
        ids = meta.get("output_topic_ids")
        return cls(meta["accepted_topic"], str(meta.get("raw_topic")), str(meta.get("group_id")), covered, frontier,
                   dict(ids) if isinstance(ids, dict) else {})

    def recreated_outputs(self, now: Mapping[str, str | None]) -> set[str]:
        """Output topics whose Kafka id differs from the one recorded (older snapshots record
        none: then only the end offsets tell)."""
        then = self.output_topic_ids
        return {t for t, topic_id in now.items() if then.get(t) and topic_id and then[t] != topic_id}

    def covers(self, kafka: KafkaSettings, ends: Mapping[str, Mapping[int, int]]) -> bool:
        """Whether the saved dedup state is of this accepted topic, as it is now (not recreated).

        ``ends``: the output topics' end offsets now."""
        return self.accepted_topic == kafka.accepted_topic and \
            all(o <= ends[kafka.accepted_topic].get(p, 0) for p, o in self.accepted_end.items())

    def trusted_frontier(self, kafka: KafkaSettings, group_id: str,
                         ends: Mapping[str, Mapping[int, int]]) -> Frontier | None:
        """The frontier, when it can be trusted for the skip set: same raw topic and group,
        every output topic named and none shorter than then (recreated)."""
        if self.frontier is None:
            return None  # a snapshot of an older Sieve: scan everything
        if self.raw_topic != kafka.raw_topic or self.group_id != group_id:
            log.warning("recovery: the snapshot was taken for %s as group %s, not %s as %s; scanning all outputs",
                        self.raw_topic, self.group_id, kafka.raw_topic, group_id)
            return None
        for topic in output_topics(kafka).values():
            if topic not in self.frontier.output_end:
                return None
            if any(o > ends[topic].get(p, 0) for p, o in self.frontier.output_end[topic].items()):
                log.warning("recovery: %s is shorter than when the snapshot was taken (recreated?); scanning all "
                            "outputs", topic)
                return None
        return self.frontier


def snapshot_dir(state_dir: str | Path, kafka: KafkaSettings) -> Path:
    """Where the worker keeps dedup snapshots: one folder per accepted topic."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in kafka.accepted_topic)
    return Path(state_dir) / "dedup" / safe
