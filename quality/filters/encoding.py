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
    """Rejects text with control characters, U+FFFD or mojibake.

    Mojibake is text that ftfy can repair: its badness heuristic flags the text and
    ``ftfy.fix_encoding`` changes it into something less bad ("cafÃ©" -> "café",
    "itâ€™s" -> "it’s", double encodings too), or, beyond repair, when its badness is
    3 or more and dense (0.15 per non-ASCII character). The heuristic alone also flags
    correct text (IPA such as "[ˈtrauŋkaˌjœːkʏtl̥]"), which has nothing to repair, so it passes.
    """

    name = "encoding"
    reasons = frozenset({Reason.BAD_ENCODING})

    def __init__(self) -> None:
        super().__init__()
        import ftfy  # a well-kept mojibake detector and fixer; pure Python
        from ftfy.badness import badness, is_bad

        self._is_bad, self._badness, self._fix = is_bad, badness, ftfy.fix_encoding

    def check(self, ex: Example) -> Verdict:
        for text in ex.texts():
            if _CONTROL.search(text):
                return Verdict(Reason.BAD_ENCODING, detail="control character")
            if "\ufffd" in text:
                return Verdict(Reason.BAD_ENCODING, detail="U+FFFD replacement character")
            if not text.isascii() and self._is_bad(text):
                fixed, bad = self._fix(text), self._badness(text)
                if fixed != text and self._badness(fixed) < bad:
                    return Verdict(Reason.BAD_ENCODING, detail="mojibake")
                # Beyond repair (a byte lost: the no-break space of "ä½ å¥½" is a space after
                # normalization), but dense: IPA scores 1-3 over dozens of symbols.
                if bad >= 3 and bad >= 0.15 * sum(1 for c in text if ord(c) > 127):
                    return Verdict(Reason.BAD_ENCODING, detail="mojibake (beyond repair)")
        return KEEP
