"""Canned refusals and AI disclaimers in the trained-on response."""

from __future__ import annotations

import re
from typing import Any, Mapping

from quality.filters.common import FilterSettings, positive
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import KEEP, Stage, Verdict

# Disclaimers that mark a canned answer wherever they appear.
_DISCLAIMERS = [
    r"\bas an ai language model\b",
    r"\bas an? (?:ai|artificial intelligence|ai assistant|ai model|language model|large language model)\s*,?\s*i\b",
    r"\bi(?:'m| am) (?:just |only )?an ai(?: language model| assistant| model)?(?:,| and\b| so\b| developed\b"
    r"| created\b| trained\b)",
    r"\bmy (?:training data|knowledge) (?:cut-?off|only goes up)", r"\bas of my (?:last )?knowledge cut-?off",
]
# Refusals: only when they open the response (quoted dialogue later in a story is not one).
_REFUSAL_OPENINGS = [
    r"i(?:'m| am) (?:so |very |really )?sorry,? (?:but )?(?:as an ai(?: language model)?,? )?"
    r"i (?:can(?:no|')t|am unable|am not able|won't|will not)",
    r"i(?:'m| am) (?:so |very |really )?sorry,? (?:but )?i(?:'m| am) (?:unable|not able)",
    r"i apologi[sz]e,? (?:but )?i (?:can(?:no|')t|am unable|am not able|won't)",
    r"i(?:'m| am) (?:unable|not able) to (?:help|assist|provide|fulfil|comply|answer|generate|create|do)",
    r"i can(?:no|')t (?:help|assist|provide|fulfil|comply|answer) (?:you )?with (?:that|this)",
    r"i (?:can(?:no|')t|won't|will not) (?:fulfil|comply with) (?:that|this|your)",
    r"sorry,? (?:but )?i (?:can(?:no|')t|am unable to) (?:help|assist|do) (?:with )?(?:that|this)",
]


@register(rank=60, section="filters", settings=FilterSettings,
          build=lambda s, _: RefusalFilter(apply_to_pairs=s.refusal_apply_to_pairs))
class RefusalFilter(Stage):
    """Rejects canned refusals and AI disclaimers in the trained-on response.

    Args:
        apply_to_pairs: also check the chosen side of preference pairs. Off by default:
            in harmlessness data a refusal is often the preferred answer.
        opening_chars: how far into the response a refusal opening is looked for.
    """

    name = "refusal"
    reasons = frozenset({Reason.REFUSAL})

    def __init__(self, *, apply_to_pairs: bool = False, opening_chars: int = 160) -> None:
        super().__init__()
        positive("opening_chars", opening_chars)
        self.apply_to_pairs = apply_to_pairs
        self.opening_chars = opening_chars
        self._anywhere = re.compile("|".join(_DISCLAIMERS))
        self._opening = re.compile(r"^\W{0,3}(?:" + "|".join(_REFUSAL_OPENINGS) + ")")

    def check(self, ex: Example) -> Verdict:
        if ex.kind == "preference" and not self.apply_to_pairs:
            return KEEP
        text = ex.response_text.lower().replace("\u2019", "'")
        match = self._anywhere.search(text) or self._opening.search(text[: self.opening_chars])
        if match:
            return Verdict(Reason.REFUSAL, detail=match.group(0)[:60])
        return KEEP

    def version(self) -> Mapping[str, Any]:
        return {"apply_to_pairs": self.apply_to_pairs, "opening_chars": self.opening_chars}
