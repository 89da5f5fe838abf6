"""Assembles the pipeline from settings: the one place that fixes the stage order.

Cheapest first: heuristics, then exact dedup. Later stages (PII, decontamination,
near/semantic dedup, model scoring, pair checks) slot in here in cost order.
PII redaction runs first of all, so that no output (not even a rejection envelope)
carries the unredacted text. Semantic dedup reads the encoder's embedding, so it
stays after the model stage.
"""

from __future__ import annotations

import importlib.util
import logging

from quality.config import PipelineSettings
from quality.decont.ngram import Decontaminator
from quality.dedup.exact import ExactDedup
from quality.dedup.near import NearDedup
from quality.dedup.semantic import SemanticDedup
from quality.filters.empty import EmptyFilter
from quality.filters.encoding import EncodingFilter
from quality.filters.length import LengthFilter
from quality.filters.refusal import RefusalFilter
from quality.filters.repetition import RepetitionFilter
from quality.filters.pairs import PairMarginCheck, PairStructureFilter
from quality.filters.pii import PiiRedactor
from quality.pipeline import Pipeline
from quality.stage import Stage
from quality.state import TimedExactIndex


def build_stages(settings: PipelineSettings) -> list[Stage]:
    f = settings.filters
    stages: list[Stage] = [PiiRedactor(policy=settings.pii.policy, kinds=settings.pii.kinds)] \
        if settings.pii.enabled else []
    stages += [
        EmptyFilter(),
        LengthFilter(min_response_chars=f.min_response_chars, min_total_words=f.min_total_words,
                     max_total_chars=f.max_total_chars),
        EncodingFilter(),
        RepetitionFilter(min_words=f.repetition_min_words),
        RefusalFilter(apply_to_pairs=f.refusal_apply_to_pairs),
        PairStructureFilter(),
    ]
    d = settings.decontam
    if d.benchmark_paths:
        stages.append(Decontaminator(d.benchmark_paths, threshold=d.threshold, ngram=d.ngram,
                                     short_item_tokens=d.short_item_tokens, check_response=d.check_response,
                                     reload_interval_s=d.reload_interval_s))
    stages.append(ExactDedup(TimedExactIndex()))
    n = settings.near_dedup
    if n.enabled:
        stages.append(NearDedup(threshold=n.threshold, num_perm=n.num_perm, ngram=n.ngram, fields=n.fields,
                                bands=n.bands, rows=n.rows, seed=n.seed))
    # the model stage (encoder + quality head) goes here, before semantic dedup, which reads its embedding
    model = _model_stages(settings)
    stages += model
    s_ = settings.semantic_dedup
    if s_.enabled:
        # replayed accepted examples (recovery) carry no embedding: the model stage computes it
        embed_examples = getattr(model[0], "embed_examples", None) if model else None
        stages.append(SemanticDedup(threshold=s_.threshold, flat_max=s_.flat_max, hnsw_m=s_.hnsw_m,
                                    ef_search=s_.ef_search, ivf_min=s_.ivf_min, ivf_nlist=s_.ivf_nlist,
                                    ivf_nprobe=s_.ivf_nprobe, embed_examples=embed_examples))
    if settings.scoring.enabled and settings.scoring.min_margin is not None:
        stages.append(PairMarginCheck(min_margin=settings.scoring.min_margin))
    return stages


def _model_stages(settings: PipelineSettings) -> list[Stage]:
    """The encoder + heads stage, when scoring is enabled and torch is installed.

    ``models.stage`` is imported here, not at module import: ``quality/`` never needs
    torch to load. Without the ``models`` extra, scoring is skipped with a warning.
    """
    if not settings.scoring.enabled:
        return []
    missing = [m for m in ("torch", "sentence_transformers") if importlib.util.find_spec(m) is None]
    if missing:
        logging.getLogger(__name__).warning("model scoring disabled: %s not installed (pip install 'sieve[models]')",
                                            ", ".join(missing))
        return []
    from models.stage import ModelScoreStage

    return [ModelScoreStage.from_settings(settings.scoring)]


def build_pipeline(settings: PipelineSettings | None = None, *, score_mode: bool = False) -> Pipeline:
    settings = settings or PipelineSettings()
    return Pipeline(build_stages(settings), max_message_bytes=settings.max_message_bytes,
                    format=settings.format, score_mode=score_mode)
