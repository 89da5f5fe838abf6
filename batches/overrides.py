"""Operators' overrides in the batcher: force-rejected ids leave (or never join) the open batch and
are revoked from closed ones; force-accepted examples join the open batch, marked.

The batcher honours the override records of :mod:`quality.overrides` (from the control
topic in stream mode, from the overrides file in file mode). What it applied is kept in
``<dir>/_state/overrides.jsonl``, append-only and fsynced, one line per override:
``{"key", "action", "id", "who", "note", "at", "after_seq", "removed", "revoke"}``.
From that log alone a restarted batcher knows which ids are blocked (the last action
per id is a ``force_reject``), what to revoke in the next manifest (lines written after
the last close, ``after_seq == last_seq``), and which overrides it already applied
(a redelivered record is ignored by its key).

Order of writes, so that a crash loses nothing: a ``force_reject`` is logged first (at
start-up, blocked ids are dropped from the replayed open batch); a ``force_accept``
joins the open batch first (``open.jsonl``, fsynced) and is logged after, so a
redelivered record after a crash finds it open and only logs it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import orjson

from batches.state import read_jsonl
from quality.overrides import FORCE_ACCEPT, FORCE_REJECT, Override, accepted_envelope

log = logging.getLogger(__name__)

LOG_FILE = "overrides.jsonl"


class BatchOverrides:
    """The override log of one batch state directory (``<dir>/_state``)."""

    def __init__(self, state: Path) -> None:
        self.path = state / LOG_FILE
        self.state = state
        self.lines = read_jsonl(self.path, repair=True)
        self.keys = {tuple(line["key"]) for line in self.lines}
        self.blocked: dict[str, dict[str, Any]] = {}
        for line in self.lines:
            self._track(line)

    def _track(self, line: Mapping[str, Any]) -> None:
        if line["action"] == FORCE_REJECT:
            self.blocked[line["id"]] = dict(line)
        else:
            self.blocked.pop(line["id"], None)

    def blocks(self, ex_id: Any) -> bool:
        """Whether an accepted envelope with this id must stay out of batches (force-rejected)."""
        return isinstance(ex_id, str) and ex_id in self.blocked

    def _log(self, line: dict[str, Any]) -> None:
        with open(self.path, "ab") as fh:
            fh.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
            fh.flush()
            os.fsync(fh.fileno())
        self.lines.append(line)
        self.keys.add(tuple(line["key"]))
        self._track(line)

    def batches_holding(self, ex_id: str) -> list[str]:
        """Closed batches whose ids list holds ``ex_id`` (any content), oldest first."""
        prefix = ex_id + "\x1f"
        return sorted(p.stem for p in (self.state / "ids").glob("*.jsonl")
                      if any(isinstance(k, str) and k.startswith(prefix) for k in read_jsonl(p)))

    def pending(self, last_seq: int) -> list[dict[str, Any]]:
        """Override lines written since the last close: what the next manifest reports."""
        return [line for line in self.lines if line.get("after_seq") == last_seq]

    def manifest_fields(self, envelopes: list[Mapping[str, Any]], last_seq: int) -> dict[str, Any]:
        """``revoked``, ``overrides`` and the count of force-accepted rows, for the manifest of the batch
        that closes now (its examples are ``envelopes``)."""
        pending = self.pending(last_seq)
        audit = ("who", "note", "at")
        revoked = [{"id": line["id"], "batch_id": b, **{k: line[k] for k in audit}}
                   for line in pending for b in line.get("revoke") or []]
        removed = [{"id": line["id"], **{k: line[k] for k in audit}} for line in pending if line.get("removed")]
        accepted = [{"id": env["id"], **{k: env["overridden"].get(k) for k in audit}}
                    for env in envelopes if isinstance(env.get("overridden"), Mapping)]
        return {"revoked": revoked, "overrides": {"accepted": accepted, "removed_from_open": removed},
                "overridden": len(accepted)}


def apply_override(assembler: Any, ov: Override, *, feed: bool = True) -> list[dict[str, Any]]:
    """Applies one override to a :class:`~batches.assembler.BatchAssembler`; returns the manifests of
    batches it closed (a force-accepted example can fill the open batch). Idempotent by the record's key.

    With ``feed=False`` a ``force_accept`` only lifts an earlier block: file mode, where the
    pipeline itself accepts the example (``sieve curate`` applies the same override) and
    feeds it in input order.
    """
    book: BatchOverrides = assembler.overrides
    if ov.key in book.keys:
        log.info("an override (%s by %s) already applied; ignored", ov.action, ov.who[:80])
        return []
    line = {"key": list(ov.key), "action": ov.action, "id": ov.id, "who": ov.who, "note": ov.note, "at": ov.at,
            "after_seq": assembler.last_seq, "removed": False, "revoke": []}
    closed: list[dict[str, Any]] = []
    if ov.action == FORCE_REJECT:
        line["removed"] = any(env.get("id") == ov.id for env in assembler.open_envelopes())
        line["revoke"] = book.batches_holding(ov.id)
        book._log(line)  # first: a restart drops blocked ids from the replayed open batch
        assembler.drop_open(ov.id)
        log.info("override force_reject by %s: %s the open batch; revoked from %d closed batches", ov.who[:80],
                 "removed from" if line["removed"] else "not in", len(line["revoke"]))
    elif ov.action == FORCE_ACCEPT:
        book.blocked.pop(ov.id, None)
        if feed:
            closed = assembler.feed([accepted_envelope(ov)])
            assembler.flush()  # first: the example is in the open batch, durably
        book._log(line)
        log.info("override force_accept by %s: %s", ov.who[:80], "example joined the open batch" if feed else
                 "no longer blocked")
    return closed
