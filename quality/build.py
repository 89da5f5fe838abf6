"""Assembles the pipeline from settings: the one place that fixes the stage order.

Cheapest first: heuristics, then exact dedup. Later stages (PII, decontamination,
near/semantic dedup, model scoring, pair checks) slot in here in cost order.
"""

from __future__ import annotations

from quality.config import PipelineSettings
from quality.dedup_exact import ExactDedup
from quality.filters import EmptyFilter, EncodingFilter, LengthFilter, RefusalFilter, RepetitionFilter
from quality.pipeline import Pipeline
from quality.stage import Stage


def build_stages(settings: PipelineSettings) -> list[Stage]:
    f = settings.filters
    return [
        EmptyFilter(),
        LengthFilter(min_response_chars=f.min_response_chars, min_total_words=f.min_total_words,
                     max_total_chars=f.max_total_chars),
        EncodingFilter(),
        RepetitionFilter(min_words=f.repetition_min_words),
        RefusalFilter(apply_to_pairs=f.refusal_apply_to_pairs),
        ExactDedup(),
    ]


def build_pipeline(settings: PipelineSettings | None = None, *, score_mode: bool = False) -> Pipeline:
    settings = settings or PipelineSettings()
    return Pipeline(build_stages(settings), max_message_bytes=settings.max_message_bytes,
                    format=settings.format, score_mode=score_mode)
