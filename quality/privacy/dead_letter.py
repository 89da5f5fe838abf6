"""What a dead letter may carry of the payload that failed: redacted unless the operator opts in.

A dead letter is the one output that holds what a producer sent as it was sent, so it is
the one place unredacted personal data could leave Sieve. :class:`DeadLetterPrivacy`
builds its ``raw*`` fields and redacts its ``error`` text (a parser error or an exception
can quote the payload), under ``pipeline.pii.dead_letter_raw``:

* ``redact`` (default): a payload that decodes as UTF-8 is kept as text with every PII
  finding replaced (the same detectors and allow-list as the PII stage); one that does not
  decode cannot be redacted reliably, so its bytes are dropped (``raw`` is null) and only
  its length and sha256 stay. The error text and the example a failing stage saw are redacted too.
* ``keep``: the raw payload as received (base64 when it is not UTF-8) and the error as it
  was: an explicit opt-in for debugging producers, said in ``docs/security.md``.
* ``drop``: no payload at all, only its length and sha256.

Findings are counted as ``pii_<kind>`` scores on the dead letter, like an example's.
A text payload is scanned up to :data:`SCAN_LIMIT_CHARS` and kept up to ``limit_bytes``
(cut at a character boundary, after redaction, so a cut never splits a finding open).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from quality.privacy.detect import Redactor

RAW_MODES = ("redact", "keep", "drop")
#: Characters of a text payload scanned for PII; the part kept in a dead letter (64 KiB) comes from it.
SCAN_LIMIT_CHARS = 1 << 20


@dataclass(frozen=True)
class DeadLetterPrivacy:
    """How a dead letter's payload, error and example are written (see the module's docstring).

    Raises:
        ValueError: ``raw`` not one of :data:`RAW_MODES`.
    """

    raw: str = "redact"
    redactor: Redactor = field(default_factory=Redactor)

    def __post_init__(self) -> None:
        if self.raw not in RAW_MODES:
            raise ValueError(f"pipeline.pii.dead_letter_raw must be one of {RAW_MODES}, got {self.raw!r}")

    def fields(self, raw: bytes | str | None, error: str | None, example: dict[str, Any] | None,
               limit_bytes: int) -> tuple[dict[str, Any], dict[str, int]]:
        """The dead letter's ``error``, ``example`` and ``raw*`` fields, and the PII findings redacted by kind."""
        counts: dict[str, int] = {}
        kept: dict[str, int] = {}
        out: dict[str, Any] = {}
        if self.raw == "keep":
            out.update(_kept_raw(raw, limit_bytes))
            out["error"], out["example"] = error, example
            return out, counts
        out["error"] = None if error is None else self.redactor.redact_value(error, counts, kept)
        out["example"] = None if example is None else self.redactor.redact_value(example, counts, kept)
        if raw is None:
            out["raw"] = None
            return out, counts
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
        out["raw_bytes"] = len(data)
        out["raw_sha256"] = hashlib.sha256(data).hexdigest()
        text = _utf8(data) if self.raw == "redact" else None
        if text is None:
            out["raw"] = None
            out["raw_omitted"] = ("pipeline.pii.dead_letter_raw = \"drop\"" if self.raw == "drop" else
                                  "not UTF-8, so it cannot be redacted: bytes dropped (pipeline.pii.dead_letter_raw "
                                  "= \"keep\" keeps them, base64)")
            return out, counts
        text = self.redactor.redact_value(text[:SCAN_LIMIT_CHARS], counts, kept)
        cut = _cut(text, limit_bytes)
        if len(cut) < len(text) or len(data) > SCAN_LIMIT_CHARS:
            out["raw_truncated"] = True
        out["raw"], out["raw_encoding"] = cut, "utf-8"
        return out, counts


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _cut(text: str, limit_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit_bytes``."""
    if len(text) * 4 <= limit_bytes:
        return text
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text
    return data[:limit_bytes].decode("utf-8", "ignore")


def _kept_raw(raw: bytes | str | None, limit_bytes: int) -> dict[str, Any]:
    """The raw payload as received: UTF-8 text, else base64 (the opt-in ``keep``)."""
    if raw is None:
        return {"raw": None}
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    out: dict[str, Any] = {"raw_bytes": len(data)}
    if len(data) > limit_bytes:
        data = data[:limit_bytes]
        out["raw_truncated"] = True
    try:
        out["raw"] = data.decode("utf-8")
        out["raw_encoding"] = "utf-8"
    except UnicodeDecodeError:
        out["raw"] = base64.b64encode(data).decode("ascii")
        out["raw_encoding"] = "base64"
    return out


#: What a dead letter gets when nothing else was said: redacted.
DEFAULT_DEAD_LETTERS = DeadLetterPrivacy()
