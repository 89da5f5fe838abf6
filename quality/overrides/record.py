"""The override record: an operator's decision about one example id, and its validation.

One schema serves both modes. File mode appends records to ``OUT/overrides.jsonl``
(``sieve review`` writes them, ``sieve curate`` applies them on its next run); stream
mode publishes them on ``kafka.control_topic``, where ``sieve batcher`` honours them.
Every record says who made it and why; nothing here does I/O.

``{"type": "override", "id", "action": "force_accept" | "force_reject", "note", "who",
"at", "decision_was", "reasons_was", "origin", "example"?, "source"?}``: ``example`` is
the canonical example of the envelope the operator saw, required for ``force_accept``
(the batcher has nothing else to batch); ``decision_was``/``reasons_was``/``origin``
say what the operator overruled. A ``force_accept`` whose example is in a turn order chat
templates refuse (an assistant turn first, a pair's prompt ending with the assistant: what
``turn_order`` rejects and cannot repair) is refused: one such row makes a trainer fail on
its whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from quality.records.turns import canonical_fault

OVERRIDE_TYPE = "override"
FORCE_ACCEPT = "force_accept"
FORCE_REJECT = "force_reject"
ACTIONS = (FORCE_ACCEPT, FORCE_REJECT)
#: Longest note, operator name and id an override may carry (characters).
MAX_NOTE_CHARS = 2000
MAX_WHO_CHARS = 200
MAX_ID_CHARS = 1000


class OverrideError(ValueError):
    """An override record is malformed; the message names the field and what to do."""


@dataclass(frozen=True)
class Override:
    """One operator decision about an example id (see the module docstring for the fields)."""

    id: str
    action: str
    note: str
    who: str
    at: float
    decision_was: str | None = None
    reasons_was: tuple[str, ...] = ()
    origin: Mapping[str, Any] = field(default_factory=dict)
    example: Mapping[str, Any] | None = None
    source: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to ``overrides.jsonl`` or the control topic."""
        rec: dict[str, Any] = {"type": OVERRIDE_TYPE, "id": self.id, "action": self.action, "note": self.note,
                               "who": self.who, "at": self.at, "decision_was": self.decision_was,
                               "reasons_was": list(self.reasons_was), "origin": dict(self.origin)}
        if self.example is not None:
            rec["example"] = self.example
        if self.source is not None:
            rec["source"] = self.source
        return rec

    def audit(self) -> dict[str, Any]:
        """What travels with the decision it changed: who, why, when, and what it overruled."""
        return {"action": self.action, "who": self.who, "note": self.note, "at": self.at,
                "decision_was": self.decision_was, "reasons_was": list(self.reasons_was)}

    @property
    def key(self) -> tuple[str, str, str, float]:
        """Identity of the record (a redelivered record has the same key)."""
        return (self.id, self.action, self.who, self.at)


def _text(obj: Mapping[str, Any], name: str, limit: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise OverrideError(f"override field {name!r} must be a non-empty string, got {value!r:.80}")
    if len(value) > limit:
        raise OverrideError(f"override field {name!r} is {len(value)} characters; the limit is {limit}")
    return value


def _valid_messages(items: Any) -> bool:
    return isinstance(items, list) and bool(items) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in items)


def valid_example(example: Any) -> bool:
    """Whether ``example`` is a canonical example: SFT ``messages`` or a ``prompt``/``chosen``/``rejected`` pair."""
    if not isinstance(example, dict):
        return False
    if "messages" in example:
        return _valid_messages(example["messages"])
    return all(_valid_messages(example.get(k)) for k in ("prompt", "chosen", "rejected"))


def make_override(id: str, action: str, note: str, who: str, at: float, *, decision_was: str | None = None,
                  reasons_was: Any = (), origin: Mapping[str, Any] | None = None,
                  example: Mapping[str, Any] | None = None, source: str | None = None) -> Override:
    """A validated override.

    Raises:
        OverrideError: an empty id, note or operator name; an unknown action; a time
            that is not a finite number; a ``force_accept`` without a canonical example, or with
            one whose turn order chat templates refuse (:mod:`quality.records.turns`).
    """
    return parse_override({"type": OVERRIDE_TYPE, "id": id, "action": action, "note": note, "who": who, "at": at,
                           "decision_was": decision_was, "reasons_was": list(reasons_was or ()),
                           "origin": dict(origin or {}), "example": example, "source": source})


def parse_override(obj: Any) -> Override:
    """The :class:`Override` of a record read back from a file or the control topic.

    Raises:
        OverrideError: the record is not an override or a field is missing or wrong.
    """
    if not isinstance(obj, dict) or obj.get("type") != OVERRIDE_TYPE:
        raise OverrideError(f"not an override record (needs \"type\": \"{OVERRIDE_TYPE}\"): {str(obj)[:80]}")
    ex_id = _text(obj, "id", MAX_ID_CHARS)
    action = obj.get("action")
    if action not in ACTIONS:
        raise OverrideError(f"override action must be one of {', '.join(ACTIONS)}, got {action!r:.40}")
    note = _text(obj, "note", MAX_NOTE_CHARS)
    who = _text(obj, "who", MAX_WHO_CHARS)
    at = obj.get("at")
    if not isinstance(at, (int, float)) or isinstance(at, bool) or not math.isfinite(at):
        raise OverrideError(f"override field 'at' must be unix seconds (a number), got {at!r:.40}")
    example = obj.get("example")
    if action == FORCE_ACCEPT and not valid_example(example):
        raise OverrideError("a force_accept override needs the canonical 'example' (messages, or prompt/chosen/"
                            "rejected message lists) taken from the rejected envelope")
    if example is not None and not valid_example(example):
        raise OverrideError("override field 'example' is not a canonical example")
    fault = canonical_fault(example) if action == FORCE_ACCEPT else None
    if fault is not None:  # the batch would hold a row that a chat template refuses: a trainer fails on all of it
        raise OverrideError(f"{ex_id!r} cannot be force-accepted: its turns are in an order chat templates refuse "
                            f"({fault}), and a trainer that renders its dataset through one (TRL's SFTTrainer, "
                            "DPOTrainer) fails on the whole batch for that row. Fix the conversation where it is "
                            "produced and send it again")
    reasons = obj.get("reasons_was") or []
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise OverrideError(f"override field 'reasons_was' must be a list of reason codes, got {reasons!r:.80}")
    origin = obj.get("origin") or {}
    if not isinstance(origin, dict):
        raise OverrideError("override field 'origin' must be an object")
    decision_was = obj.get("decision_was")
    source = obj.get("source")
    return Override(ex_id, action, note, who, float(at), str(decision_was) if decision_was is not None else None,
                    tuple(reasons), origin, example, str(source) if source is not None else None)


def override_from_envelope(env: Mapping[str, Any], action: str, note: str, who: str, at: float) -> Override:
    """The override of an output envelope the operator looked at (the review page and CLI use this).

    Raises:
        OverrideError: as :func:`make_override`; also forcing a dead letter (it has no
            example to accept, and it is not in any batch to reject).
    """
    if env.get("decision") == "dead_letter":
        raise OverrideError(f"{env.get('id')!r} is a dead letter: it could not become an example, so there is "
                            "nothing to accept or reject; fix the producer and send it again")
    example = env.get("example") if action == FORCE_ACCEPT else None
    if action == FORCE_ACCEPT and example is None:
        raise OverrideError(f"the envelope of {env.get('id')!r} carries no example (it was shed for size: see its "
                            "'omitted' field), so it cannot be force-accepted")
    return make_override(str(env.get("id")), action, note, who, at, decision_was=env.get("decision"),
                         reasons_was=env.get("reasons") or (), origin=env.get("origin") or {}, example=example,
                         source=env.get("source"))


def accepted_envelope(ov: Override, versions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The accepted envelope a ``force_accept`` stands for, as the batcher feeds it to the open batch."""
    if ov.action != FORCE_ACCEPT or ov.example is None:
        raise OverrideError(f"only a force_accept with an example becomes an accepted envelope ({ov.id!r})")
    return {"id": ov.id, "decision": "accepted", "reasons": [], "scores": {}, "example": dict(ov.example),
            "origin": dict(ov.origin), "source": ov.source, "overridden": ov.audit(),
            "versions": dict(versions or {"override": True})}
