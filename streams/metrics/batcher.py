"""Prometheus metrics of the fine-tuning batcher (``sieve batcher``).

Series carry no example content and no ids: the only label is the trigger that
closed a batch, a closed set (``count``, ``age``, ``request``, ``end_of_input``).
"""

from __future__ import annotations

from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from batches.assembler import TRIGGERS

#: Examples per closed batch.
BATCH_EXAMPLES_BUCKETS = (10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000)
#: Seconds from a batch's oldest example to its close.
BATCH_AGE_BUCKETS = (1, 10, 60, 300, 900, 1_800, 3_600, 7_200, 21_600, 86_400)


class BatchMetrics:
    """The batcher's ``sieve_finetune_*`` series on one registry (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.batches = Counter("sieve_finetune_batches", "Fine-tuning batches closed and announced, by trigger.",
                               ["trigger"], registry=r)
        self.batch_examples = Histogram("sieve_finetune_batch_examples", "Examples per closed fine-tuning batch.",
                                        buckets=BATCH_EXAMPLES_BUCKETS, registry=r)
        self.age_at_close = Histogram("sieve_finetune_batch_age_at_close_seconds",
                                      "Seconds from a closed batch's oldest example to its close.",
                                      buckets=BATCH_AGE_BUCKETS, registry=r)
        self.batch_age = Gauge("sieve_finetune_batch_age_seconds",
                               "Seconds since the oldest example of the open batch arrived (0 when empty).",
                               registry=r)
        self.open_examples = Gauge("sieve_finetune_open_batch_examples", "Examples waiting in the open batch.",
                                   registry=r)
        self.redelivered = Counter("sieve_finetune_redelivered",
                                   "Accepted examples ignored because their id was already batched or open.",
                                   registry=r)
        self.refusal_share = Gauge("sieve_finetune_last_batch_refusal_share",
                                   "Share of the last closed batch's responses that look like refusals.", registry=r)
        for trigger in TRIGGERS:  # every trigger shows as 0 before its first batch
            self.batches.labels(trigger)

    def observe_closed(self, manifest: Mapping[str, Any]) -> None:
        self.batches.labels(manifest["trigger"]).inc()
        self.batch_examples.observe(manifest["counts"]["examples"])
        if manifest.get("age_at_close_s") is not None:
            self.age_at_close.observe(manifest["age_at_close_s"])
        self.refusal_share.set(manifest["refusals"]["share"])

    def observe_open(self, examples: int, age_s: float) -> None:
        self.open_examples.set(examples)
        self.batch_age.set(age_s)
