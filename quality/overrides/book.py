"""Applying overrides to decisions: a rule of the core, so every driver applies it alike.

:class:`OverrideBook` holds the latest override per id (a later record replaces an
earlier one: the append-only log keeps both, the last says what stands). The
pipeline asks it about every decision before it commits the accepted examples to
the dedup state (:meth:`Pipeline._decide`), so a force-accepted example counts as
accepted for later duplicates, and a force-rejected one does not.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from quality.envelope import Decision
from quality.overrides.record import FORCE_ACCEPT, FORCE_REJECT, Override, OverrideError, parse_override
from quality.reasons import Reason

#: Ids listed by name in a report; past this, only counted.
REPORT_IDS = 100


class OverrideBook:
    """The overrides in force, by example id, and what became of each.

    Args:
        overrides: in the order they were made; the last one per id stands.
    """

    def __init__(self, overrides: Iterable[Override] = ()) -> None:
        self.records = 0
        self.by_id: dict[str, Override] = {}
        for ov in overrides:
            self.records += 1
            self.by_id[ov.id] = ov
        self.applied: dict[str, str] = {}        # id -> the decision it now has
        self.unchanged: set[str] = set()         # the pipeline already decided as the operator asked
        self.not_applicable: set[str] = set()    # dead letters: nothing to accept or reject
        self.seen: set[str] = set()

    @classmethod
    def from_records(cls, records: Iterable[Any]) -> tuple["OverrideBook", list[str]]:
        """A book from raw records (e.g. the lines of ``overrides.jsonl``); also the errors of the
        records that are not valid overrides (each says which record and why), which are skipped."""
        good, errors = [], []
        for n, rec in enumerate(records, start=1):
            try:
                good.append(parse_override(rec))
            except OverrideError as exc:
                errors.append(f"record {n}: {exc}")
        return cls(good), errors

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, ex_id: str) -> bool:
        return ex_id in self.by_id

    def get(self, ex_id: str) -> Override | None:
        return self.by_id.get(ex_id)

    def decide(self, d: Decision) -> Decision:
        """``d`` as the operator's override for its id says, or ``d`` itself when there is none.

        A ``force_accept`` turns a rejected decision into an accepted one (no reasons);
        a ``force_reject`` turns an accepted one into ``operator_rejected``. Either way the
        decision keeps its example, scores and details and gains ``overridden``: who, why,
        when, and the decision and reasons the pipeline had given. Dead letters stay.
        """
        ov = self.by_id.get(d.id)
        if ov is None:
            return d
        self.seen.add(d.id)
        if d.decision == "dead_letter" or d.example is None:
            self.not_applicable.add(d.id)
            return d
        wanted = "accepted" if ov.action == FORCE_ACCEPT else "rejected"
        if d.decision == wanted:  # the pipeline already decides as the operator asked
            self.unchanged.add(d.id)
            return d
        audit = {**ov.audit(), "decision_was": d.decision, "reasons_was": list(d.reasons)}
        reasons = [Reason.OPERATOR_REJECTED.value] if ov.action == FORCE_REJECT else []
        self.applied[d.id] = wanted
        return dataclasses.replace(d, decision=wanted, reasons=reasons, overridden=audit)

    def observe(self, decisions: Sequence[Decision]) -> None:
        """Notes the ids of decisions the pipeline made (dead letters too), for :meth:`report`."""
        for d in decisions:
            if d.id in self.by_id:
                self.seen.add(d.id)
                if d.decision == "dead_letter":
                    self.not_applicable.add(d.id)

    def report(self) -> dict[str, Any]:
        """For ``summary.json``: records read, ids, and what became of them; ids never seen in the input."""
        never = sorted(set(self.by_id) - self.seen)
        return {"records": self.records, "ids": len(self.by_id),
                "applied": {"force_accept": sum(v == "accepted" for v in self.applied.values()),
                            "force_reject": sum(v == "rejected" for v in self.applied.values())},
                "unchanged": len(self.unchanged - set(self.applied)),
                "not_applicable": len(self.not_applicable),
                "never_seen": len(never), "never_seen_ids": never[:REPORT_IDS]}
