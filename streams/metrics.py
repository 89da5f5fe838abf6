"""Prometheus metrics of the stream worker, and the small HTTP server that exposes them.

:class:`SieveMetrics` turns each batch's decisions and the pipeline's stage stats
into ``sieve_*`` series on a registry it is given (tests pass a fresh
``CollectorRegistry``). Labels come only from closed sets: decision, reason code,
stage name, partition, dedup kind and a source allow-list (``other`` for any source
not in it, ``unknown`` for none). Ids and content never become labels.

:func:`serve` answers ``/metrics`` (Prometheus text format), ``/healthz`` (the
process is alive) and ``/readyz`` (recovery is done and the worker consumes).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from quality.pipeline import Decision, Pipeline
from quality.reasons import Reason

log = logging.getLogger(__name__)

#: Per-batch seconds buckets: sub-millisecond heuristics up to model stages on CPU.
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
OTHER_SOURCE = "other"
UNKNOWN_SOURCE = "unknown"
NO_REASON = "none"
#: Buckets of the scores in [0, 1]: fine at the low end, where the default quality head's scores
#: and its calibrated threshold (0.04) sit, and at the top, where the dedup thresholds (0.8, 0.95) sit.
UNIT_SCORE_BUCKETS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                      0.85, 0.9, 0.95, 0.975, 0.99, 1.0)
#: Buckets of reward-model scores and margins (unbounded logits).
REWARD_BUCKETS = (-8.0, -4.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Score names exported in ``sieve_score`` (all in [0, 1]) and ``sieve_reward_score``; others are not.
UNIT_SCORES = frozenset({"quality", "near_jaccard", "semantic_similarity", "contamination"})
REWARD_SCORES = frozenset({"reward", "reward_margin"})
#: Stages that run a model: their per-batch size and throughput are exported.
MODEL_STAGES = frozenset({"model_score"})
#: ``duplicate_exact`` -> ``exact``, for every duplicate reason code.
DUPLICATE_KINDS = {r.value: r.value.removeprefix("duplicate_") for r in Reason if r.value.startswith("duplicate_")}


class SieveMetrics:
    """The worker's ``sieve_*`` series on one registry.

    Args:
        registry: where the series live (``prometheus_client.REGISTRY`` in the worker).
        source_allowlist: sources reported by name in the ``source`` label.
    """

    def __init__(self, registry: CollectorRegistry, source_allowlist: Iterable[str] = ()) -> None:
        self.source_allowlist = frozenset(source_allowlist)
        r = registry
        self.examples = Counter("sieve_examples", "Examples decided, by decision, first reason and source.",
                                ["decision", "reason", "source"], registry=r)
        self.stage_seconds = Histogram("sieve_stage_seconds", "Seconds one stage spent on one batch.",
                                       ["stage"], buckets=SECONDS_BUCKETS, registry=r)
        self.stage_examples = Counter("sieve_stage_examples", "Examples a stage saw, by result (passed/rejected).",
                                      ["stage", "result"], registry=r)
        self.batch_size = Histogram("sieve_batch_size", "Input messages per worker batch.",
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("sieve_batch_seconds",
                                       "Seconds per batch: pipeline plus delivery of every output.",
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.dedup_index_size = Gauge("sieve_dedup_index_size", "Entries in each dedup index.", ["kind"],
                                      registry=r)
        self.consumer_lag = Gauge("sieve_consumer_lag", "Messages behind the end of the raw topic "
                                  "(highwater - position), per partition.", ["partition"], registry=r)
        self.last_batch = Gauge("sieve_last_batch_timestamp_seconds", "Unix time the last batch finished.",
                                registry=r)
        self.skipped = Counter("sieve_recovery_skipped", "Redelivered inputs skipped because their "
                               "decision was already on an output topic.", registry=r)
        self.recovery_seconds = Gauge("sieve_recovery_seconds", "Seconds the start-up recovery took.", registry=r)
        self.recovery_envelopes = Gauge("sieve_recovery_envelopes", "Envelopes read back at start-up, per "
                                        "output topic kind.", ["decision"], registry=r)
        self.scores = Histogram("sieve_score", "Scores in [0, 1] of decided examples (quality, near_jaccard, "
                                "semantic_similarity, contamination), by score name and decision.",
                                ["score", "decision"], buckets=UNIT_SCORE_BUCKETS, registry=r)
        self.reward_scores = Histogram("sieve_reward_score", "Reward of SFT examples (reward) and chosen-minus-"
                                       "rejected margin of preference pairs (reward_margin), by decision "
                                       "(no _sum: values can be negative).",
                                       ["score", "decision"], buckets=REWARD_BUCKETS, registry=r)
        self.duplicates = Counter("sieve_duplicates", "Examples rejected as duplicates, by kind "
                                  "(exact, near, semantic).", ["kind"], registry=r)
        self.model_batch_size = Histogram("sieve_model_batch_size", "Examples a model stage scored in one worker "
                                          "batch (the encoder runs them in passes of scoring.batch_size).",
                                          ["stage"], buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.model_throughput = Gauge("sieve_model_examples_per_second", "Examples per second of model time in "
                                      "the last batch a model stage ran.", ["stage"], registry=r)
        for kind in DUPLICATE_KINDS.values():  # every kind shows as 0 before its first duplicate
            self.duplicates.labels(kind)
        self._last_stats: dict[str, dict] = {}

    def source_label(self, source: str | None) -> str:
        if not source:
            return UNKNOWN_SOURCE
        return source if source in self.source_allowlist else OTHER_SOURCE

    def observe_decisions(self, decisions: Sequence[Decision]) -> None:
        """Count decisions by decision, deciding reason and source; duplicates by kind; score histograms."""
        for d in decisions:
            reason = d.reasons[0] if d.reasons else NO_REASON
            source = d.example.source if d.example is not None else None
            self.examples.labels(d.decision, reason, self.source_label(source)).inc()
            for code in d.reasons:
                if code in DUPLICATE_KINDS:
                    self.duplicates.labels(DUPLICATE_KINDS[code]).inc()
            for name, value in d.scores.items():
                if name in UNIT_SCORES and math.isfinite(value):
                    self.scores.labels(name, d.decision).observe(value)
                elif name in REWARD_SCORES and math.isfinite(value):
                    self.reward_scores.labels(name, d.decision).observe(value)

    def observe_stages(self, stats: Mapping[str, Mapping]) -> None:
        """Record what each stage did since the last call, from cumulative ``Pipeline.stats()``."""
        for stage, now in stats.items():
            before = self._last_stats.get(stage, {"seen": 0, "passed": 0, "rejected": {}, "seconds": 0.0})
            seen = now["seen"] - before["seen"]
            if seen <= 0:
                continue
            passed = now["passed"] - before["passed"]
            seconds = max(0.0, now["seconds"] - before["seconds"])
            self.stage_seconds.labels(stage).observe(seconds)
            if stage in MODEL_STAGES:
                self.model_batch_size.labels(stage).observe(seen)
                if seconds > 0:
                    self.model_throughput.labels(stage).set(seen / seconds)
            self.stage_examples.labels(stage, "passed").inc(passed)
            if seen - passed > 0:
                self.stage_examples.labels(stage, "rejected").inc(seen - passed)
        self._last_stats = {k: {**v, "rejected": dict(v["rejected"])} for k, v in stats.items()}

    def observe_index_sizes(self, pipeline: Pipeline) -> None:
        """Set ``sieve_dedup_index_size`` for every stage with a sized ``index`` (``exact_dedup`` -> ``exact``)."""
        for stage in pipeline.stages:
            index = getattr(stage, "index", None)
            if index is not None and hasattr(index, "__len__"):
                self.dedup_index_size.labels(stage.name.removesuffix("_dedup")).set(len(index))

    def observe_batch(self, pipeline: Pipeline, decisions: Sequence[Decision], seconds: float,
                      lag: Mapping[int, int] | None = None) -> None:
        """Everything about one finished batch: sizes, time, decisions, stages, indexes and lag."""
        self.batch_size.observe(len(decisions))
        self.batch_seconds.observe(seconds)
        self.observe_decisions(decisions)
        self.observe_stages(pipeline.stats())
        self.observe_index_sizes(pipeline)
        for partition, value in (lag or {}).items():
            self.consumer_lag.labels(str(partition)).set(max(0, value))
        self.last_batch.set(time.time())


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    ready: Callable[[], bool]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            ok = self.ready()
            self._send(200 if ok else 503, b"ready\n" if ok else b"not ready: recovering or not consuming\n")
        else:
            self._send(404, b"try /metrics, /healthz or /readyz\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:  # scrapes every few seconds: keep them out of the log
        log.debug("http %s", fmt % args)


def serve(registry: CollectorRegistry, host: str, port: int,
          ready: Callable[[], bool] = lambda: True) -> ThreadingHTTPServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread; return the server.

    ``port=0`` picks a free port: read it back from ``server.server_address[1]``.

    Raises:
        OSError: the port is taken (the message names it).
    """
    handler = type("SieveMetricsHandler", (_Handler,), {"registry": registry, "ready": staticmethod(ready)})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port} ({exc}); set metrics.port "
                      "(SIEVE_METRICS__PORT) to a free port, or 0 for any") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sieve-metrics", daemon=True).start()
    return server
