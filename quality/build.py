"""Assembles the pipeline from settings: stage names in order, each built by its registry entry.

The order is ``pipeline.stages`` when set, else every registered stage by rank:
cheapest first, PII redaction first of all (so that no output, not even a rejection
envelope, carries the unredacted text), the model stage before the stages that read
its scores and embedding. A stage whose settings turn it off is left out.

Model stages live in ``models/`` and register when ``models.stage`` is imported;
``quality`` never imports them. ``streams/assemble.py`` is the one place that does,
for every ``sieve`` command.
"""

from __future__ import annotations

import logging

from quality.config import PipelineSettings
from quality.pipeline import Pipeline
from quality.registry import REGISTRY, Registry
from quality.stage import Stage, unmet_needs, unmet_needs_message

log = logging.getLogger(__name__)


def stage_names(settings, registry: Registry = REGISTRY) -> list[str]:
    """The stage names the pipeline runs, in order (before settings turn any off).

    Raises:
        ValueError: an unknown or repeated name in ``pipeline.stages``.
    """
    names = list(settings.stages) or registry.default_order()
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"pipeline.stages names {repeated} more than once")
    for name in names:
        registry.get(name)  # raises, naming the registered stages
    return names


def build_stages(settings, registry: Registry = REGISTRY) -> list[Stage]:
    """The configured stages in run order; each entry's ``build`` gets its settings section
    and the stages built before it (the quality gate reads the model's calibration)."""
    stages: list[Stage] = []
    for name in stage_names(settings, registry):
        entry = registry.get(name)
        section = getattr(settings, entry.section) if entry.section is not None else None
        stage = entry.build(section, stages)
        if stage is not None:
            stages.append(stage)
    by_name = {s.name: s for s in stages}
    for name, missing in unmet_needs(stages).items():
        log.warning("%s", unmet_needs_message(by_name[name], missing))
    return stages


def build_pipeline(settings=None, *, score_mode: bool = False, registry: Registry = REGISTRY,
                   overrides=None) -> Pipeline:
    """The pipeline of ``settings``; ``overrides`` is an :class:`~quality.overrides.OverrideBook` (file mode)."""
    settings = settings or PipelineSettings()
    pii = getattr(settings, "pii", None)  # dead letters are redacted whether or not the PII stage runs
    return Pipeline(build_stages(settings, registry), max_message_bytes=settings.max_message_bytes,
                    format=settings.format, score_mode=score_mode, dedup_window_s=settings.dedup_window_s,
                    overrides=overrides, transcripts=settings.transcripts,
                    dead_letters=pii.dead_letters() if pii is not None else None)
