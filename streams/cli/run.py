"""``sieve run``: the stream worker (raw topic in; accepted, rejected and dead-letter out)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("sieve.run")

HELP = """\
Consumes the raw topic (kafka.raw_topic, default sieve.raw) in micro-batches of up to
kafka.batch_max messages or kafka.batch_within_s seconds, runs the same pipeline as
`sieve curate`, and writes one envelope per input message (key = example id) to
kafka.accepted_topic, kafka.rejected_topic or kafka.dead_letter_topic.

Delivery: an input offset is committed only after the broker acknowledged its output
(acks=all, idempotent producer). After a crash the uncommitted inputs come back; the
worker first reads the output topics, skips inputs that were already decided and
rebuilds its dedup state from the accepted topic, so no id is accepted twice and the
decisions match an uninterrupted run. If an output cannot be delivered, or a stage is
broken (it fails on every example of a batch and on a known-good canary example), the
worker exits with status 75 without committing: restart it (a supervisor should). One
input that makes a stage raise, or whose envelope cannot be written, is a dead letter.

Start-up: creates missing topics (kafka.partitions, kafka.replication_factor), runs
that recovery (a read of what the output topics got since the last dedup
snapshot in state_dir; all of them without one), then consumes. SIGTERM or
Ctrl-C finishes the current batch, commits and stops.

HTTP on metrics.host:metrics.port (default 0.0.0.0:9108; 0 = any free port):
  /metrics   Prometheus: sieve_examples_total{decision,reason,source}, sieve_stage_seconds,
             sieve_batch_size, sieve_batch_seconds, sieve_consumer_lag, sieve_dedup_index_size...
  /healthz   200 while the process runs
  /readyz    200 once recovery is done and the worker consumes, else 503

Settings (file, then SIEVE_* environment, then these flags), for example:
  SIEVE_KAFKA__BROKERS=host1:9092,host2:9092  SIEVE_KAFKA__GROUP_ID=sieve
  SIEVE_KAFKA__BATCH_MAX=256  SIEVE_KAFKA__BATCH_WITHIN_S=1.0  SIEVE_METRICS__PORT=9108
See docs/streams.md for every key, the envelope and the delivery guarantees.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="stream worker: consume the raw topic, publish decisions",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    p.add_argument("--brokers", help="bootstrap servers host:port[,host:port] (kafka.brokers)")
    p.add_argument("--group-id", help="consumer group (kafka.group_id, default sieve)")
    p.add_argument("--metrics-port", type=int, help="HTTP port of /metrics, /healthz, /readyz (metrics.port)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar during recovery")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streams.codec_check import require_codecs
    require_codecs()  # before anything connects: a missing codec library is exit 2 naming it, not a crash later
    import faust
    from faust.types import TP
    from prometheus_client import REGISTRY
    from tqdm import tqdm

    from streams.app import build_app
    from streams.assemble import build_pipeline
    from streams.config import load_settings
    from streams.metrics import SieveMetrics, serve
    from streams.recovery import recover
    from streams.topics import ensure_topics, quiet_client_logs
    from streams.worker import StreamWorker, register_agent

    quiet_client_logs()
    overrides = {k: v for k, v in {"kafka.brokers": args.brokers, "kafka.group_id": args.group_id,
                                   "metrics.port": args.metrics_port}.items() if v is not None}
    settings = load_settings(args.config, overrides=overrides)
    kafka = settings.kafka
    max_chars = settings.pipeline.filters.max_total_chars
    if 4 * max_chars + 65536 > kafka.max_output_bytes:
        log.warning("pipeline.filters.max_total_chars=%d may produce accepted envelopes over "
                    "kafka.max_output_bytes=%d; the worker stops if one does", max_chars, kafka.max_output_bytes)
    created = ensure_topics(kafka)
    pipeline = build_pipeline(settings.pipeline)
    metrics = SieveMetrics(REGISTRY, settings.metrics.source_allowlist)
    state: dict = {"worker": None}
    server = serve(REGISTRY, settings.metrics.host, settings.metrics.port,
                   ready=lambda: bool(state["worker"] and state["worker"].ready))
    host, port = server.server_address[:2]
    log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)", host, port)
    log.info("topics: %s -> %s | %s | %s (created: %s)", kafka.raw_topic, kafka.accepted_topic,
             kafka.rejected_topic, kafka.dead_letter_topic, created or "none")

    with tqdm(unit="env", desc="recovery", disable=args.no_progress or None, file=sys.stderr) as bar:
        seen = {}

        def progress(topic: str, n: int) -> None:
            bar.update(n - seen.get(topic, 0))
            seen[topic] = n

        result = recover(kafka, pipeline, progress=progress, state_dir=settings.state_dir)
    metrics.recovery_seconds.set(result.seconds)
    for decision, topic in (("accepted", kafka.accepted_topic), ("rejected", kafka.rejected_topic),
                            ("dead_letter", kafka.dead_letter_topic)):
        metrics.recovery_envelopes.labels(decision).set(result.scanned.get(topic, 0))
    metrics.observe_index_sizes(pipeline)
    log.info("recovery: %s", result.summary())

    with tempfile.TemporaryDirectory(prefix="sieve-faust-") as datadir:
        app, raw_topic = build_app(settings, datadir=datadir)
        worker = StreamWorker(settings, pipeline, metrics, result,
                              highwater=lambda topic, partition: app.consumer.highwater(TP(topic, partition)))
        state["worker"] = worker
        register_agent(app, raw_topic, worker)
        log.info("consuming %s as group %s on %s (batch_max=%d, within=%.2fs)", kafka.raw_topic,
                 kafka.group_id, kafka.brokers, kafka.batch_max, kafka.batch_within_s)
        try:
            faust.Worker(app, loglevel=args.log_level.upper(), quiet=True,
                         redirect_stdouts=False).execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        else:  # pragma: no cover - execute_from_commandline always raises SystemExit
            code = 0
        finally:
            server.shutdown()
    log.info("stopped after %d batches: %s", worker.batches, dict(pipeline.decisions))
    return code
