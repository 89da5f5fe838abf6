"""The reward-margin check of preference pairs: it decides on the model's scores, late.

The model stage writes ``reward_margin`` (chosen minus rejected) into the typed
features; this stage rejects pairs whose margin is below ``scoring.min_margin``. It
runs in the decide phase: it needs no model, only the score.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.scoring.gate import ScoringSettings
from quality.stage import KEEP, Stage, Verdict


def _build(s: ScoringSettings, _earlier) -> "PairMarginCheck | None":
    return PairMarginCheck(min_margin=s.min_margin) if s.enabled and s.min_margin is not None else None


@register(rank=140, section="scoring", settings=ScoringSettings, build=_build)
class PairMarginCheck(Stage):
    """Rejects pairs whose reward margin is below ``min_margin`` (``pair_low_margin``).

    Pairs without a margin (no reward model ran, or the example is SFT) pass.

    Args:
        min_margin: the smallest acceptable ``reward_chosen - reward_rejected``. With the
            default Bradley–Terry head, ``sigmoid(margin)`` is the modelled probability
            that chosen is preferred; its default (-0.5 in ``ScoringSettings``) drops the
            ~2% of valid human-labelled dev pairs that the head finds most inverted.
    """

    name = "pair_margin"
    reasons = frozenset({Reason.PAIR_LOW_MARGIN})
    phase = "decide"
    needs = frozenset({"reward_margin"})
    off_switch = "scoring.min_margin = none"

    def __init__(self, *, min_margin: float = -0.5) -> None:
        super().__init__()
        if not math.isfinite(min_margin):
            raise ValueError(f"min_margin must be a finite number, got {min_margin!r}")
        self.min_margin = float(min_margin)

    def check(self, ex: Example) -> Verdict:
        margin = ex.features.reward_margin
        if ex.kind != "preference" or margin is None:
            return KEEP
        if float(margin) < self.min_margin:
            return Verdict(Reason.PAIR_LOW_MARGIN, detail=f"margin {float(margin):.3f} < {self.min_margin}")
        return KEEP

    def score_thresholds(self) -> Mapping[str, float]:
        return {"reward_margin": self.min_margin}

    def version(self) -> Mapping[str, Any]:
        return {"min_margin": self.min_margin}
