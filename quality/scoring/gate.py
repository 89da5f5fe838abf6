"""The quality gate: ``low_quality`` when the quality score misses its threshold or quota.

The model stage (``models/stage.py``) only scores: it writes ``quality`` into the typed
features. This stage decides, through the :class:`~quality.scoring.thresholds.ThresholdPolicy`
of the example's source, in input order (so file mode and the stream agree). A quota
keeps a window of the latest scores: that window is this stage's state, saved with the
snapshots and rebuilt after a restart from the scores of the inputs decided since
(:meth:`QualityGate.replay_scores`). Pairs are scored but not gated on quality unless
``apply_quality_to_pairs``: their gate is the reward margin (``quality/scoring/margin.py``).

``[pipeline.scoring]`` (:class:`ScoringSettings`) is shared with the model stage and the
margin check; it lives here so that settings load without the ``models`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import orjson

from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.scoring.thresholds import FixedThreshold, ThresholdPolicy, parse_per_source, parse_policy
from quality.stage import KEEP, ScoredInput, ScoreHistory, Stage, StatefulStage, Verdict


@dataclass(frozen=True)
class ScoringSettings:
    """The model stage (``models/stage.py``), the quality gate and the pair margin check; see docs/models.md.

    ``quality_threshold`` None uses the threshold calibrated with the head (in its
    ``quality.json``); ``quality_quota`` (share kept, e.g. 0.8) switches to keeping the
    top share of a sliding window of ``quota_window`` scores. ``per_source`` entries are
    ``SOURCE=0.1`` (threshold) or ``SOURCE=top:0.8`` (quota). ``reward_model`` (an HF
    sequence-classification reward model, path or id) replaces the default reward head;
    ``min_margin`` is then on that model's scale. ``min_margin`` None disables the check.
    """

    enabled: bool = True
    model: str | None = None  # encoder: local folder or model id; None = bundled all-MiniLM-L6-v2
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str = "auto"  # auto = bfloat16 (or float16) on GPU, float32 on CPU
    max_tokens: int = 256
    batch_size: int = 64
    head_dir: str | None = None  # folder with quality/reward heads; None = the shipped default head
    quality_threshold: float | None = None
    quality_quota: float | None = None
    quota_window: int = 1000
    per_source: tuple[str, ...] = ()
    apply_quality_to_pairs: bool = False
    reward_model: str | None = None
    reward_max_tokens: int = 512
    reward_batch_size: int = 16
    min_margin: float | None = -0.5


def policy_from_settings(s: ScoringSettings, calibrated: float = 0.0) -> ThresholdPolicy:
    """The threshold policy of ``s``; ``calibrated`` is the head's threshold, used when
    ``quality_threshold`` is None.

    Raises:
        ValueError: a bad ``quality_quota`` or ``per_source`` entry, naming it.
    """
    fallback = FixedThreshold(s.quality_threshold if s.quality_threshold is not None else float(calibrated))
    kw = {"window": s.quota_window, "min_history": min(100, s.quota_window), "fallback": fallback}
    default = parse_policy(f"top:{s.quality_quota}", where="scoring.quality_quota", **kw) \
        if s.quality_quota is not None else fallback
    return ThresholdPolicy(default, parse_per_source(s.per_source, **kw))


def _build(s: ScoringSettings, earlier: Sequence[Stage]) -> "QualityGate | None":
    if not s.enabled:
        return None
    calibrated = [st.calibration()["quality"] for st in earlier if "quality" in st.calibration()]
    return QualityGate(policy_from_settings(s, calibrated[-1] if calibrated else 0.0),
                       apply_quality_to_pairs=s.apply_quality_to_pairs)


@register(rank=120, section="scoring", settings=ScoringSettings, build=_build)
class QualityGate(StatefulStage):
    """Rejects examples whose quality score is below the threshold or outside the top-q quota.

    Examples without a quality score (no model stage ran) pass.

    Args:
        policy: threshold or quota on ``quality``, per source; default: keep everything.
        apply_quality_to_pairs: also reject pairs whose chosen side scores low.
    """

    name = "quality_gate"
    reasons = frozenset({Reason.LOW_QUALITY})
    needs = frozenset({"quality"})
    off_switch = "scoring.enabled = false"
    rebuilt_from = "decided"

    def __init__(self, policy: ThresholdPolicy | None = None, *, apply_quality_to_pairs: bool = False) -> None:
        super().__init__()
        self.policy = policy if policy is not None else ThresholdPolicy(FixedThreshold(0.0))
        self.apply_quality_to_pairs = apply_quality_to_pairs

    @classmethod
    def from_settings(cls, s: ScoringSettings, calibrated: float = 0.0) -> "QualityGate":
        return cls(policy_from_settings(s, calibrated), apply_quality_to_pairs=s.apply_quality_to_pairs)

    def _gated(self, kind: str) -> bool:
        return kind == "sft" or self.apply_quality_to_pairs

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        out = []
        for ex in batch:
            quality = ex.features.quality
            if quality is not None and self._gated(ex.kind) and not self.policy.keep(float(quality), ex.source):
                out.append(Verdict(Reason.LOW_QUALITY))
            else:
                out.append(KEEP)
        return out

    def commit(self, accepted: Sequence[Example]) -> None:
        """Nothing: the windows move in :meth:`check_batch`, with every score, kept or not."""

    def replay_scores(self, decided: Sequence[ScoredInput]) -> None:
        for kind, source, scores in decided:
            quality = scores.get("quality")
            if quality is not None and self._gated(kind):
                self.policy.keep(float(quality), source)

    def score_history(self) -> ScoreHistory | None:
        quotas = self.policy.quotas()
        return ScoreHistory("quality", max(q.window for q in quotas.values())) if quotas else None

    def snapshot(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "windows.json").write_bytes(orjson.dumps(self.policy.state()))

    def restore(self, directory: Path) -> None:
        self.policy.restore(orjson.loads((directory / "windows.json").read_bytes()))

    def size(self) -> int:
        return sum(len(q.state()) for q in self.policy.quotas().values())

    def score_thresholds(self) -> Mapping[str, float]:
        """The default fixed threshold on ``quality`` (per-source thresholds and quotas are not one line)."""
        default = self.policy.default
        return {"quality": float(default.value)} if isinstance(default, FixedThreshold) else {}

    def version(self) -> Mapping[str, Any]:
        return {"thresholds": self.policy.version(), "apply_quality_to_pairs": self.apply_quality_to_pairs}
