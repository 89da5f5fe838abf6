"""The one settings object of a Sieve process: pipeline, Kafka, metrics.

Read once at start-up from a TOML file (``--config`` or ``$SIEVE_CONFIG``) and
``SIEVE_<SECTION>__<KEY>`` variables; see :mod:`quality.config` for the rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from batches.assembler import BatchSettings
from quality.config import PipelineSettings, load


@dataclass(frozen=True)
class KafkaSettings:
    """Brokers, topics and the worker's micro-batching."""

    brokers: str = "127.0.0.1:9092"
    raw_topic: str = "sieve.raw"
    accepted_topic: str = "sieve.accepted"
    rejected_topic: str = "sieve.rejected"
    dead_letter_topic: str = "sieve.dead-letter"
    batches_topic: str = "sieve.batches"
    control_topic: str = "sieve.control"  # operator requests, e.g. `sieve batches cut`
    scored_topic: str = "sieve.scored"    # scorers -> decider (--role score / decide)
    scored_partitions: int = 1           # one transactional decider owns each; keep 1 (docs/streams.md)
    partitions: int = 3
    replication_factor: int = 1
    group_id: str = "sieve"
    batch_max: int = 256
    batch_within_s: float = 1.0
    # worker delivery knobs (see docs/streams.md)
    commit_interval_s: float = 2.8           # how often acknowledged input offsets are committed
    max_output_bytes: int = 1_000_000        # producer max_request_size; larger envelopes drop their example
    max_fetch_bytes: int = 2 * 1024 * 1024   # consumer per-partition fetch size (> broker's 1 MiB message max)
    session_timeout_s: float = 45.0          # a dead worker's partitions move after this long
    topic_check_interval_s: float = 5.0      # how often the raw topic's id (recreated?) and the broker are checked
    # SASL/SSL pass-through (see docs/security.md)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None


@dataclass(frozen=True)
class MetricsSettings:
    port: int = 9108  # 0 picks a free port (logged at start)
    host: str = "0.0.0.0"
    # sources reported as themselves in the `source` label; any other source is "other"
    source_allowlist: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    batches: BatchSettings = field(default_factory=BatchSettings)
    role: str = "all"  # sieve run --role: all | score | decide (docs/streams.md, "Roles")
    state_dir: str = "./sieve-state"  # dedup snapshots (and batch state) live here
    snapshot_interval_s: float = 300.0  # seconds between dedup snapshots of a worker; 0 = never


def load_settings(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from defaults, the file (or $SIEVE_CONFIG), the environment and overrides."""
    path = path or os.environ.get("SIEVE_CONFIG") or None
    return load(Settings, path, overrides=overrides)
