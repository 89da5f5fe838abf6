"""Prometheus metrics: the worker's series (:mod:`~streams.metrics.worker`), the batcher's
(:mod:`~streams.metrics.batcher`), the HTTP endpoints (:mod:`~streams.metrics.http`) and the
generated catalog docs/metrics.md (:mod:`~streams.metrics.docs`)."""

from streams.metrics.batcher import BatchMetrics
from streams.metrics.http import serve
from streams.metrics.worker import (DUPLICATE_KINDS, MODEL_STAGES, NO_REASON, OTHER_SOURCE, REWARD_SCORES,
                                    UNIT_SCORES, UNKNOWN_SOURCE, SieveMetrics)

__all__ = ["BatchMetrics", "DUPLICATE_KINDS", "MODEL_STAGES", "NO_REASON", "OTHER_SOURCE", "REWARD_SCORES",
           "SieveMetrics", "UNIT_SCORES", "UNKNOWN_SOURCE", "serve"]
