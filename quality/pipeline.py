"""The pipeline core: a batch of raw records in, one decision per record out.

Both drivers (``sieve curate`` on files and the Kafka worker) call
:meth:`Pipeline.process` and nothing else, so the same input gets the same
decisions. Bad data becomes a decision, never an exception: parse failures, a
parse, normalize or stage step that raises on one example (``processing_error``,
:func:`quality.stage.run_isolated`) and envelopes that cannot be written
(``unencodable``, :mod:`quality.envelope`) all end as ``dead_letter``. Only a broken
stage, one that fails on a whole batch and on a known-good canary, raises
(:class:`~quality.stage.StageBroken`). Every decision rule lives
here or in a stage, the dedup time window included (:class:`quality.state.DedupWindow`),
so the drivers stay thin.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Sequence

from quality import __version__
from quality.envelope import Decision, DecisionKind, safe_origin, safe_text, writable
from quality.normalize import normalize_example
from quality.overrides import OverrideBook
from quality.privacy import DEFAULT_DEAD_LETTERS, DeadLetterPrivacy
from quality.reasons import Reason
from quality.records import CONVENTIONS, DEFAULT_MAX_MESSAGE_BYTES, Example, ParseFailure, RawRecord, parse
from quality.stage import (ScoreSpec, Stage, StageBroken, StageStats, StatefulStage, Verdict, run_isolated,
                           stateful_stages, unmet_needs)
from quality.state import DedupWindow, example_time

log = logging.getLogger(__name__)

__all__ = ["Pipeline", "StageBroken"]


class Pipeline:
    """Runs the stages, cheapest first, over a batch.

    Args:
        stages: checks in the order they run; each sees only the survivors of the last.
        max_message_bytes: the size limit of a raw payload.
        format: force an input format instead of detecting it per record.
        score_mode: run every stage on every parseable record and drop nothing
            (``sieve score``). Each stateful stage (the dedup stages, the quality quota)
            then judges one record at a time and keeps EVERY parseable record it saw,
            not only accepted ones: a record's duplicate scores are against every earlier
            record of the input, so they do not depend on how the input is cut into
            batches; its reasons are every check it fails on its own.
        dedup_window_s: accepted examples older than this (by input time) stop counting
            (0 = never); see :class:`~quality.state.DedupWindow`.
        overrides: operators' force-accept / force-reject by id
            (:class:`~quality.overrides.OverrideBook`), applied to each decision before
            the accepted examples are committed to the dedup state; not in score mode.
        transcripts: conventions of transcript-style prompts split into turns at parse time
            (:data:`~quality.records.CONVENTIONS`; empty: none).
        dead_letters: how dead letters carry their payload, error and example
            (:class:`~quality.privacy.DeadLetterPrivacy`; default: PII-redacted).
    """

    def __init__(self, stages: Sequence[Stage], *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 format: str | None = None, score_mode: bool = False, dedup_window_s: float = 0.0,
                 overrides: OverrideBook | None = None, transcripts: Sequence[str] = tuple(CONVENTIONS),
                 dead_letters: DeadLetterPrivacy | None = None) -> None:
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be > 0, got {max_message_bytes!r}")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.stages = list(stages)
        self.stateful = stateful_stages(self.stages)
        self.window = DedupWindow(self.stages, dedup_window_s)
        self.max_message_bytes = max_message_bytes
        self.format = format
        self.score_mode = score_mode
        self.overrides = overrides if not score_mode else None
        self.transcripts = tuple(transcripts)
        self.dead_letters = dead_letters or DEFAULT_DEAD_LETTERS
        self.unmet = unmet_needs(self.stages)  # stages that pass everything for want of a feature
        self.parse_stats = StageStats("parse")
        self.decisions = Counter()   # decision -> count
        self.reasons = Counter()     # (decision, reason) -> count

    def versions(self) -> dict[str, Any]:
        return {"pipeline": __version__, "transcripts": list(self.transcripts),
                "stages": {s.name: s.version() for s in self.stages}}

    def score_specs(self) -> dict[str, ScoreSpec]:
        """Every score the stages of this pipeline may write, with what it means."""
        return {name: spec for s in self.stages for name, spec in s.scores.items()}

    def thresholds(self) -> dict[str, float]:
        """The fixed cut on each score that has one (the reports draw them), e.g. ``{"quality": 0.035}``."""
        return {name: float(t) for s in self.stages for name, t in s.score_thresholds().items()}

    def stats(self) -> dict[str, Any]:
        out = {"parse": self.parse_stats.to_dict()}
        out.update({s.name: s.stats.to_dict() for s in self.stages})
        return out

    def warm(self, examples: Sequence[Example]) -> int:
        """Put examples accepted earlier back into the state of every stage; return how many.

        A restarted stream worker calls this with the examples read back from the
        accepted topic, in their original order, so its dedup indexes hold what an
        uninterrupted worker's would. Examples are normalized as ``process`` does; the
        stages that provide a feature some stateful stage needs (the model stage's
        embedding) annotate them; then each stateful stage commits them. No stage
        checks them and no stats change.
        """
        batch = [normalize_example(ex) for ex in examples]
        if batch:
            needed = {name for stage in self.stateful for name in stage.needs}
            for stage in self.stages:
                if stage.provides & needed:
                    stage.annotate(batch)
            for stage in self.stateful:
                stage.commit(batch)
        return len(batch)

    def process(self, raws: Sequence[RawRecord]) -> list[Decision]:
        """One decision per raw record, in input order, each with an envelope that can be written.

        Raises:
            StageBroken: a stage failed on every example of a batch and on a known-good
                canary (:func:`quality.stage.run_isolated`); nothing of the batch is decided.
        """
        t0 = time.perf_counter()
        versions = self.versions()
        decisions: list[Decision | None] = [None] * len(raws)
        live = self._parse(raws, decisions)
        self.parse_stats.seen += len(raws)
        self.parse_stats.passed += len(live)
        self.parse_stats.seconds += time.perf_counter() - t0

        scores: dict[int, dict[str, float]] = {i: {} for i, _ in live}
        reasons: dict[int, list[str]] = {i: [] for i, _ in live}
        details: dict[int, dict[str, str]] = {i: {} for i, _ in live}
        stopped: dict[int, tuple[int, Example]] = {}  # index -> (stage that decided it, the example it saw)
        state = (decisions, scores, reasons, details, stopped)
        # the dedup window moves between runs of the batch, by the inputs' own times
        runs = self.window.runs(live, lambda item: example_time(item[1]))
        for run_time, run in runs:
            if run_time is not None:
                self.window.advance(run_time)
            self._decide(run, state, raws, versions)
        if not self.score_mode:
            self._check_stopped(stopped, state)
        for i, d in enumerate(decisions):
            if d is not None and d.raw is None:
                d.raw = raws[i].payload  # an unencodable stand-in needs it; only dead letters write it
            if d is not None:
                d.privacy = self.dead_letters
        # accepted decisions were made writable before their commit; now the others
        out = [d if d.decision == "accepted" else writable(d, versions) for d in decisions if d is not None]
        assert len(out) == len(raws), "every input must get exactly one decision"
        if self.overrides is not None:
            self.overrides.observe(out)
        for d in out:
            self.decisions[d.decision] += 1
            for r in d.reasons:
                self.reasons[(d.decision, r)] += 1
        return out

    def _parse(self, raws: Sequence[RawRecord], decisions: list[Decision | None]) -> list[tuple[int, Example]]:
        """Parsed and normalized examples by input index; dead letters in ``decisions`` for the rest."""
        live: list[tuple[int, Example]] = []
        for i, raw in enumerate(raws):
            step = "parse"
            try:
                parsed = parse(raw, max_message_bytes=self.max_message_bytes, format=self.format,
                               transcripts=self.transcripts)
                if isinstance(parsed, ParseFailure):
                    decisions[i] = Decision(parsed.id, "dead_letter", [parsed.reason.value], {}, raw.origin,
                                            raw=raw.payload, error=parsed.error)
                    self.parse_stats.rejected[parsed.reason.value] += 1
                    continue
                step = "normalize"
                live.append((i, normalize_example(parsed)))
            except Exception as exc:  # noqa: BLE001 - a bug met by one input must not stop the others
                decisions[i] = _isolated(raw.fallback_id, step, exc, raw.origin, raw=raw.payload)
                self.parse_stats.rejected[Reason.PROCESSING_ERROR.value] += 1
        return live

    def _decide(self, live: list[tuple[int, Example]], state: tuple, raws: Sequence[RawRecord],
                versions: dict[str, Any]) -> None:
        """Runs every stage over ``live`` and decides each example; commits the accepted ones."""
        decisions, scores, reasons, details, stopped = state
        # An example rejected as a duplicate of an EARLIER example of the same batch is
        # decided again from that stage on if the earlier one ends up not accepted, as if
        # the batch had been processed one example at a time: decisions do not depend on
        # how input is cut into batches (file mode and stream mode batch differently).
        todo: list[tuple[int, list[tuple[int, Example]]]] = [(0, live)]
        while todo:
            start, batch = todo.pop(0)
            recheck = self._run(start, batch, state)
            if self.overrides is not None:  # an operator's word over the stages', before anything is committed
                for i, _ in batch:
                    if decisions[i] is not None and decisions[i] is not (d := self.overrides.decide(decisions[i])):
                        decisions[i] = d
                        recheck.pop(i, None)
            accepted = []
            for i, _ in batch:  # what goes into the dedup state must also be writable to the accepted output
                d = decisions[i]
                if d is not None and d.decision == "accepted":
                    d.raw, d.privacy = raws[i].payload, self.dead_letters
                    decisions[i] = d = writable(d, versions)
                    if d.decision == "accepted":
                        accepted.append(d.example)
            if accepted and not self.score_mode:
                for stage in self.stateful:
                    stage.commit(accepted)
            again: dict[int, list[tuple[int, Example]]] = {}
            for i, (stage_idx, first, ex) in sorted(recheck.items()):
                if decisions[first] is None or decisions[first].decision != "accepted":
                    reasons[i].pop()
                    details[i].pop(self.stages[stage_idx].name, None)
                    decisions[i] = None
                    stopped.pop(i, None)
                    again.setdefault(stage_idx, []).append((i, ex))
            todo += sorted(again.items())

    def _run(self, start: int, live: list[tuple[int, Example]], state: tuple) -> dict[int, tuple[int, int, Example]]:
        """Runs stages ``start``... over ``live`` and decides every example of it.

        Returns the examples rejected as in-batch duplicates: index -> (stage index,
        index of the example duplicated, the example as that stage saw it).
        """
        decisions, scores, reasons, details, stopped = state
        recheck: dict[int, tuple[int, int, Example]] = {}
        for stage_idx in range(start, len(self.stages)):
            stage = self.stages[stage_idx]
            if not live:
                break
            if self.score_mode and isinstance(stage, StatefulStage):
                verdicts = self._run_one_by_one(stage, live, decisions)
            else:
                verdicts = self._run_stage(stage, live, decisions)
            survivors = []
            for (i, ex), v in zip(live, verdicts):
                if v is None:  # the stage failed on this example: already dead-lettered
                    stopped[i] = (stage_idx, ex)
                    continue
                scores[i].update(v.scores)
                if v.replacement is not None:  # e.g. PII redaction: the rewritten example goes on
                    ex = v.replacement
                if v.detail is not None:
                    details[i][stage.name] = v.detail
                if v.reason is not None:
                    reasons[i].append(v.reason.value)
                    if not self.score_mode:
                        if v.in_batch_of is not None:
                            recheck[i] = (stage_idx, live[v.in_batch_of][0], ex)
                        decisions[i] = Decision(ex.id, "rejected", reasons[i], scores[i], ex.origin,
                                                example=ex, details=details[i])
                        stopped[i] = (stage_idx, ex)
                        continue
                survivors.append((i, ex))
            live = survivors
        for i, ex in live:
            kind: DecisionKind = "rejected" if reasons[i] else "accepted"
            decisions[i] = Decision(ex.id, kind, reasons[i], scores[i], ex.origin, example=ex, details=details[i])
        return recheck

    def _run_one_by_one(self, stage: StatefulStage, live: list[tuple[int, Example]],
                        decisions: list[Decision | None]) -> list[Verdict | None]:
        """Score mode: each record judged against every record before it, then kept in the state.

        As if the input came one record at a time, whatever the batch size; the features
        the stage computes (signatures, hashes) are computed for the whole batch first.
        """
        try:
            stage.annotate([ex for _, ex in live])
        except Exception:  # noqa: BLE001 - the one-by-one calls below isolate the example that breaks it
            log.debug("stage %s could not annotate a batch of %d at once", stage.name, len(live), exc_info=True)
        out: list[Verdict | None] = []
        for item in live:
            (v,) = self._run_stage(stage, [item], decisions)
            if v is not None:
                stage.commit([item[1]])
            out.append(v)
        return out

    def _check_stopped(self, stopped: dict[int, tuple[int, Example]], state: tuple) -> None:
        """Runs the stages that check every example (``Stage.checks_rejected``, e.g. decontamination)
        on the examples an earlier stage decided, adding their reasons after the deciding one.
        An example an operator forced to ``accepted`` is left as the operator decided."""
        decisions, scores, reasons, details, _ = state
        for stage_idx, stage in enumerate(self.stages):
            if not stage.checks_rejected:
                continue
            todo = [(i, ex) for i, (at, ex) in sorted(stopped.items())
                    if at < stage_idx and decisions[i] is not None and decisions[i].decision != "accepted"]
            if not todo:
                continue
            verdicts = self._run_stage(stage, todo, decisions)
            for (i, _), v in zip(todo, verdicts):
                if v is None:  # it raised on this example, which is now a processing_error dead letter
                    del stopped[i]
                    continue
                d = decisions[i]
                d.scores.update(v.scores)
                if v.detail is not None:
                    d.details[stage.name] = v.detail
                if v.reason is not None and v.reason.value not in d.reasons:
                    d.reasons.append(v.reason.value)

    def _run_stage(self, stage: Stage, live: list[tuple[int, Example]],
                   decisions: list[Decision | None]) -> list[Verdict | None]:
        """Verdicts of ``stage`` on ``live``; None (and a ``processing_error`` dead letter) where it raised."""
        out: list[Verdict | None] = []
        for (i, ex), v in zip(live, run_isolated(stage, [ex for _, ex in live])):
            if isinstance(v, Exception):
                decisions[i] = _isolated(ex.id, stage.name, v, ex.origin, example=ex)
                v = None
            out.append(v)
        return out


def _isolated(ex_id: str, step: str, exc: BaseException, origin: Any, example: Example | None = None,
              raw: bytes | str | None = None) -> Decision:
    """The ``processing_error`` dead letter of one input that made ``step`` raise (logged with its origin)."""
    log.warning("%s raised on input %s at %s: %s: %s", step, safe_text(ex_id, 200), safe_origin(origin),
                type(exc).__name__, safe_text(str(exc)))
    return Decision(ex_id, "dead_letter", [Reason.PROCESSING_ERROR.value], {}, origin, example=example, raw=raw,
                    error=f"stage {step}: {type(exc).__name__}: {exc}")
