"""``sieve run``: the stream worker (raw topic in; accepted, rejected and dead-letter out)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("sieve.run")

HELP = """\
Roles (--role, or SIEVE_ROLE / role in the settings file; default all):
  all      one process does everything below (the demo, small installs). Its outputs
           are Kafka transactions under the fixed id <group>-all: a second `all` in the
           same group fences the first, which exits 77 (run one `all` per group).
  score    stage 1 only: parse, normalize, PII, heuristics, decontamination, exact hash,
           MinHash signature, the model. Stateless and at-least-once: run any number
           (a GPU each), over the raw topic's partitions, in group <group>-score. Each
           writes one record per input to kafka.scored_topic (default sieve.scored).
  decide   stage 2 only: exact, near and semantic dedup, quality gate, pair margin.
           Group <group>-decide; the one decider the group assigns the scored partition
           to owns it (transactional id <group>-decide-<partition>) and is the only
           writer of the outputs, exactly once; the others are standbys (/readyz 503
           "standby") that take over, fencing the old owner, when it dies or freezes.
  `all` and the split roles of one kafka.group_id write the same outputs: a process
  refuses to start (exit 2) while the other topology has live members in its groups.
  Every consumer of the output topics must read read_committed. docs/streams.md
  ("Roles") has the topology, the failure modes and how to scale.

The rest of this text describes the `all` role; `score` does its stage-1 part,
`decide` its stage-2 part.

Consumes the raw topic (kafka.raw_topic, default sieve.raw) in micro-batches of up to
kafka.batch_max messages or kafka.batch_within_s seconds, runs the same pipeline as
`sieve curate`, and writes one envelope per input message (key = example id) to
kafka.accepted_topic, kafka.rejected_topic or kafka.dead_letter_topic.

Delivery: an input offset is committed only after its output is committed (acks=all,
one transaction per batch). After a crash the uncommitted inputs come back; the
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

Topic identity: every envelope's origin carries the raw topic's Kafka id (topic_id).
If the raw topic is deleted and created again while the worker runs, the worker notices
the new id (checked before every batch and every kafka.topic_check_interval_s), forgets
what it decided of the old topic and reads the new one from its beginning; nothing of
the new topic is mistaken for the old one, before or after a restart.

HTTP on metrics.host:metrics.port (default 0.0.0.0:9108; 0 = any free port), served
from the start:
  /metrics   Prometheus: sieve_examples_total{decision,reason,source}, sieve_stage_seconds,
             sieve_batch_size, sieve_batch_seconds, sieve_consumer_lag, sieve_dedup_index_size...
  /healthz   200 while the process runs
  /readyz    200 when recovery is done, the worker consumes, the broker answered a check
             within 3 x kafka.topic_check_interval_s, the raw topic exists and at least one
             of its partitions is assigned to this worker; else 503 and the reason

Logging: repeats of one message (a broker outage) are let through 3 times per 30 s;
the rest are counted and reported as "suppressed N similar messages".

Exit status:
{exit_statuses}

Settings (file, then SIEVE_* environment, then these flags), for example:
  SIEVE_KAFKA__BROKERS=host1:9092,host2:9092  SIEVE_KAFKA__GROUP_ID=sieve
  SIEVE_KAFKA__BATCH_MAX=256  SIEVE_KAFKA__BATCH_WITHIN_S=1.0  SIEVE_METRICS__PORT=9108
See docs/streams.md for every key, the envelope and the delivery guarantees.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from streams.exit_codes import help_text

    p = sub.add_parser("run", help="stream worker: consume the raw topic, publish decisions",
                       description=HELP.replace("{exit_statuses}", help_text()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    p.add_argument("--brokers", help="bootstrap servers host:port[,host:port] (kafka.brokers)")
    p.add_argument("--group-id", help="consumer group (kafka.group_id, default sieve)")
    p.add_argument("--metrics-port", type=int, help="HTTP port of /metrics, /healthz, /readyz (metrics.port)")
    p.add_argument("--role", choices=("all", "score", "decide"),
                   help="all (default: everything in one process), score (stage 1, any number) or decide "
                        "(stage 2, one owner plus standbys); see above (role)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar during recovery")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streams.codec_check import require_codecs
    require_codecs()  # before anything connects: a missing codec library is exit 2 naming it, not a crash later
    from prometheus_client import REGISTRY

    from streams.config import load_settings
    from streams.log_limit import install as limit_repeats
    from streams.metrics import serve
    from streams.topics import quiet_client_logs

    quiet_client_logs()
    repeats = limit_repeats()
    overrides = {k: v for k, v in {"kafka.brokers": args.brokers, "kafka.group_id": args.group_id,
                                   "metrics.port": args.metrics_port, "role": getattr(args, "role", None)}.items()
                 if v is not None}
    settings = load_settings(args.config, overrides=overrides)
    from streams.roles.groups import check_role

    check_role(settings.role)
    kafka = settings.kafka
    max_chars = settings.pipeline.filters.max_total_chars
    if 4 * max_chars + 65536 > kafka.max_output_bytes:
        log.warning("pipeline.filters.max_total_chars=%d may produce accepted envelopes over "
                    "kafka.max_output_bytes=%d; the worker stops if one does", max_chars, kafka.max_output_bytes)
    if kafka.topic_check_interval_s <= 0:
        raise ValueError(f"kafka.topic_check_interval_s must be > 0, got {kafka.topic_check_interval_s}")
    state: dict = {"worker": None}
    # first: a port in use is a usage error, said before minutes of model loading
    server = serve(REGISTRY, settings.metrics.host, settings.metrics.port,
                   ready=lambda: state["worker"].readiness() if state["worker"] else (False, "starting"))
    host, port = server.server_address[:2]
    log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)", host, port)
    try:
        if settings.role == "decide":
            from streams.roles.run_decider import run_decider

            return run_decider(settings, state)
        return _consume(args, settings, state)
    finally:
        server.shutdown()
        repeats.flush()


def _has_raw_partitions(app, topic: str) -> bool:  # noqa: ANN001 - a faust app
    """Whether the consumer holds a partition of ``topic`` (False while it is not running)."""
    try:
        return any(tp.topic == topic for tp in app.consumer.assignment())
    except Exception:  # noqa: BLE001 - not started, or stopping: not ready either way
        return False


def _consume(args: argparse.Namespace, settings, state: dict) -> int:  # noqa: ANN001 - streams.config.Settings
    """Topics, pipeline, recovery, then the faust worker until it stops; returns its exit status."""
    import faust
    from faust.types import TP
    from prometheus_client import REGISTRY
    from tqdm import tqdm

    from streams.app import build_app
    from streams.assemble import build_pipeline
    from streams.metrics import SieveMetrics
    from streams.recovery import recover
    from streams.roles.exclusive import refuse_mixed_topology
    from streams.roles.fencing import fence_previous
    from streams.roles.groups import role_kafka, transactional_id
    from streams.roles.scorer import scorer_start
    from streams.topics import ensure_topics, worker_topics
    from streams.worker import StreamWorker, register_agent
    from streams.worker.topic_switch import attach_topic_identity

    role = settings.role
    kafka = role_kafka(settings.kafka, role)
    created = ensure_topics(kafka, worker_topics(kafka, role))
    refuse_mixed_topology(settings.kafka, role)  # an `all` beside scorers or deciders decides twice: exit 2
    pipeline = build_pipeline(settings.pipeline)
    metrics = SieveMetrics(REGISTRY, settings.metrics.source_allowlist)
    metrics.set_role(role)
    if role == "score":
        log.info("scorer: %s -> %s (created: %s)", kafka.raw_topic, kafka.scored_topic, created or "none")
        result = scorer_start(kafka)  # stateless: nothing to recover, only the raw topic's id
    else:
        log.info("topics: %s -> %s | %s | %s (created: %s)", kafka.raw_topic, kafka.accepted_topic,
                 kafka.rejected_topic, kafka.dead_letter_topic, created or "none")
        # before recovery: an older `all` of this group can commit nothing more, so recovery sees all it wrote
        fence_previous(kafka, transactional_id(settings.kafka, "all"))
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
        app, raw_topic = build_app(settings, datadir=datadir, kafka=kafka)
        worker = StreamWorker(settings, pipeline, metrics, result,
                              highwater=lambda topic, partition: app.consumer.highwater(TP(topic, partition)),
                              role=role, kafka=kafka,
                              transactional_id=transactional_id(settings.kafka, "all") if role == "all" else None)
        attach_topic_identity(worker, app)
        worker.assigned = lambda: _has_raw_partitions(app, kafka.raw_topic)
        state["worker"] = worker
        register_agent(app, raw_topic, worker)
        log.info("consuming %s (topic id %s) as group %s on %s (batch_max=%d, within=%.2fs)", kafka.raw_topic,
                 result.raw_topic_id, kafka.group_id, kafka.brokers, kafka.batch_max, kafka.batch_within_s)
        try:
            # override_logging=False: keep Sieve's handlers (and their repeat filter) instead of mode's
            faust.Worker(app, loglevel=args.log_level.upper(), quiet=True, redirect_stdouts=False,
                         override_logging=False).execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        else:  # pragma: no cover - execute_from_commandline always raises SystemExit
            code = 0
    log.info("stopped after %d batches: %s", worker.batches, dict(pipeline.decisions))
    return code
