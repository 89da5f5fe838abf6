"""Personal data: finding and redacting it (:mod:`~quality.privacy.detect`), the values that look
like it but are not (:mod:`~quality.privacy.allow`), what a dead letter may carry of its payload
(:mod:`~quality.privacy.dead_letter`) and the ``[pipeline.pii]`` settings (:mod:`~quality.privacy.settings`).

Core, not a stage folder: the envelope (:mod:`quality.envelope`) redacts dead letters with it.
The PII stage is :mod:`quality.filters.pii`.
"""

from quality.privacy.allow import PUBLIC_RESOLVERS, RESERVED, TEST_CARDS, Allowlist, reserved
from quality.privacy.dead_letter import DEFAULT_DEAD_LETTERS, RAW_MODES, DeadLetterPrivacy
from quality.privacy.detect import DETECTORS, KINDS, STRICT, Redactor, luhn_ok, redact
from quality.privacy.settings import POLICIES, PiiSettings

__all__ = ["DEFAULT_DEAD_LETTERS", "DETECTORS", "KINDS", "POLICIES", "PUBLIC_RESOLVERS", "RAW_MODES", "RESERVED",
           "STRICT", "TEST_CARDS", "Allowlist", "DeadLetterPrivacy", "PiiSettings", "Redactor", "luhn_ok", "redact",
           "reserved"]
