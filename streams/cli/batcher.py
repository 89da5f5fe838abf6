"""``sieve batcher``: cut fine-tuning batches from the accepted topic and announce them."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

log = logging.getLogger("sieve.batcher")

HELP = """\
Consumes kafka.accepted_topic (sieve.accepted) and kafka.rejected_topic (for each
batch's window statistics) in its own consumer group (<kafka.group_id>-batcher),
and accumulates accepted examples into fine-tuning batches in batches.dir. A batch
closes when it holds batches.max_examples examples, when its oldest example is
batches.max_age_s seconds old, or when an operator runs `sieve batches cut` (a
message on kafka.control_topic, sieve.control). Each closed batch is a directory

  <batches.dir>/<batch id>/sft/train-00000-of-00001.jsonl (and .parquet), validation-...
  <batches.dir>/<batch id>/preference/...                   (when pairs were accepted)
  <batches.dir>/<batch id>/report.html                       plots: scores, lengths, mix, rejections
  <batches.dir>/<batch id>/manifest.json                     counts, sha256 of every file, stats

and its manifest is published on kafka.batches_topic (sieve.batches, key = batch id).

Operators' overrides (`sieve review --kafka`) arrive on the control topic too: a
force-rejected id leaves the open batch, or, if a closed batch holds it, is listed
under "revoked" in the next manifest (trainers drop it), and is never batched later;
a force-accepted example joins the open batch, marked "overridden" in its shard row
and counted in the manifest. See docs/review.md.
Trainers load a batch from the manifest alone: see examples/trainer_consumer.py.

Delivery: input offsets are committed only after the batch state is fsynced and any
closed batch is announced; after a crash nothing is lost and no id is batched twice.
Run one batcher per batch directory (a lock refuses a second). SIGTERM or Ctrl-C
stops it; the open batch stays open for the next start.

Metrics on metrics.host:metrics.port (/metrics): sieve_finetune_batches_total{trigger},
sieve_finetune_batch_examples, sieve_finetune_batch_age_seconds,
sieve_finetune_open_batch_examples. Settings, for example:
  SIEVE_BATCHES__DIR=/data/batches  SIEVE_BATCHES__MAX_EXAMPLES=10000
  SIEVE_BATCHES__MAX_AGE_S=3600  SIEVE_BATCHES__VALIDATION_RATIO=0.1
  SIEVE_BATCHES__URI_PREFIX=s3://bucket/batches   (what trainers see instead of the local dir)
See docs/batches.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batcher", help="cut fine-tuning batches from the accepted topic, announce them",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    p.add_argument("--brokers", help="bootstrap servers host:port[,host:port] (kafka.brokers)")
    p.add_argument("--dir", help="batch directory (batches.dir, default ./sieve-batches)")
    p.add_argument("--max-examples", type=int, help="close a batch at this many examples (batches.max_examples)")
    p.add_argument("--max-age-s", type=float, help="close a batch this old, in seconds (batches.max_age_s)")
    p.add_argument("--metrics-port", type=int, help="HTTP port of /metrics (metrics.port; 0 = any free port)")
    p.add_argument("--no-metrics", action="store_true", help="serve no metrics")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import REGISTRY

    from batches.assembler import StateLockedError
    from streams.batcher import Batcher
    from streams.config import load_settings
    from streams.metrics import serve

    for noisy in ("kafka", "aiokafka"):  # connection chatter at INFO; their warnings still show
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    overrides = {k: v for k, v in {"kafka.brokers": args.brokers, "batches.dir": args.dir,
                                   "batches.max_examples": args.max_examples, "batches.max_age_s": args.max_age_s,
                                   "metrics.port": args.metrics_port}.items() if v is not None}
    settings = load_settings(args.config, overrides=overrides)
    try:
        batcher = Batcher(settings, registry=None if args.no_metrics else REGISTRY)
    except StateLockedError as exc:
        raise ValueError(f"batches.dir: {exc}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = None
    if not args.no_metrics:
        server = serve(REGISTRY, settings.metrics.host, settings.metrics.port, ready=lambda: batcher.ready)
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, server.server_address[1])
    try:
        batcher.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.shutdown()
    log.info("batcher stopped; %d examples wait in the open batch", batcher.assembler.open_count)
    return 0
