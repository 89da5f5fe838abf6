"""Quota state after a restart: the scores of the inputs decided since the snapshot, replayed.

A stateful stage that keeps a window of decided scores (the quality gate's quota) says
through :meth:`~quality.stage.StatefulStage.score_history` which score it needs and how
many of the latest; its snapshot holds the window as of the checkpoint. Recovery keeps,
per raw partition, that many of the newest envelopes written after the checkpoint that
carry the score, and feeds them back in input order (partitions interleaved by offset).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Sequence

from quality.stage import ScoredInput, StatefulStage


class ScoreTail:
    """The newest decided scores per raw partition, for the stages whose state needs them."""

    def __init__(self, stages: Sequence[StatefulStage]) -> None:
        needs = [(s, s.score_history()) for s in stages]
        self.stages = [s for s, h in needs if h is not None]
        self.scores = sorted({h.score for _, h in needs if h is not None})
        self.keep = max((h.count for _, h in needs if h is not None), default=0)
        self._heaps: dict[int, list[tuple]] = {}
        self._arrival = itertools.count()  # ties on an input offset (a duplicate envelope) never compare the rest

    def __bool__(self) -> bool:
        return self.keep > 0

    def add(self, partition: int, offset: int, scored: ScoredInput) -> None:
        """One decided input of ``partition`` at ``offset``; kept if it carries a needed score."""
        if not any(isinstance(scored.scores.get(name), (int, float)) for name in self.scores):
            return
        heap = self._heaps.setdefault(partition, [])
        row = (offset, next(self._arrival), scored)
        (heapq.heappush if len(heap) < self.keep else heapq.heappushpop)(heap, row)

    def replay(self) -> int:
        """Feeds the kept scores to the stages, in input order; returns how many."""
        rows = sorted((offset, partition, seq, scored)
                      for partition, heap in self._heaps.items() for offset, seq, scored in heap)
        decided = [scored for *_, scored in rows]
        for stage in self.stages:
            stage.replay_scores(decided)
        return len(decided)
