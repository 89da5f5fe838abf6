"""What the heuristic filters share: argument checks and the text they judge."""

from __future__ import annotations

import re
from dataclasses import dataclass

from quality.records import Example


@dataclass(frozen=True)
class FilterSettings:
    """Bounds of the heuristic filters (``[pipeline.filters]``, shared by the stages of ``quality/filters/``)."""

    min_response_chars: int = 1
    min_total_words: int = 3
    max_total_chars: int = 60_000
    repetition_min_repeats: int = 3  # copies of a sentence or line that make a loop (back to back, or 15% of the text)
    repetition_max_restated_frac: float = 0.3  # share of a response that may restate its own sentences/paragraphs
    refusal_apply_to_pairs: bool = False

WORD = re.compile(r"\w+", re.UNICODE)


def positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def fraction(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def judged_responses(ex: Example) -> list[str]:
    """The text whose quality these filters judge: the response, or a pair's chosen side.

    A pair's rejected side is meant to be worse (a degenerate or repetitive answer makes
    a useful pair), so only its emptiness matters, and :class:`quality.filters.pairs.PairStructureFilter`
    checks that (``pair_empty_side``).
    """
    return [ex.response_text]


