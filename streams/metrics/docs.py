"""The metrics catalog (docs/metrics.md), generated from the metrics classes themselves.

``python -m streams.metrics.docs > docs/metrics.md`` instantiates
:class:`streams.metrics.SieveMetrics` (``sieve run``) and
:class:`streams.metrics.batcher.BatchMetrics` (``sieve batcher``) on fresh registries
and prints one table row per series: name, type, labels, process and help text. A
unit test compares docs/metrics.md with :func:`render`, so the page cannot drift
from the code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase


@dataclass(frozen=True)
class MetricDoc:
    """One series family as a user queries it."""

    name: str                 # as queried: counters end in _total
    family: str               # the registry's family name (counters without _total)
    type: str                 # counter, gauge, histogram
    labels: tuple[str, ...]
    help: str
    process: str              # the command that exports it


def catalog() -> list[MetricDoc]:
    """Every ``sieve_*`` family of the worker and the batcher, in definition order."""
    from streams.metrics import SieveMetrics
    from streams.metrics.batcher import BatchMetrics

    rows = []
    for process, cls in (("sieve run", SieveMetrics), ("sieve batcher", BatchMetrics)):
        for metric in vars(cls(CollectorRegistry())).values():
            if isinstance(metric, MetricWrapperBase):
                family, kind = metric._name, metric._type  # noqa: SLF001 - prometheus_client keeps them here
                name = f"{family}_total" if kind == "counter" else family
                rows.append(MetricDoc(name, family, kind, tuple(metric._labelnames), metric._documentation, process))
    return rows


def stage_names() -> list[str]:
    """Values of the ``stage`` label: ``parse`` plus every stage of the registry Sieve ships.

    Stages registered elsewhere (tests register some) are left out, so the page is the
    same whatever else the process imported.
    """
    import streams.assemble  # noqa: F401 - the model stage registers too
    from quality.registry import discover
    from streams.metrics import MODEL_STAGES

    names = {e.name for e in discover().entries() if e.cls.__module__.startswith(("quality.", "models."))}
    return ["parse", *sorted(names | MODEL_STAGES)]


def label_values() -> list[tuple[str, str]]:
    from batches.assembler import TRIGGERS
    from streams.metrics import DUPLICATE_KINDS, NO_REASON, OTHER_SOURCE, REWARD_SCORES, UNIT_SCORES, UNKNOWN_SOURCE

    def code(values) -> str:
        return ", ".join(f"`{v}`" for v in values)

    return [
        ("decision", code(("accepted", "rejected", "dead_letter"))),
        ("reason", f"a reason code ([reasons.md](reasons.md)); in `sieve_examples_total` the deciding one, "
                   f"`{NO_REASON}` for accepted examples"),
        ("source", f"a name in `metrics.source_allowlist`, else `{OTHER_SOURCE}`; `{UNKNOWN_SOURCE}` without one"),
        ("stage", code(stage_names())),
        ("result", code(("passed", "rejected"))),
        ("kind", f"{code(sorted(DUPLICATE_KINDS.values()))} (`sieve_dedup_index_size`: the dedup stages "
                 "that keep an index)"),
        ("score", f"{code(sorted(UNIT_SCORES))} in `sieve_score`; {code(sorted(REWARD_SCORES))} in "
                  "`sieve_reward_score`"),
        ("partition", "partition number of the raw topic"),
        ("trigger", code(TRIGGERS)),
    ]


INTRO = """\
# Metrics

Generated from the code by `python -m streams.metrics.docs > docs/metrics.md`
(`streams/metrics/worker.py` for `sieve run`, `streams/metrics/batcher.py` for `sieve batcher`);
`tests/unit/streams/test_metrics_catalog.py` fails when this page is stale.

Both processes serve, on `metrics.host:metrics.port` (default `0.0.0.0:9108`):
`/metrics` (Prometheus text format), `/healthz` (200 while the process runs) and
`/readyz`. For `sieve run`, `/readyz` is 200 only while recovery is done and the worker
consumes, the broker answered its last topic check (every `kafka.topic_check_interval_s`,
and one per batch) within three intervals, the raw topic exists and at least one of its
partitions is assigned to the worker; otherwise 503, with the reason in the body (e.g.
`not ready: Kafka at host:9092 does not answer (...)`, `not ready: no partition of
sieve.raw is assigned to this worker`). For `sieve batcher`, 200 once it has announced
pending batches and subscribed. Both answer 503 before and while stopping. The global
registry also carries prometheus-client's `process_*` and `python_*` series.
`sieve_consumer_lag` has series only for the partitions assigned to the worker now.

A counter `x_total` is queried as such; a histogram `x` as `x_bucket{le=...}`, `x_sum`
and `x_count`. Label values come only from closed sets: no id, text or free-form source
ever becomes a label or a value ([security.md](security.md)).
"""

QUERIES = """\
## Useful queries

| what | PromQL |
|---|---|
| examples/s by decision | `sum by (decision) (rate(sieve_examples_total[5m]))` |
| acceptance rate | `sum(rate(sieve_examples_total{decision="accepted"}[5m])) / sum(rate(sieve_examples_total[5m]))` |
| contaminated examples/s, whatever decided them | `sum(rate(sieve_reasons_total{reason="contaminated"}[5m]))` |
| duplicate rate by kind | `sum by (kind) (rate(sieve_duplicates_total[5m])) / scalar(sum(rate(sieve_examples_total[5m])))` |
| median quality of accepted examples | `histogram_quantile(0.5, sum by (le) (rate(sieve_score_bucket{score="quality",decision="accepted"}[15m])))` |
| stage latency p95 per batch | `histogram_quantile(0.95, sum by (le, stage) (rate(sieve_stage_seconds_bucket[5m])))` |
| model throughput (examples per model-second) | `sum(rate(sieve_stage_examples_total{stage="model_score"}[5m])) / sum(rate(sieve_stage_seconds_sum{stage="model_score"}[5m]))` |
| consumer lag | `sum(sieve_consumer_lag)` |
| seconds since the worker's last batch | `time() - sieve_last_batch_timestamp_seconds` |
| fine-tuning batches per hour | `sum(increase(sieve_finetune_batches_total[1h]))` |
"""


def render() -> str:
    """The whole of docs/metrics.md."""
    lines = [INTRO, "## Series", "", "| metric | type | labels | process | meaning |", "|---|---|---|---|---|"]
    for m in catalog():
        labels = ", ".join(f"`{label}`" for label in m.labels) or "–"
        lines.append(f"| `{m.name}` | {m.type} | {labels} | `{m.process}` | {m.help} |")
    lines += ["", "## Label values", "", "| label | values |", "|---|---|"]
    lines += [f"| `{label}` | {values} |" for label, values in label_values()]
    lines += ["", QUERIES]
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
