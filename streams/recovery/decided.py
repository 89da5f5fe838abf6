"""The skip set: inputs already decided before a restart, so the worker publishes nothing new for them."""

from __future__ import annotations

from dataclasses import dataclass, field

#: ``(topic, topic_id, partition, offset)`` of an input message. ``topic_id`` is the topic's
#: Kafka id (KIP-516) when known: a topic deleted and created again under the same name
#: gets a new id, so its inputs never match the old topic's. Envelopes written before
#: Sieve recorded ids have ``None`` there (see :meth:`DecidedInputs.__contains__`).
Origin = tuple[str, "str | None", int, int]


Span = tuple[int, int]  # [first, end) offsets of one partition


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for first, end in sorted(spans):
        if end <= first:
            continue
        if out and first <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((first, end))
    return out


def envelope_origin(env: dict, raw_topic: str) -> Origin | None:
    """The input an envelope decided, if it came from ``raw_topic``."""
    origin = env.get("origin")
    if not isinstance(origin, dict) or origin.get("topic") != raw_topic:
        return None
    try:
        partition, offset = int(origin["partition"]), int(origin["offset"])
    except (KeyError, TypeError, ValueError):
        return None
    topic_id = origin.get("topic_id")
    return raw_topic, (str(topic_id) if topic_id else None), partition, offset


@dataclass
class DecidedInputs:
    """Inputs of ``topic`` already decided: offset spans per partition plus single origins.

    The spans come from a snapshot's frontier and belong to the incarnation ``topic_id``
    of the topic; the single origins come from the output tail and carry their own id.
    Membership is what the worker asks (``origin in decided``) before deciding an input.
    """

    topic: str
    topic_id: str | None = None
    ranges: dict[int, list[Span]] = field(default_factory=dict)  # partition -> [first, end) spans
    origins: set[Origin] = field(default_factory=set)

    def add_range(self, partition: int, first: int, end: int) -> None:
        if end > first:
            self.ranges[partition] = _merge(self.ranges.get(partition, []) + [(first, end)])

    def _in_ranges(self, partition: int, offset: int) -> bool:
        return any(first <= offset < end for first, end in self.ranges.get(partition, ()))

    def __contains__(self, origin: object) -> bool:
        """Whether the input ``(topic, topic_id, partition, offset)`` was decided.

        An envelope without a topic id (written by a Sieve before ids) matches its offset
        in any incarnation of the topic, as before; recovery refuses to start when such
        envelopes name offsets past the topic's end (``_check_raw_topic_not_recreated``
        in :mod:`streams.recovery.recover`).
        """
        if not isinstance(origin, tuple) or len(origin) != 4:
            return False
        topic, topic_id, partition, offset = origin
        if topic == self.topic and topic_id == self.topic_id and self._in_ranges(partition, offset):
            return True
        return origin in self.origins or (topic_id is not None and (topic, None, partition, offset) in self.origins)

    def add(self, origin: Origin) -> None:
        if not isinstance(origin, tuple) or len(origin) != 4:
            raise TypeError(f"an origin is (topic, topic_id, partition, offset), got {origin!r}")
        if origin not in self:
            self.origins.add(origin)

    def discard(self, origin: Origin) -> None:
        """Forgets a single origin once it was skipped; spans stay (those inputs stay decided)."""
        self.origins.discard(origin)
        if origin[1] is not None:
            self.origins.discard((origin[0], None, origin[2], origin[3]))

    def __len__(self) -> int:
        return len(self.origins) + sum(end - first for spans in self.ranges.values() for first, end in spans)

    def current(self, topic_id: str | None = "") -> set[Origin]:
        """The single origins that can match an input of the topic's incarnation ``topic_id``
        (default: ``self.topic_id``): its own and those without an id."""
        topic_id = self.topic_id if topic_id == "" else topic_id
        return {o for o in self.origins if o[0] == self.topic and o[1] in (topic_id, None)}

    def spans(self) -> dict[int, list[Span]]:
        """Everything decided of the current incarnation, as merged spans per partition."""
        out = {p: list(spans) for p, spans in self.ranges.items()}
        for _topic, _topic_id, partition, offset in self.current():
            out.setdefault(partition, []).append((offset, offset + 1))
        return {p: _merge(spans) for p, spans in out.items()}

    def beyond(self, ends: dict[int, int]) -> dict[int, list[Span]]:
        """The decided inputs at or past ``ends[partition]``: the ones a worker has not met again yet."""
        out = {}
        for p, spans in self.spans().items():
            clipped = [(max(first, ends.get(p, 0)), end) for first, end in spans if end > ends.get(p, 0)]
            if clipped:
                out[p] = clipped
        return out

    def ends(self) -> dict[int, int]:
        """Partition -> one past the highest decided offset."""
        return {p: spans[-1][1] for p, spans in self.spans().items() if spans}

    def ends_without_id(self, *, with_ranges: bool) -> dict[int, int]:
        """Like :meth:`ends`, for the origins without a topic id only (and the spans when they
        came from a snapshot that recorded no id either)."""
        out = {p: spans[-1][1] for p, spans in self.ranges.items() if spans} if with_ranges else {}
        for topic, topic_id, partition, offset in self.origins:
            if topic == self.topic and topic_id is None:
                out[partition] = max(out.get(partition, 0), offset + 1)
        return out
