"""Length bounds: responses too short to teach anything, examples too long to train on."""

from __future__ import annotations

from typing import Any, Mapping

from quality.filters.common import WORD, FilterSettings, judged_responses, positive
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import KEEP, Stage, Verdict


@register(rank=30, section="filters", settings=FilterSettings,
          build=lambda s, _: LengthFilter(min_response_chars=s.min_response_chars,
                                          min_total_words=s.min_total_words, max_total_chars=s.max_total_chars))
class LengthFilter(Stage):
    """Rejects responses that are too short and examples that are too long.

    Args:
        min_response_chars: shortest acceptable response (each side of a pair).
        min_total_words: fewest words in prompt and response together.
        max_total_chars: longest acceptable example, all turns together.
    """

    name = "length"
    reasons = frozenset({Reason.TOO_SHORT, Reason.TOO_LONG})

    def __init__(self, *, min_response_chars: int = 1, min_total_words: int = 3,
                 max_total_chars: int = 60_000) -> None:
        super().__init__()
        positive("min_response_chars", min_response_chars, allow_zero=True)
        positive("min_total_words", min_total_words, allow_zero=True)
        positive("max_total_chars", max_total_chars)
        if max_total_chars <= min_response_chars:
            raise ValueError(f"max_total_chars ({max_total_chars}) must exceed "
                             f"min_response_chars ({min_response_chars})")
        self.min_response_chars = min_response_chars
        self.min_total_words = min_total_words
        self.max_total_chars = max_total_chars

    def check(self, ex: Example) -> Verdict:
        total_chars = sum(len(t) for t in ex.texts())
        if total_chars > self.max_total_chars:
            return Verdict(Reason.TOO_LONG, detail=f"{total_chars} chars")
        responses = judged_responses(ex)
        if min(len(t) for t in responses) < self.min_response_chars:
            return Verdict(Reason.TOO_SHORT)
        words = len(WORD.findall(ex.prompt_text)) + len(WORD.findall(responses[0]))
        if words < self.min_total_words:
            return Verdict(Reason.TOO_SHORT, detail=f"{words} words")
        return KEEP

    def version(self) -> Mapping[str, Any]:
        return {"min_response_chars": self.min_response_chars, "min_total_words": self.min_total_words,
                "max_total_chars": self.max_total_chars}
