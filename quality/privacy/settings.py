"""``[pipeline.pii]``: the settings of the PII stage and of dead-letter redaction, checked when they load.

They live in the core (not beside the stage in ``quality/filters/pii.py``) because dead letters
are written by the core: :func:`quality.build.build_pipeline` reads :meth:`PiiSettings.dead_letters`
whatever the stage's own ``enabled`` says, so turning the stage off never un-redacts a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass

from quality.privacy.allow import Allowlist
from quality.privacy.dead_letter import DeadLetterPrivacy
from quality.privacy.detect import KINDS, Redactor

POLICIES = ("redact", "reject")


@dataclass(frozen=True)
class PiiSettings:
    """PII redaction (``[pipeline.pii]``): ``policy`` is ``redact`` or ``reject``.

    ``keep_reserved`` leaves reserved, documentation and public-service values alone
    (``192.0.2.1``, ``8.8.8.8``, ``john@example.com``, ``555-0123``, test card numbers);
    ``allow_values`` (exact, any case) and ``allow_patterns`` (regular expressions that must
    match a whole finding) add the user's own. ``dead_letter_raw``: ``redact`` a dead letter's
    payload (default), ``keep`` it as received (opt-in), or ``drop`` it.
    """

    enabled: bool = True  # the stage; dead letters are redacted whatever this says
    policy: str = "redact"  # redact (placeholders such as [EMAIL]) or reject (reason pii)
    kinds: tuple[str, ...] = KINDS  # detectors the stage runs (dead letters: all of them)
    keep_reserved: bool = True  # leave documentation, private and public-service values alone (docs/security.md)
    allow_values: tuple[str, ...] = ()  # your values to leave alone, exact, any case
    allow_patterns: tuple[str, ...] = ()  # regular expressions; a finding one matches whole is left alone
    dead_letter_raw: str = "redact"  # a dead letter's payload: redact, keep (as received: opt-in), drop

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"pipeline.pii.policy must be one of {POLICIES}, got {self.policy!r}")
        self.redactor()  # checks kinds and the allow-list now, at load
        self.dead_letters()

    def allowlist(self) -> Allowlist:
        """Raises: ValueError naming a bad ``allow_values`` or ``allow_patterns`` entry."""
        return Allowlist.from_settings(reserved=self.keep_reserved, values=self.allow_values,
                                       patterns=self.allow_patterns)

    def redactor(self) -> Redactor:
        return Redactor(self.kinds, self.allowlist())

    def dead_letters(self) -> DeadLetterPrivacy:
        """How dead letters are written: every kind is looked for in them, whatever ``kinds`` says."""
        return DeadLetterPrivacy(self.dead_letter_raw, Redactor(KINDS, self.allowlist()))
