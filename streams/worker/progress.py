"""What a worker has decided and written: the skip set, recent origins, and its frontier.

Recovery hands the worker the inputs decided before a restart (the skip set) and the
ends it found; the consume loop asks :meth:`Progress.already_decided` before deciding
an input and moves the ends as batches are decided and published. A snapshot saves
:meth:`Progress.frontier` in its checkpoint.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

from streams.recovery import DecidedInputs, Frontier, Origin


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


class Progress:
    """Decided inputs and written outputs of one worker.

    Args:
        raw_topic: the input topic.
        output_topics: the three output topics (their ends are tracked).
        skip: inputs decided before a restart (from recovery); empty by default.
        output_end: output topic -> partition -> end offset the recovered state covers.
        decided_end: raw partition -> end of the inputs decided before the restart.
        raw_topic_id: the raw topic's Kafka id recovery found (None: unknown); origins are
            ``(topic, topic_id, partition, offset)``.
    """

    def __init__(self, raw_topic: str, output_topics: list[str], skip: DecidedInputs | None = None,
                 output_end: Mapping[str, Mapping[int, int]] | None = None,
                 decided_end: Mapping[int, int] | None = None, raw_topic_id: str | None = None) -> None:
        self.raw_topic = raw_topic
        self.raw_topic_id = raw_topic_id
        self.skip = skip if skip is not None else DecidedInputs(raw_topic, raw_topic_id)
        self.recent = RecentOrigins()
        self.output_end: dict[str, dict[int, int]] = {t: dict((output_end or {}).get(t, {})) for t in output_topics}
        self.decided_end: dict[int, int] = dict(decided_end or {})

    @classmethod
    def recovered(cls, raw_topic: str, output_topics: list[str], result: Any | None) -> "Progress":
        """The progress a :class:`~streams.recovery.RecoveryResult` found (None: a fresh start)."""
        if result is None:
            return cls(raw_topic, output_topics)
        return cls(raw_topic, output_topics, result.skip, result.output_end, result.decided_end,
                   result.raw_topic_id)

    def topic_id_of(self, topic: str) -> str | None:
        """The Kafka id of an input's topic, as far as this worker knows (the raw topic's)."""
        return self.raw_topic_id if topic == self.raw_topic else None

    def forget_raw_topic(self, topic_id: str | None) -> list[int]:
        """The raw topic is another one now (deleted and created again): forget what was decided of
        the old one. Returns the partitions whose ends were forgotten."""
        self.raw_topic_id = topic_id
        self.recent = RecentOrigins(self.recent.maxlen)
        self.skip = DecidedInputs(self.raw_topic, topic_id)
        gone = list(self.decided_end)
        self.decided_end = {}
        return gone

    def already_decided(self, origin: Origin) -> bool:
        """True for an input whose envelope is already out; a second redelivery is caught too."""
        if origin in self.skip or origin in self.recent:
            self.skip.discard(origin)
            self.recent.add(origin)
            return True
        return False

    def decided(self, origins: list[Origin], last_offset: Mapping[tuple[str, int], int]) -> None:
        """Inputs of a batch decided and published: every input up to ``last_offset`` is out."""
        for origin in origins:
            self.recent.add(origin)
        for (topic, partition), offset in last_offset.items():
            if topic == self.raw_topic:
                self.decided_end[partition] = max(self.decided_end.get(partition, 0), offset + 1)

    def written(self, topic: str, partition: int, offset: int) -> None:
        """An envelope acknowledged at ``offset`` of ``topic``."""
        ends = self.output_end[topic]
        ends[partition] = max(ends.get(partition, 0), offset + 1)

    def frontier(self) -> Frontier:
        """What is decided and written now; recovery trusts it (see :mod:`streams.recovery`).

        Inputs that recovery found decided but that have not come back yet (the worker
        consumes a partition from its committed offset) are kept as pending spans: a
        snapshot taken before they are met again must still name them decided.
        """
        return Frontier(dict(self.decided_end), {t: dict(ends) for t, ends in self.output_end.items()},
                        self.skip.beyond(self.decided_end), self.raw_topic_id)
