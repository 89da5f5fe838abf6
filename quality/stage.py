"""The unit of work of the pipeline: a stage looks at a batch and returns verdicts.

Subclasses write only :meth:`Stage.check` (cheap, per example) or
:meth:`Stage.check_batch` (model stages, which sort and micro-batch). The base
``__call__`` times the batch, checks the verdicts and counts them in
:class:`StageStats`, as datatrove's ``BaseFilter.run`` does.

Stateful stages (dedup indexes) also override :meth:`Stage.commit`, which the
pipeline calls with the examples that were finally accepted, so an index only ever
holds accepted content.
"""

from __future__ import annotations

import time
from abc import ABC
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

from quality.reasons import Reason
from quality.records import Example


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a stage says of one example: a reason to reject (or None to keep), and scores."""

    reason: Reason | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    detail: str | None = None  # e.g. the id of the duplicate or the benchmark item
    # a rewritten example (e.g. PII redacted) that later stages and the outputs see instead
    replacement: Example | None = None
    # position (in the stage's batch) of an earlier example of the same batch this one
    # duplicates; the pipeline voids the verdict if that example ends up not accepted
    in_batch_of: int | None = None

    @property
    def keep(self) -> bool:
        return self.reason is None


KEEP = Verdict()


@dataclass(slots=True)
class StageStats:
    """Counts and time of one stage; ``+`` merges stats of several workers."""

    name: str
    seen: int = 0
    passed: int = 0
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def record(self, verdicts: Sequence[Verdict], seconds: float) -> None:
        self.seen += len(verdicts)
        self.seconds += seconds
        for v in verdicts:
            if v.reason is None:
                self.passed += 1
            else:
                self.rejected[v.reason.value] += 1

    def __add__(self, other: "StageStats") -> "StageStats":
        if other.name != self.name:
            raise ValueError(f"cannot add stats of stage {other.name!r} to {self.name!r}")
        return StageStats(self.name, self.seen + other.seen, self.passed + other.passed,
                          self.rejected + other.rejected, self.seconds + other.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "passed": self.passed, "rejected": dict(self.rejected),
                "seconds": round(self.seconds, 6)}


class Stage(ABC):
    """Base class of every check. Subclasses set ``name`` and ``reasons``."""

    name: ClassVar[str]
    reasons: ClassVar[frozenset[Reason]] = frozenset()

    def __init__(self) -> None:
        self.stats = StageStats(self.name)

    def check(self, ex: Example) -> Verdict:  # pragma: no cover - abstract in practice
        raise NotImplementedError(f"{type(self).__name__} must implement check or check_batch")

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        return [self.check(ex) for ex in batch]

    def commit(self, accepted: Sequence[Example]) -> None:
        """Called with the examples finally accepted in this batch (stateful stages)."""

    def version(self) -> Mapping[str, Any]:
        """Settings that change decisions; they travel on every envelope."""
        return {}

    def __call__(self, batch: Sequence[Example]) -> list[Verdict]:
        t0 = time.perf_counter()
        verdicts = self.check_batch(batch)
        elapsed = time.perf_counter() - t0
        if len(verdicts) != len(batch):
            raise RuntimeError(f"stage {self.name!r} returned {len(verdicts)} verdicts for {len(batch)} examples")
        for v in verdicts:
            if v.reason is not None and v.reason not in self.reasons:
                raise RuntimeError(f"stage {self.name!r} emitted undeclared reason {v.reason!r}")
        self.stats.record(verdicts, elapsed)
        return verdicts
