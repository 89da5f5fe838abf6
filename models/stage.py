"""The model stage of the pipeline: one encoder pass, the quality and reward heads, the threshold.

:class:`ModelScoreStage` takes the batch the pipeline hands it, runs the encoder once
over every (prompt, response) it needs (SFT: the response; pairs: chosen and
rejected), micro-batched and sorted by length inside the encoder, then the heads on
the features of that one pass. It writes:

* scores ``quality`` (probability-like, 0..1) and, with a reward head, ``reward`` for
  SFT; for pairs ``quality`` (of the chosen side), ``reward_chosen``,
  ``reward_rejected`` and ``reward_margin``;
* ``ex.features["embedding"]``: the L2-normalized float32 embedding of
  ``prompt + "\\n\\n" + response`` (chosen side for pairs), which the semantic-dedup
  stage reads; :func:`embedding_text` gives that text for examples encoded elsewhere;
* ``ex.features["reward_margin"]`` for the pair margin check that runs later.

``low_quality`` rejections go through the :class:`~quality.scoring.thresholds.ThresholdPolicy`,
in input order (so file mode and the stream agree). Pairs are scored but not gated on
quality unless ``apply_quality_to_pairs``: their gate is the reward margin.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from models import DEFAULT_HEAD_DIR
from models.encoder import Encoder
from models.heads import Head, features, load_head
from quality.filters.pairs import MARGIN_FEATURE
from quality.reasons import Reason
from quality.records import Example
from quality.stage import Stage, Verdict
from quality.scoring.thresholds import FixedThreshold, ThresholdPolicy, parse_per_source, parse_policy

EMBEDDING_FEATURE = "embedding"


def embedding_text(ex: Example) -> str:
    """The text whose embedding the stage stores: prompt, blank line, response (chosen side)."""
    return f"{ex.prompt_text}\n\n{ex.response_text}"


@functools.lru_cache(maxsize=4)
def shared_encoder(model: str | None, device: str, max_tokens: int, batch_size: int, dtype: str) -> Encoder:
    """One loaded encoder per setting in a process: pipelines built again (tests, config
    reloads) reuse the weights instead of loading them again. Encoders hold no state."""
    return Encoder(model, device=device, max_tokens=max_tokens, batch_size=batch_size, dtype=dtype)


def _r(x: float) -> float:
    return round(float(x), 6)


class ModelScoreStage(Stage):
    """Encoder + heads + threshold policy; rejects with ``low_quality``.

    Args:
        encoder: the sentence encoder (one pass per side of each example).
        quality_head: the quality classifier; None scores no quality and rejects nothing.
        reward_head: the Bradley–Terry head on the same features; None = no reward head.
        reward_model: an :class:`~models.reward_hf.HFRewardModel` that replaces the reward head.
        policy: threshold or quota on ``quality``; default: the head's calibrated threshold.
        apply_quality_to_pairs: also reject pairs whose chosen side scores low.
    """

    name = "model_score"
    reasons = frozenset({Reason.LOW_QUALITY})

    def __init__(self, encoder: Encoder, *, quality_head: Head | None = None, reward_head: Head | None = None,
                 reward_model: Any = None, policy: ThresholdPolicy | None = None,
                 apply_quality_to_pairs: bool = False) -> None:
        super().__init__()
        for label, head, kind in (("quality_head", quality_head, "quality"), ("reward_head", reward_head, "reward")):
            if head is not None and head.kind != kind:
                raise ValueError(f"{label} must be a {kind} head, got a {head.kind!r} head ({head.name})")
        self.encoder = encoder
        self.quality_head = quality_head
        self.reward_head = reward_head
        self.reward_model = reward_model
        if policy is None:
            threshold = float(quality_head.meta.get("default_threshold", 0.0)) if quality_head else 0.0
            policy = ThresholdPolicy(FixedThreshold(threshold))
        self.policy = policy
        self.apply_quality_to_pairs = apply_quality_to_pairs

    @classmethod
    def from_settings(cls, s: Any) -> "ModelScoreStage":
        """Builds the stage from :class:`quality.config.ScoringSettings`."""
        head_dir = Path(s.head_dir) if s.head_dir else DEFAULT_HEAD_DIR
        quality_head = load_head(head_dir, "quality")
        reward_head = None
        if s.reward_model is None and (head_dir / "reward.json").is_file():
            reward_head = load_head(head_dir, "reward")
        reward_model = None
        if s.reward_model is not None:
            from models.reward_hf import HFRewardModel

            reward_model = HFRewardModel(s.reward_model, device=s.device, max_tokens=s.reward_max_tokens,
                                         batch_size=s.reward_batch_size, dtype=s.dtype)
        encoder = shared_encoder(s.model, s.device, s.max_tokens, s.batch_size, s.dtype)
        expected = quality_head.meta.get("encoder", {}).get("encoder")
        if expected is not None and expected != encoder.version()["encoder"]:
            raise ValueError(f"the quality head in {head_dir} was trained on encoder {expected!r}, but "
                             f"scoring.model is {encoder.version()['encoder']!r}; train a head for that encoder "
                             "with `sieve train-scorer` and set scoring.head_dir")
        fallback = FixedThreshold(s.quality_threshold if s.quality_threshold is not None
                                  else float(quality_head.meta.get("default_threshold", 0.0)))
        kw = {"window": s.quota_window, "min_history": min(100, s.quota_window), "fallback": fallback}
        default = parse_policy(f"top:{s.quality_quota}", where="scoring.quality_quota", **kw) \
            if s.quality_quota is not None else fallback
        policy = ThresholdPolicy(default, parse_per_source(s.per_source, **kw))
        return cls(encoder, quality_head=quality_head, reward_head=reward_head, reward_model=reward_model,
                   policy=policy, apply_quality_to_pairs=s.apply_quality_to_pairs)

    def version(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {**self.encoder.version(), "thresholds": self.policy.version(),
                               "apply_quality_to_pairs": self.apply_quality_to_pairs}
        if self.quality_head is not None:
            out["quality_head"] = self.quality_head.version()
        if self.reward_model is not None:
            out["reward"] = self.reward_model.version()
        elif self.reward_head is not None:
            out["reward_head"] = self.reward_head.version()
        return out

    def observe(self, kind: str, source: str | None, quality: float) -> None:
        """Feeds a quality score decided before a restart into the threshold policy, as
        :meth:`check_batch` did then (quota windows; a fixed threshold keeps no state)."""
        if kind == "sft" or self.apply_quality_to_pairs:
            self.policy.keep(float(quality), source)

    def embed_examples(self, examples: Sequence[Example]) -> np.ndarray:
        """The embedding ``check_batch`` stores for each example, for examples that never passed
        through it (accepted ones replayed from ``sieve.accepted`` after a restart)."""
        seg = self.encoder.encode_segments([ex.prompt_text for ex in examples],
                                           [ex.response_text for ex in examples])
        return seg.example

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        prompts: list[str] = []
        responses: list[str] = []
        rows: list[tuple[int, int | None]] = []  # per example: row of its response, row of its rejected side
        for ex in batch:
            prompts.append(ex.prompt_text)
            responses.append(ex.response_text)
            main = len(prompts) - 1
            other = None
            if ex.kind == "preference":
                prompts.append(ex.prompt_text)
                responses.append(ex.rejected_text)
                other = len(prompts) - 1
            rows.append((main, other))
        seg = self.encoder.encode_segments(prompts, responses)
        feats: dict[str, np.ndarray] = {}

        def feats_for(head) -> np.ndarray:  # noqa: ANN001 - a Head; each feature set computed once
            if head.feature_set not in feats:
                feats[head.feature_set] = features(seg, head.feature_set)
            return feats[head.feature_set]

        quality = self.quality_head.score(feats_for(self.quality_head)) if self.quality_head is not None else None
        reward = None
        if self.reward_model is not None:
            msgs = []
            for ex in batch:
                msgs.append(ex.prompt_messages)
                if ex.kind == "preference":
                    msgs.append(ex.prompt_messages)
            reward = self.reward_model.score(msgs, responses)
        elif self.reward_head is not None:
            reward = self.reward_head.score(feats_for(self.reward_head))
        verdicts = []
        for ex, (main, other) in zip(batch, rows):
            ex.features[EMBEDDING_FEATURE] = seg.example[main]
            scores: dict[str, float] = {}
            if quality is not None:
                scores["quality"] = _r(quality[main])
            if reward is not None:
                if other is None:
                    scores["reward"] = _r(reward[main])
                else:
                    margin = float(reward[main]) - float(reward[other])
                    scores.update(reward_chosen=_r(reward[main]), reward_rejected=_r(reward[other]),
                                  reward_margin=_r(margin))
                    ex.features[MARGIN_FEATURE] = margin
            gate = quality is not None and (ex.kind == "sft" or self.apply_quality_to_pairs)
            if gate and not self.policy.keep(float(quality[main]), ex.source):
                verdicts.append(Verdict(Reason.LOW_QUALITY, scores))
            else:
                verdicts.append(Verdict(None, scores))
        return verdicts
