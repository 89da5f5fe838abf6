"""The PII stage: redacts (or rejects) personal data and secrets in every text of an example.

Detection and the values left alone live in the core (:mod:`quality.privacy`), because dead
letters are redacted with them too. By default each finding is replaced with a placeholder
such as ``[EMAIL]`` (the stage returns the rewritten example), with the counts as scores
(``pii_email: 2``); with ``policy="reject"`` the example is rejected with ``pii`` instead, and
its rejection envelope carries the redacted text too. Reserved and documentation values
(``8.8.8.8``, ``john@example.com``...) and the user's allow-list are kept and named in the detail.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from quality.features import Features
from quality.privacy import KINDS, POLICIES, RESERVED, Allowlist, PiiSettings, Redactor
from quality.reasons import Reason
from quality.records import Example, Message
from quality.registry import register
from quality.stage import KEEP, ScoreSpec, Stage, Verdict

__all__ = ["KINDS", "PiiRedactor", "PiiSettings"]


@register(rank=10, section="pii", settings=PiiSettings,
          build=lambda s, _: PiiRedactor(policy=s.policy, kinds=s.kinds, allow=s.allowlist()) if s.enabled else None)
class PiiRedactor(Stage):
    """Redacts (or, with ``policy="reject"``, rejects) personal data and secrets.

    Every text is scanned: prompt turns, responses, both sides of a pair, the rejected
    side's prompt, and every string of ``metadata``. Counts travel as ``pii_<kind>`` scores.

    Args:
        policy: ``redact`` (default) rewrites the example; ``reject`` rejects it with ``pii``.
        kinds: which detectors run, some of :data:`KINDS`.
        allow: values left alone (default: the reserved and documentation values).
    """

    name = "pii"
    reasons = frozenset({Reason.PII})
    scores = {f"pii_{kind}": ScoreSpec(f"how many {kind.replace('_', ' ')} values were redacted (or, with "
                                       "pii.policy = reject, found); absent when none", count=True)
              for kind in KINDS}

    def __init__(self, *, policy: str = "redact", kinds: Sequence[str] = KINDS,
                 allow: Allowlist | None = RESERVED) -> None:
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"pii policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.redactor = Redactor(kinds, allow)
        self.kinds = self.redactor.kinds

    def _messages(self, msgs: tuple[Message, ...], counts: dict[str, int],
                  kept: dict[str, int]) -> tuple[Message, ...]:
        out = []
        for m in msgs:
            text, c, k = self.redactor.redact(m.content)
            for into, more in ((counts, c), (kept, k)):
                for kind, n in more.items():
                    into[kind] = into.get(kind, 0) + n
            out.append(m if not c else Message(m.role, text))
        return tuple(out)

    def check(self, ex: Example) -> Verdict:
        counts: dict[str, int] = {}
        kept: dict[str, int] = {}
        messages = self._messages(ex.messages, counts, kept)
        chosen = self._messages(ex.chosen, counts, kept)
        rejected = self._messages(ex.rejected, counts, kept)
        rejected_prompt = None if ex.rejected_prompt is None else self._messages(ex.rejected_prompt, counts, kept)
        before = sum(counts.values())
        metadata = self.redactor.redact_value(dict(ex.metadata), counts, kept) if ex.metadata else ex.metadata
        if not counts:
            return Verdict(None, detail=_kept_detail(kept)) if kept else KEEP
        scores = {f"pii_{k}": float(v) for k, v in sorted(counts.items())}
        # rejected or not, what goes on (to the envelope, and to decontamination) is redacted
        replacement = dataclasses.replace(ex, messages=messages, chosen=chosen, rejected=rejected,
                                          rejected_prompt=rejected_prompt, features=Features(),
                                          metadata=metadata if sum(counts.values()) > before else ex.metadata)
        detail = ",".join(sorted(counts)) + (f"; {_kept_detail(kept)}" if kept else "")
        if self.policy == "reject":
            return Verdict(Reason.PII, scores, detail=detail, replacement=replacement)
        return Verdict(None, scores, detail="redacted " + detail, replacement=replacement)

    def version(self) -> Mapping[str, Any]:
        allow = self.redactor.allow
        return {"policy": self.policy, "kinds": list(self.kinds),
                "keep_reserved": bool(allow is not None and allow.reserved),
                "allow_values": len(allow.values) if allow is not None else 0,
                "allow_patterns": [p.pattern for p in allow.patterns] if allow is not None else []}


def _kept_detail(kept: Mapping[str, int]) -> str:
    return "kept " + ",".join(f"{k}x{n}" for k, n in sorted(kept.items())) + " (reserved or allowed)"
