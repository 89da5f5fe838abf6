"""The skip set: inputs already decided before a restart, so the worker publishes nothing new for them."""

from __future__ import annotations

from dataclasses import dataclass, field

Origin = tuple[str, int, int]  # (topic, partition, offset) of an input message
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


@dataclass
class DecidedInputs:
    """Inputs of ``topic`` already decided: offset spans per partition plus single origins.

    The spans come from a snapshot's frontier, the single origins from the output tail.
    Membership is what the worker asks (``origin in decided``) before deciding an input.
    """

    topic: str
    ranges: dict[int, list[Span]] = field(default_factory=dict)  # partition -> [first, end) spans
    origins: set[Origin] = field(default_factory=set)

    def add_range(self, partition: int, first: int, end: int) -> None:
        if end > first:
            self.ranges[partition] = _merge(self.ranges.get(partition, []) + [(first, end)])

    def _in_ranges(self, partition: int, offset: int) -> bool:
        return any(first <= offset < end for first, end in self.ranges.get(partition, ()))

    def __contains__(self, origin: object) -> bool:
        if not isinstance(origin, tuple) or len(origin) != 3:
            return False
        topic, partition, offset = origin
        if topic == self.topic and self._in_ranges(partition, offset):
            return True
        return origin in self.origins

    def add(self, origin: Origin) -> None:
        if origin not in self:
            self.origins.add(origin)

    def discard(self, origin: Origin) -> None:
        """Forgets a single origin once it was skipped; spans stay (those inputs stay decided)."""
        self.origins.discard(origin)

    def __len__(self) -> int:
        return len(self.origins) + sum(end - first for spans in self.ranges.values() for first, end in spans)

    def spans(self) -> dict[int, list[Span]]:
        """Everything decided, as merged spans per partition."""
        out = {p: list(spans) for p, spans in self.ranges.items()}
        for topic, partition, offset in self.origins:
            if topic == self.topic:
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
