"""Preference-pair structure: the cheap checks of a pair, before any model runs.

:class:`PairStructureFilter` runs with the heuristics and needs no model:

* ``pair_empty_side``: chosen or rejected is empty (the empty filter usually says
  ``empty_response`` first; this keeps the check complete on its own);
* ``pair_identical``: chosen and rejected are the same text up to whitespace, so the pair
  carries no preference (case is kept: LLMBar has a valid pair whose sides differ only in
  capitalization, which is what its prompt asks for);
* ``pair_prompt_mismatch``: the two sides answer different prompts (the record had a
  ``rejected_prompt``, or its two transcripts started differently), so the comparison
  is meaningless.

It also records ``length_bias``, the log ratio of chosen to rejected length in
characters: positive when the chosen side is longer. Reward models and human raters
both favour longer answers, so a curator can look at the pairs that win on length.

The reward margin check (``pair_low_margin``) needs the model's scores and decides
late: :class:`quality.scoring.margin.PairMarginCheck`.
"""

from __future__ import annotations

import math

from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import KEEP, ScoreSpec, Stage, Verdict


def _folded(text: str) -> str:
    return " ".join(text.split())


def length_bias(ex: Example) -> float:
    """``log((len(chosen) + 1) / (len(rejected) + 1))`` in characters."""
    return math.log((len(ex.response_text) + 1) / (len(ex.rejected_text) + 1))


@register(rank=70)
class PairStructureFilter(Stage):
    """Rejects preference pairs that cannot teach a preference; SFT examples pass untouched."""

    name = "pair_structure"
    reasons = frozenset({Reason.PAIR_EMPTY_SIDE, Reason.PAIR_IDENTICAL, Reason.PAIR_PROMPT_MISMATCH})
    scores = {"length_bias": ScoreSpec("log((len(chosen) + 1) / (len(rejected) + 1)) in characters: > 0 when the "
                                       "chosen side is longer", examples="preference")}

    def check(self, ex: Example) -> Verdict:
        if ex.kind != "preference":
            return KEEP
        scores = {"length_bias": round(length_bias(ex), 6)}
        chosen, rejected = _folded(ex.response_text), _folded(ex.rejected_text)
        if not chosen or not rejected:
            return Verdict(Reason.PAIR_EMPTY_SIDE, scores, detail="chosen" if not chosen else "rejected")
        if chosen == rejected:
            return Verdict(Reason.PAIR_IDENTICAL, scores)
        if ex.rejected_prompt is not None:
            ours = _folded("\n".join(m.content for m in ex.messages))
            theirs = _folded("\n".join(m.content for m in ex.rejected_prompt))
            if ours != theirs:
                return Verdict(Reason.PAIR_PROMPT_MISMATCH, scores)
        return Verdict(None, scores)
