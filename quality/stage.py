"""The unit of work of the pipeline: a stage looks at a batch and returns verdicts.

Subclasses write only :meth:`Stage.check` (cheap, per example) or
:meth:`Stage.check_batch` (model stages, which sort and micro-batch). The base
``__call__`` times the batch, checks the verdicts and counts them in
:class:`StageStats`, as datatrove's ``BaseFilter.run`` does.

Each stage declares its **phase**: ``score`` (stateless: the same example always gets
the same verdict, so any number of processes can run it) or ``decide`` (judged against
state: what was accepted before, a quota window). Stages hand each other typed
features (:mod:`quality.features`) and say which they read and write.

Stages with state implement :class:`StatefulStage`, the one interface through which
the pipeline, snapshots (:mod:`quality.state`), recovery and metrics reach state:
commit (and replay) accepted examples, replay decided scores, snapshot, restore,
expire, remove, size. Nothing outside a stage asks what type it is.

A stage that raises is run by :func:`run_isolated`: the example that breaks it is
isolated (the pipeline dead-letters it as ``processing_error``), unless the stage fails
on every example of a batch and on a known-good canary too: then it is broken, not the
data, and :class:`StageBroken` stops the pipeline (a broken model must not dead-letter
a whole stream).
"""

from __future__ import annotations

import copy
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, NamedTuple, Sequence

from quality.reasons import Reason
from quality.records import Example, Message


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


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    """What one score a stage writes means: the line of the score table (``sieve score --help``, docs/scores.md).

    Args:
        meaning: one line: what the number says and its range.
        examples: which examples carry it: ``all``, ``sft`` or ``preference``.
        count: the score counts things found (e.g. PII redactions): summed in summaries and
            reports, not drawn as a distribution.
    """

    meaning: str
    examples: Literal["all", "sft", "preference"] = "all"
    count: bool = False


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


Phase = Literal["score", "decide"]


class Stage(ABC):
    """Base class of every check. Subclasses set ``name`` and ``reasons``.

    ``phase``: ``score`` for stateless checks, ``decide`` for checks against state.
    ``needs`` / ``provides``: names of :class:`~quality.features.Features` the stage
    reads / writes (:data:`~quality.features.FEATURE_NAMES`).
    ``scores``: every score name the stage may write, with its :class:`ScoreSpec`; like
    ``reasons``, the base class refuses a score it did not declare, and the score table of
    the docs is generated from these.
    """

    name: ClassVar[str]
    reasons: ClassVar[frozenset[Reason]] = frozenset()
    scores: ClassVar[Mapping[str, ScoreSpec]] = {}
    off_switch: ClassVar[str | None] = None  # the setting that turns it off: "semantic_dedup.enabled = false"
    phase: ClassVar[Phase] = "score"
    needs: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset()
    #: Also check the examples an earlier stage decided, so this stage's reason is recorded
    #: on every parsed example (after the deciding one). Decontamination does: a contaminated
    #: example must be counted as such whatever rejected it first.
    checks_rejected: ClassVar[bool] = False

    def __init__(self) -> None:
        self.stats = StageStats(self.name)

    def check(self, ex: Example) -> Verdict:  # pragma: no cover - abstract in practice
        raise NotImplementedError(f"{type(self).__name__} must implement check or check_batch")

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        return [self.check(ex) for ex in batch]

    def annotate(self, batch: Sequence[Example]) -> None:
        """Computes the features this stage provides that later stages keep state on, for
        examples that lack them, without judging (no verdict, no stats, no state).

        Used when accepted examples are replayed into the state (they carry no features),
        and by a scoring process that leaves the decide phase to another one.
        """

    def calibration(self) -> Mapping[str, float]:
        """Thresholds its scores were calibrated with (e.g. ``{"quality": 0.04}``); none by default."""
        return {}

    def score_thresholds(self) -> Mapping[str, float]:
        """The fixed cut this stage applies to each of its scores (e.g. ``{"near_jaccard": 0.8}``),
        drawn as a line on the reports' histograms; a score judged by a moving quota has none."""
        return {}

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
            if v.scores and not self.scores.keys() >= v.scores.keys():
                raise RuntimeError(f"stage {self.name!r} wrote undeclared scores "
                                   f"{sorted(set(v.scores) - set(self.scores))}; declare them in its `scores`")
        self.stats.record(verdicts, elapsed)
        return verdicts


class ScoredInput(NamedTuple):
    """A decided input as the quota state replays it: kind, source and scores."""

    kind: str
    source: str | None
    scores: Mapping[str, float]


class ScoreHistory(NamedTuple):
    """What rebuilds a stage's quota state: the last ``count`` decided inputs scored ``score``."""

    score: str
    count: int


class StatefulStage(Stage):
    """A stage judged against state. The only way anything reaches that state.

    ``rebuilt_from`` says what rebuilds the state when no snapshot holds it:
    ``accepted`` (every accepted example, replayed from the accepted outputs: the dedup
    indexes) or ``decided`` (the scores of the latest decided inputs: quota windows).
    """

    phase: ClassVar[Phase] = "decide"
    rebuilt_from: ClassVar[Literal["accepted", "decided"]] = "accepted"

    @abstractmethod
    def commit(self, accepted: Sequence[Example]) -> None:
        """Adds the examples finally accepted (a batch's, or accepted ones replayed after a
        restart, in their original order). Idempotent by example id and content."""

    def replay_scores(self, decided: Sequence[ScoredInput]) -> None:
        """Feeds scores decided before a restart, in input order, as the live stage saw them."""

    def score_history(self) -> ScoreHistory | None:
        """Which decided scores :meth:`replay_scores` needs; None: it needs none."""
        return None

    @abstractmethod
    def snapshot(self, directory: Path) -> None:
        """Writes the state into ``directory`` (created)."""

    @abstractmethod
    def restore(self, directory: Path) -> None:
        """Replaces the state by the one saved in ``directory``.

        Raises:
            ValueError: the saved state cannot be used with this stage's settings.
        """

    def expire(self, before: float) -> int:
        """Forgets what was added before ``before`` (seconds since the epoch); returns how many."""
        return 0

    def remove(self, ex_id: str) -> int:
        """Forgets the accepted example(s) with this id (an operator's request); returns how many."""
        return 0

    @abstractmethod
    def size(self) -> int:
        """Entries held (accepted examples indexed, or scores in the quota windows)."""


def stateful_stages(stages: Sequence[Stage]) -> list[StatefulStage]:
    """The stages of a pipeline that keep state, in pipeline order."""
    return [s for s in stages if isinstance(s, StatefulStage)]


#: Where each feature a stage may need comes from, for the warning of :func:`unmet_needs`.
FEATURE_SOURCES = {
    "embedding": "the model stage (scoring.enabled, with the models extra installed)",
    "quality": "the model stage with a quality head (scoring.head_dir)",
    "reward_margin": "the model stage with a reward head (reward.json in scoring.head_dir) or scoring.reward_model",
}


def unmet_needs(stages: Sequence[Stage]) -> dict[str, list[str]]:
    """Stage name -> the features it needs that no earlier stage provides (such a stage passes
    every example it cannot judge: a check silently off unless someone says so)."""
    provided: set[str] = set()
    out: dict[str, list[str]] = {}
    for stage in stages:
        missing = sorted(stage.needs - provided)
        if missing:
            out[stage.name] = missing
        provided |= stage.provides
    return out


def unmet_needs_message(stage: Stage, missing: Sequence[str]) -> str:
    """The warning for one stage of :func:`unmet_needs`: what is off and how to turn it on (or off knowingly)."""
    sources = "; ".join(f"{f} comes from {FEATURE_SOURCES.get(f, 'no configured stage')}" for f in missing)
    off = f"set {stage.off_switch}" if stage.off_switch else "leave it out of pipeline.stages"
    return (f"stage {stage.name} needs {', '.join(missing)}, which no earlier stage provides, so it passes every "
            f"example unchecked ({sources}); provide it, or {off} to turn the check off knowingly")
log = logging.getLogger(__name__)

#: Known-good examples a working stage must get through, one per kind.
CANARIES: dict[str, Example] = {
    "sft": Example("sieve-canary-sft", "sft", "alpaca", (
        Message("user", "At what temperature does water boil at sea level, in degrees Celsius?"),
        Message("assistant", "At sea level, under standard atmospheric pressure, pure water boils at "
                             "100 degrees Celsius (212 degrees Fahrenheit)."))),
    "preference": Example("sieve-canary-pair", "preference", "preference", (
        Message("user", "Name the largest planet in the Solar System and say one thing about it."),),
        chosen=(Message("assistant", "Jupiter is the largest planet; it is a gas giant more than 300 times as "
                                     "massive as the Earth."),),
        rejected=(Message("assistant", "Saturn, because it has rings."),)),
}


class StageBroken(RuntimeError):
    """A stage failed on every example of a batch and on a known-good canary: the stage is broken, not the data."""


def _attempt(stage: Stage, batch: Sequence[Example]) -> list[Verdict]:
    """``stage(batch)``; if it raises, the stage's statistics are as before the call."""
    stats = stage.stats
    before = (stats.seen, stats.passed, stats.rejected.copy(), stats.seconds)
    try:
        return stage(batch)
    except BaseException:
        stats.seen, stats.passed, stats.rejected, stats.seconds = before
        raise


def check_canary(stage: Stage, kind: str, failures: int, first: BaseException) -> None:
    """Raises :class:`StageBroken` if ``stage`` also fails on the canary of ``kind``; its statistics do not count it."""
    stats = stage.stats
    before = (stats.seen, stats.passed, stats.rejected.copy(), stats.seconds)
    try:
        stage([copy.deepcopy(CANARIES.get(kind, CANARIES["sft"]))])
    except Exception as exc:  # noqa: BLE001 - any failure on known-good input means a broken stage
        raise StageBroken(
            f"stage {stage.name!r} failed on all {failures} example(s) of a batch ({type(first).__name__}: "
            f"{first}) and on a known-good canary example ({type(exc).__name__}: {exc}): the stage is broken, "
            "not the data. Nothing of this batch was decided; fix the stage (its model files, device, "
            "dependencies or settings) and run again") from exc
    finally:
        stats.seen, stats.passed, stats.rejected, stats.seconds = before


def run_isolated(stage: Stage, batch: Sequence[Example]) -> list[Verdict | Exception]:
    """One verdict per example, or the exception the stage raised on that example alone.

    The batch runs in one call; if that raises, every example is retried alone (a failed
    attempt leaves the stage's statistics as they were).

    Raises:
        StageBroken: every example failed, and so did the canary of the first one's kind.
    """
    try:
        return list(_attempt(stage, batch))
    except Exception:  # noqa: BLE001 - find the example that breaks the stage; keep the rest
        log.warning("stage %s failed on a batch of %d; retrying one by one", stage.name, len(batch), exc_info=True)
    out: list[Verdict | Exception] = []
    for ex in batch:
        try:
            out.append(_attempt(stage, [ex])[0])
        except Exception as exc:  # noqa: BLE001 - bad data must not crash the worker
            out.append(exc)
    failed = [(ex, v) for ex, v in zip(batch, out) if isinstance(v, Exception)]
    if failed and len(failed) == len(batch):
        check_canary(stage, failed[0][0].kind, len(failed), failed[0][1])
    return out

