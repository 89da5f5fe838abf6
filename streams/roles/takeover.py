"""What a decider does when it becomes the owner of a scored partition, and when it stops being one.

Taking over, in this order:

1. initialise the partition's fixed transactional id (``<group>-decide-<partition>``):
   Kafka aborts the previous owner's open transaction and fences it, so from here on
   nothing it writes is committed;
2. rebuild the dedup state as recovery does for ``--role all``
   (:func:`streams.recovery.recover`, reading ``read_committed``): this decider's last
   snapshot, if it has one, plus the accepted topic after it (all of it without one).
   Accepted envelopes carry their embedding, so no model is needed; the output topics'
   origins say which inputs are decided;
3. seek the scored partition to the offset committed in the last committed transaction.

The inputs already decided are known by their origin ``(raw topic, topic id, raw
partition)`` and offset: :class:`DecidedOrigins` keeps, per raw partition, the end of
what was decided. A scorer sends the records of one raw partition in order, through an
idempotent producer (no gaps), and a scorer that takes a partition over starts again at
its group's committed offset, which is never past what was sent: so every record whose
offset is below that end is a repeat of a decided input (scorers are at-least-once).
"""

from __future__ import annotations

from typing import Any, Mapping

from streams.recovery import RecoveryResult
from streams.recovery.decided import Origin

Key = tuple[str, "str | None", int]  # (raw topic, topic id, raw partition)


class DecidedOrigins:
    """Per raw partition (of one topic incarnation), the end of the inputs already decided."""

    def __init__(self, ends: Mapping[Key, int] | None = None) -> None:
        self.ends: dict[Key, int] = dict(ends or {})

    @classmethod
    def recovered(cls, raw_topic: str, result: RecoveryResult) -> "DecidedOrigins":
        """What recovery found decided: the snapshot's frontier and every origin of the output tail."""
        topic_id = result.raw_topic_id
        ends: dict[Key, int] = {}
        for partition, end in result.decided_end.items():
            ends[(raw_topic, topic_id, partition)] = end
        if result.skip is not None:
            for partition, end in result.skip.ends().items():
                key = (raw_topic, topic_id, partition)
                ends[key] = max(ends.get(key, 0), end)
        return cls(ends)

    @staticmethod
    def key_of(origin: Mapping[str, Any]) -> Origin | None:
        try:
            return (str(origin["topic"]), (str(origin["topic_id"]) if origin.get("topic_id") else None),
                    int(origin["partition"]), int(origin["offset"]))
        except (KeyError, TypeError, ValueError):
            return None

    def __contains__(self, origin: object) -> bool:
        if not isinstance(origin, tuple) or len(origin) != 4:
            return False
        topic, topic_id, partition, offset = origin
        return offset < self.ends.get((topic, topic_id, partition), 0)

    def add(self, origin: Origin) -> None:
        topic, topic_id, partition, offset = origin
        key = (topic, topic_id, partition)
        self.ends[key] = max(self.ends.get(key, 0), offset + 1)

    def __len__(self) -> int:
        return len(self.ends)
