"""The model stage of the pipeline: one encoder pass, the quality and reward heads.

:class:`ModelScoreStage` takes the batch the pipeline hands it, runs the encoder once
over every (prompt, response) it needs (SFT: the response; pairs: chosen and
rejected), micro-batched and sorted by length inside the encoder, then the heads on
the features of that one pass. It writes:

* scores ``quality`` (probability-like, 0..1) and, with a reward head, ``reward`` for
  SFT; for pairs ``quality`` (of the chosen side), ``reward_chosen``,
  ``reward_rejected`` and ``reward_margin``;
* typed features for the stages after it: ``embedding`` (the L2-normalized float32
  embedding of ``prompt + "\\n\\n" + response``, chosen side for pairs, which semantic
  dedup reads; :func:`embedding_text` gives that text), ``quality`` (for the quality
  gate) and ``reward_margin`` (for the pair margin check).

It judges nothing: the thresholds and quotas on its scores are the quality gate's
(``quality/scoring/gate.py``), a decide-phase stage that needs no model. Importing this
module registers the stage in :data:`quality.registry.REGISTRY` (section
``pipeline.scoring``, between near dedup and the quality gate).
"""

from __future__ import annotations

import functools
import json
import importlib.util
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from models import DEFAULT_HEAD_DIR
from models.encoder import Encoder
from models.heads import Head, features, load_head
from quality.features import half_precision
from quality.records import Example
from quality.registry import register
from quality.scoring.gate import ScoringSettings
from quality.stage import ScoreSpec, Stage, Verdict

log = logging.getLogger(__name__)


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


def _build(s: ScoringSettings, _earlier) -> "ModelScoreStage | None":
    """The stage when scoring is enabled and torch is installed; without the ``models``
    extra, scoring is skipped with a warning."""
    if not s.enabled:
        return None
    missing = [m for m in ("torch", "sentence_transformers") if importlib.util.find_spec(m) is None]
    if missing:
        log.warning("model scoring disabled: %s not installed (pip install 'sieve[models]')", ", ".join(missing))
        return None
    return ModelScoreStage.from_settings(s)


def head_calibration(s: ScoringSettings) -> dict[str, float]:
    """What :meth:`ModelScoreStage.calibration` would report, read from the quality head's
    metadata alone (no encoder, no torch): a decider builds its quality gate with it."""
    if not s.enabled:
        return {}
    meta = Path(s.head_dir) if s.head_dir else DEFAULT_HEAD_DIR
    path = meta / "quality.json"
    if not path.is_file():
        return {}
    return {"quality": float(json.loads(path.read_text()).get("default_threshold", 0.0))}


@register(rank=110, section="scoring", settings=ScoringSettings, build=_build)
class ModelScoreStage(Stage):
    """Encodes each example once and scores it with the quality and reward heads (GPU when there is one).

    Args:
        encoder: the sentence encoder (one pass per side of each example).
        quality_head: the quality classifier; None scores no quality.
        reward_head: the Bradley–Terry head on the same features; None = no reward head.
        reward_model: an :class:`~models.reward_hf.HFRewardModel` that replaces the reward head.
    """

    name = "model_score"
    provides = frozenset({"embedding", "quality", "reward_margin"})  # what a stage of this class can provide
    scores = {
        "quality": ScoreSpec("quality head, 0..1: the estimated chance the example is top-rated (pairs: the "
                             "chosen side); below the threshold is low_quality (pairs only with "
                             "scoring.apply_quality_to_pairs)"),
        "reward": ScoreSpec("reward of the response (reward head or scoring.reward_model), unbounded; "
                            "informative, nothing is decided on it", examples="sft"),
        "reward_chosen": ScoreSpec("reward of the chosen side", examples="preference"),
        "reward_rejected": ScoreSpec("reward of the rejected side", examples="preference"),
        "reward_margin": ScoreSpec("reward_chosen - reward_rejected; below scoring.min_margin is pair_low_margin",
                                   examples="preference"),
    }

    def __init__(self, encoder: Encoder, *, quality_head: Head | None = None, reward_head: Head | None = None,
                 reward_model: Any = None) -> None:
        super().__init__()
        for label, head, kind in (("quality_head", quality_head, "quality"), ("reward_head", reward_head, "reward")):
            if head is not None and head.kind != kind:
                raise ValueError(f"{label} must be a {kind} head, got a {head.kind!r} head ({head.name})")
        self.encoder = encoder
        self.quality_head = quality_head
        self.reward_head = reward_head
        self.reward_model = reward_model
        # what THIS stage provides: without a reward head or model there is no margin to check
        self.provides = frozenset({"embedding"} | ({"quality"} if quality_head is not None else set())
                                  | ({"reward_margin"} if reward_head is not None or reward_model is not None
                                     else set()))

    @classmethod
    def from_settings(cls, s: ScoringSettings) -> "ModelScoreStage":
        """Builds the stage from :class:`quality.scoring.gate.ScoringSettings`."""
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
        return cls(encoder, quality_head=quality_head, reward_head=reward_head, reward_model=reward_model)

    def calibration(self) -> Mapping[str, float]:
        """The quality threshold calibrated with the head (the gate's default)."""
        if self.quality_head is None:
            return {}
        return {"quality": float(self.quality_head.meta.get("default_threshold", 0.0))}

    def version(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {**self.encoder.version()}
        if self.quality_head is not None:
            out["quality_head"] = self.quality_head.version()
        if self.reward_model is not None:
            out["reward"] = self.reward_model.version()
        elif self.reward_head is not None:
            out["reward_head"] = self.reward_head.version()
        return out

    def annotate(self, batch: Sequence[Example]) -> None:
        """The embedding of each example that lacks one (accepted examples replayed after a
        restart carry none; semantic dedup needs it)."""
        todo = [ex for ex in batch if ex.features.embedding is None]
        if todo:
            for ex, emb in zip(todo, self.embed_examples(todo)):
                ex.features.embedding = emb

    def embed_examples(self, examples: Sequence[Example]) -> np.ndarray:
        """The embedding ``check_batch`` stores for each example, for examples that never passed
        through it (accepted ones replayed from ``sieve.accepted`` after a restart)."""
        seg = self.encoder.encode_segments([ex.prompt_text for ex in examples],
                                           [ex.response_text for ex in examples])
        return np.stack([half_precision(v) for v in seg.example]) if len(seg.example) else seg.example

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
            ex.features.embedding = half_precision(seg.example[main])  # travels as float16, bit for bit
            scores: dict[str, float] = {}
            if quality is not None:
                scores["quality"] = _r(quality[main])
                ex.features.quality = float(quality[main])
            if reward is not None:
                if other is None:
                    scores["reward"] = _r(reward[main])
                else:
                    margin = float(reward[main]) - float(reward[other])
                    scores.update(reward_chosen=_r(reward[main]), reward_rejected=_r(reward[other]),
                                  reward_margin=_r(margin))
                    ex.features.reward_margin = margin
            verdicts.append(Verdict(None, scores))
        return verdicts
