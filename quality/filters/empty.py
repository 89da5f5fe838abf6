"""Empty prompts and responses: nothing to train on."""

from __future__ import annotations

from quality.filters.common import judged_responses
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import KEEP, Stage, Verdict


@register(rank=20)
class EmptyFilter(Stage):
    """Rejects examples whose prompt or response is empty after normalization."""

    name = "empty"
    reasons = frozenset({Reason.EMPTY_PROMPT, Reason.EMPTY_RESPONSE})

    def check(self, ex: Example) -> Verdict:
        if not ex.prompt_text.strip():
            return Verdict(Reason.EMPTY_PROMPT)
        if any(not text.strip() for text in judged_responses(ex)):
            return Verdict(Reason.EMPTY_RESPONSE)
        return KEEP
