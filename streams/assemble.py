"""The one place that brings the model stages into a pipeline, for every ``sieve`` command.

``quality`` never imports ``models``; the model stage registers itself in the stage
registry when ``models.stage`` is imported, which this module does (cheaply: torch
loads only when a model stage is built). Build every pipeline of a process here.
"""

from __future__ import annotations

import models.stage  # noqa: F401 - registers ModelScoreStage (pipeline.scoring) in quality.registry
from quality.build import build_pipeline as _build_pipeline
from quality.pipeline import Pipeline


def build_pipeline(settings=None, *, score_mode: bool = False, overrides=None) -> Pipeline:
    """:func:`quality.build.build_pipeline` with the model stages registered."""
    return _build_pipeline(settings, score_mode=score_mode, overrides=overrides)


def head_calibration(settings) -> dict[str, float]:
    """The quality head's calibrated threshold, from its metadata (no model loads): what the
    model stage would hand the quality gate. For a decider, which runs no model."""
    from models.stage import head_calibration as _head_calibration

    return _head_calibration(settings.scoring)
