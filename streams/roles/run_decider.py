"""Start ``sieve run --role decide``: topics, the decide half of the pipeline, the loop until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from streams.config import Settings

log = logging.getLogger("sieve.run")


def decide_pipeline_factory(settings: Settings) -> Any:
    """A function building a fresh pipeline of the decide stages only, without loading a model.

    The quality gate's calibrated threshold comes from the quality head's metadata
    (:func:`models.stage.head_calibration`), read once; the encoder never loads.
    """
    from quality.build import build_decide_stages
    from quality.pipeline import Pipeline
    from streams.assemble import head_calibration

    calibration = head_calibration(settings.pipeline)
    p = settings.pipeline

    def build() -> Pipeline:
        # dead letters of the decide stages (an example one of them raised on) are redacted as
        # everywhere else; no transcripts: the decider parses no raw input
        return Pipeline(build_decide_stages(p, calibration), max_message_bytes=p.max_message_bytes,
                        format=p.format, dedup_window_s=p.dedup_window_s, dead_letters=p.pii.dead_letters())

    return build


def check_one_scored_partition(kafka) -> None:  # noqa: ANN001 - streams.config.KafkaSettings
    """Refuse a scored topic of several partitions: each would need its own owner with its own
    dedup state, and a duplicate in another partition would not be seen (sharding the decider is
    planned in docs/scaling.md, not built).

    Raises:
        ValueError: the scored topic has more than one partition.
        KafkaUnreachable: the broker does not answer.
    """
    from streams.exit_codes import KafkaUnreachable
    from streams.worker.topic_identity import TopicCheckFailed, describe_once

    try:
        state = describe_once(kafka, [kafka.scored_topic])[kafka.scored_topic]
    except TopicCheckFailed as exc:
        raise KafkaUnreachable(f"cannot read the metadata of {kafka.scored_topic} from kafka.brokers="
                               f"{kafka.brokers!r} ({exc})") from exc
    if state.partitions > 1 or kafka.scored_partitions != 1:
        raise ValueError(f"{kafka.scored_topic} has {state.partitions} partitions (kafka.scored_partitions="
                         f"{kafka.scored_partitions}): one decider owns all dedup state, so the scored topic must "
                         "have exactly one partition. Recreate it with one, or set kafka.scored_topic to a new "
                         "name (docs/streams.md, 'Roles')")


def run_decider(settings: Settings, state: dict) -> int:
    """Run the decider until SIGTERM or Ctrl-C; returns the exit status (0)."""
    from prometheus_client import REGISTRY

    from streams.metrics import SieveMetrics
    from streams.roles.decider import Decider
    from streams.roles.exclusive import refuse_mixed_topology
    from streams.roles.groups import role_kafka
    from streams.topics import ensure_topics, worker_topics

    kafka = role_kafka(settings.kafka, "decide")
    created = ensure_topics(kafka, worker_topics(kafka, "decide"))
    check_one_scored_partition(kafka)
    refuse_mixed_topology(settings.kafka, "decide")  # not beside an `all` of the same group_id: exit 2
    metrics = SieveMetrics(REGISTRY, settings.metrics.source_allowlist)
    metrics.set_role("decide")
    build = decide_pipeline_factory(settings)
    build()  # a bad setting fails now (exit 2), not at the first takeover
    log.info("decider: %s -> %s | %s | %s as group %s (created: %s)", kafka.scored_topic, kafka.accepted_topic,
             kafka.rejected_topic, kafka.dead_letter_topic, kafka.group_id, created or "none")
    decider = Decider(settings, kafka, settings.kafka, build, metrics)
    state["worker"] = decider

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, decider.stopping.set)
        await decider.run()

    asyncio.run(main())
    log.info("decider stopped after %d batches", decider.batches)
    return 0
