"""Broken text: control characters, U+FFFD replacement characters, mojibake."""

from __future__ import annotations

import re

from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import KEEP, Stage, Verdict

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@register(rank=40)
class EncodingFilter(Stage):
    """Rejects text with control characters, U+FFFD or mojibake (ftfy's badness check)."""

    name = "encoding"
    reasons = frozenset({Reason.BAD_ENCODING})

    def __init__(self) -> None:
        super().__init__()
        from ftfy.badness import is_bad  # a well-kept mojibake detector; pure Python

        self._is_bad = is_bad

    def check(self, ex: Example) -> Verdict:
        for text in ex.texts():
            if _CONTROL.search(text):
                return Verdict(Reason.BAD_ENCODING, detail="control character")
            if "\ufffd" in text:
                return Verdict(Reason.BAD_ENCODING, detail="U+FFFD replacement character")
            if not text.isascii() and self._is_bad(text):
                return Verdict(Reason.BAD_ENCODING, detail="mojibake")
        return KEEP
