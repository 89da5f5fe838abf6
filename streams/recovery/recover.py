"""Start-up recovery of a stream worker: what was already decided, and the dedup state.

Input is at-least-once: offsets are committed only after the outputs of a batch
are acknowledged, so a worker that dies (kill -9, OOM, lost node) between the
two will see some inputs again. Recovery makes the outputs idempotent anyway:

1. read the Kafka topic ids of the raw and output topics (KIP-516: a topic deleted and
   created again gets a new one) and the consumer group's committed offset of every
   partition of the raw topic;
2. restore the newest dedup snapshot (see :mod:`quality.state`; the worker writes one
   every ``snapshot_interval_s`` and when it drains). Its :class:`~streams.recovery.checkpoint.Checkpoint`
   holds the worker's **frontier** at that moment: per raw partition the end of the
   inputs it had decided (every offset below was decided and its envelope acknowledged),
   the end offsets of the three output topics, and the topic ids. Inputs between the
   committed offset and that end are decided: they go into the **skip set** as one
   offset range per partition (:mod:`streams.recovery.decided`), unless the raw topic
   has another id now (recreated: nothing of it decided);
3. scan the three output topics from the frontier's output offsets (from the beginning
   without a usable snapshot) to their current end, and add the ``origin`` (topic, topic
   id, partition, offset) of every envelope whose origin offset is at or past the
   committed offset of its partition to the skip set: those inputs were decided before
   the crash and will be redelivered, so the worker skips them and produces nothing new
   for them. An envelope of another incarnation of the raw topic (another id) never
   matches; one without an id (written before Sieve recorded ids) matches by offset;
4. replay the accepted envelopes of that tail (``sieve.accepted`` is the source of
   truth) into the restored dedup state: each envelope's canonical example is parsed
   back into an :class:`Example` and handed to :meth:`quality.pipeline.Pipeline.warm`.
   Without a usable snapshot all of ``sieve.accepted`` is replayed. Snapshots matter
   most for semantic dedup: an envelope carries no embedding, so a replayed example is
   encoded again.

Quota windows (the quality gate's state) come back from the snapshot plus the scores of
the envelopes written after it (:mod:`streams.recovery.quotas`), when the frontier is
trusted. Kafka I/O is in :mod:`streams.recovery.kafka_io`, envelopes become examples in
:mod:`streams.recovery.envelopes`; this module orchestrates.

So a restart reads only the outputs written since the last snapshot, O(traffic in one
``snapshot_interval_s``), not O(all outputs); docs/streams.md has the numbers. A snapshot
of another raw topic, consumer group or output topic (or of output topics that were
recreated since: shorter now, or another topic id) is not trusted: recovery then scans
everything.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from quality.pipeline import Pipeline
from quality.records import Example
from quality.stage import stateful_stages
from quality.state import load_snapshot, snapshot_meta
from streams.config import KafkaSettings
from streams.recovery.checkpoint import Checkpoint, Frontier, snapshot_dir
from streams.recovery.decided import DecidedInputs, envelope_origin
from streams.recovery.envelopes import example_from_envelope, scored_input
from streams.recovery.kafka_io import committed_offsets, end_offsets, scan_topic, topic_ids, topics_end_offsets
from streams.recovery.quotas import ScoreTail
from streams.topics import output_topics

log = logging.getLogger(__name__)

#: Accepted examples handed to ``Pipeline.warm`` at a time.
WARM_CHUNK = 2048


@dataclass
class RecoveryResult:
    """What the worker needs before it consumes, and what recovery cost."""

    committed: dict[int, int] = field(default_factory=dict)   # raw partition -> next offset to consume
    skip: DecidedInputs | None = None                          # inputs already decided, to skip
    raw_topic_id: str | None = None                            # the raw topic's Kafka id now (None: unknown)
    output_topic_ids: dict[str, str | None] = field(default_factory=dict)  # output topic -> Kafka id now
    scanned: dict[str, int] = field(default_factory=dict)     # output topic -> envelopes read
    warmed: int = 0                                            # accepted examples put back into the state
    snapshot: str | None = None                                # the snapshot restored, if any
    output_end: dict[str, dict[int, int]] = field(default_factory=dict)  # output topic -> partition -> end
    decided_end: dict[int, int] = field(default_factory=dict)  # raw partition -> end of the snapshot's frontier
    frontier: bool = False                                     # the scan started at a snapshot's frontier
    quota_windows: bool = False                                # quota windows restored from the snapshot
    scores_replayed: int = 0                                   # tail quality scores fed to those windows
    unparseable_accepted: int = 0                              # accepted envelopes that did not parse back
    seconds: float = 0.0

    def summary(self) -> dict:
        skip = self.skip if self.skip is not None else ()
        return {"committed": self.committed, "skip": len(skip), "raw_topic_id": self.raw_topic_id,
                "scanned": self.scanned,
                "frontier": self.frontier, "quota_windows": self.quota_windows,
                "scores_replayed": self.scores_replayed, "snapshot": self.snapshot, "warmed": self.warmed,
                "unparseable_accepted": self.unparseable_accepted, "seconds": round(self.seconds, 3)}


def _restore_snapshot(kafka: KafkaSettings, pipeline: Pipeline, directory: Path | None, group_id: str,
                      result: RecoveryResult) -> tuple[dict[int, int], Frontier | None]:
    """Restores the snapshot if it belongs to this accepted topic.

    Returns the ``sieve.accepted`` offsets its dedup state covers, and its frontier when
    that can be trusted for the skip set (same raw topic, group and output topics, none
    of them recreated since). State rebuilt from decided scores (quota windows) is
    restored only with a trusted frontier: the tail's scores are counted from it.
    """
    checkpoint = Checkpoint.from_meta(snapshot_meta(directory)) if directory is not None else None
    if checkpoint is None:
        return {}, None
    ends = topics_end_offsets(kafka, list(output_topics(kafka).values()))
    recreated = checkpoint.recreated_outputs(result.output_topic_ids)
    if not checkpoint.covers(kafka, ends) or kafka.accepted_topic in recreated:
        log.warning("recovery: snapshot in %s is not of this %s (topic recreated?); replaying everything",
                    directory, kafka.accepted_topic)
        return {}, None
    frontier = checkpoint.trusted_frontier(kafka, group_id, ends)
    if frontier is not None and recreated:
        log.warning("recovery: %s were deleted and created again since the snapshot (other topic ids); scanning "
                    "all outputs", sorted(recreated))
        frontier = None
    if frontier is not None:
        windows = load_snapshot(pipeline.stages, directory, rebuilt_from=("decided",))
        quotas = {s.name for s in stateful_stages(pipeline.stages) if s.score_history() is not None}
        if quotas & set(windows.missing):
            log.warning("recovery: the snapshot holds no quota windows for %s; they start empty",
                        sorted(quotas & set(windows.missing)))
        result.quota_windows = bool(quotas & set(windows.restored))
    restored = load_snapshot(pipeline.stages, directory, rebuilt_from=("accepted",))
    if not restored.complete:
        log.warning("recovery: snapshot lacks state for %s; replaying all of %s", restored.missing,
                    kafka.accepted_topic)
        return {}, frontier
    result.snapshot = str(restored.path)
    return checkpoint.accepted_end, frontier


def _check_raw_topic_not_recreated(kafka: KafkaSettings, decided: DecidedInputs, *, legacy_spans: bool) -> None:
    """Decided inputs past the raw topic's end mean it was deleted and created again while
    the outputs (or the snapshot) were kept, and that the envelopes naming them carry no
    topic id (written by a Sieve before ids, or on a broker without them): new inputs at
    those offsets would be skipped as decided, silently. Refuse to start instead.

    Envelopes with a topic id never match another incarnation, so they need no check; nor
    do the spans of a snapshot that recorded the raw topic's id (``legacy_spans`` False)."""
    named = decided.ends_without_id(with_ranges=legacy_spans)
    if not named:
        return
    ends = end_offsets(kafka, kafka.raw_topic)
    beyond = sorted((p, o - 1) for p, o in named.items() if o > ends.get(p, 0))
    if beyond:
        raise ValueError(
            f"the output topics name input(s) of {kafka.raw_topic!r} past its end (partition {beyond[0][0]} "
            f"offset {beyond[0][1]}, end {ends.get(beyond[0][0], 0)}) without a topic id: was the "
            "raw topic recreated? Its new inputs at those offsets would be taken for decided ones. Recreate the "
            "output topics too (and clear the state_dir's snapshot), or use new topic names and kafka.group_id")


def recover(kafka: KafkaSettings, pipeline: Pipeline, *, group_id: str | None = None,
            progress: Callable[[str, int], None] | None = None,
            state_dir: str | Path | None = None) -> RecoveryResult:
    """Build the skip set and warm the pipeline's dedup state from a snapshot and the output topics.

    Args:
        kafka: brokers, the raw topic, the output topics and the group.
        pipeline: the worker's pipeline; its stateful stages are warmed in place.
        group_id: the consumer group (default: ``kafka.group_id``).
        progress: called as ``progress(topic, envelopes_read_so_far)`` every 1000 envelopes.
        state_dir: the worker's state directory; its dedup snapshot (if any) is restored,
            only the accepted envelopes it does not cover are replayed, and with its
            frontier only the outputs written after it are scanned.
    """
    t0 = time.perf_counter()
    group_id = group_id or kafka.group_id
    ids = topic_ids(kafka)  # first: the worker confirms the raw topic's id before deciding anything
    raw_id = ids.pop(kafka.raw_topic)
    result = RecoveryResult(committed=committed_offsets(kafka, group_id),
                            skip=DecidedInputs(kafka.raw_topic, raw_id), raw_topic_id=raw_id, output_topic_ids=ids)
    covered, frontier = _restore_snapshot(kafka, pipeline, snapshot_dir(state_dir, kafka) if state_dir else None,
                                          group_id, result)
    if frontier is not None:
        result.frontier = True
    if frontier is not None and frontier.raw_topic_id not in (None, raw_id):
        log.warning("recovery: %s was deleted and created again since the snapshot (topic id %s, now %s): what "
                    "the snapshot says was decided of it is not of this topic; its inputs are read from the "
                    "committed offsets", kafka.raw_topic, frontier.raw_topic_id, raw_id)
    elif frontier is not None:
        result.decided_end = dict(frontier.decided_end)
        for partition, end in frontier.decided_end.items():
            result.skip.add_range(partition, result.committed.get(partition, 0), end)
        for partition, spans in frontier.pending.items():
            for first, end in spans:
                result.skip.add_range(partition, max(first, result.committed.get(partition, 0)), end)
    pending: list[Example] = []
    # scores of the envelopes after the snapshot, for the restored quota windows
    tail = ScoreTail([s for s in stateful_stages(pipeline.stages) if s.rebuilt_from == "decided"]) \
        if result.quota_windows else None
    for decision, topic in output_topics(kafka).items():
        start = dict(frontier.output_end[topic]) if frontier is not None else {}
        if decision == "accepted":  # the dedup state needs everything past what the snapshot covers
            start = {p: min(o, covered.get(p, 0)) for p, o in start.items()}
        ends = result.output_end.setdefault(topic, dict(start))
        n = 0
        for out_partition, out_offset, value in scan_topic(kafka, topic, start=start):
            n += 1
            if progress is not None and n % 1000 == 0:
                progress(topic, n)
            ends[out_partition] = max(ends.get(out_partition, 0), out_offset + 1)
            try:
                env = orjson.loads(value)
            except orjson.JSONDecodeError:
                log.warning("recovery: skipping a non-JSON record on %s", topic)
                continue
            if not isinstance(env, dict):
                continue
            origin = envelope_origin(env, kafka.raw_topic)
            # an envelope of an older incarnation of the raw topic (another id) never matches an input now
            if origin is not None and origin[1] in (raw_id, None):
                _topic, _topic_id, in_partition, in_offset = origin
                if in_offset >= result.committed.get(in_partition, 0):
                    result.skip.add(origin)
                if tail and frontier is not None and out_offset >= frontier.output_end[topic].get(out_partition, 0):
                    tail.add(in_partition, in_offset, scored_input(env))
            if decision == "accepted":  # positions in sieve.accepted, not in the input
                if out_offset < covered.get(out_partition, 0):  # already in the restored snapshot
                    continue
                ex = example_from_envelope(env)
                if ex is None:
                    result.unparseable_accepted += 1
                    continue
                pending.append(ex)
                if len(pending) >= WARM_CHUNK:
                    result.warmed += pipeline.warm(pending)
                    pending = []
        result.scanned[topic] = n
    if pending:
        result.warmed += pipeline.warm(pending)
    if tail:
        result.scores_replayed = tail.replay()
    _check_raw_topic_not_recreated(kafka, result.skip, legacy_spans=frontier is not None and
                                   frontier.raw_topic_id is None)
    if result.unparseable_accepted:
        log.warning("recovery: %d accepted envelopes could not be parsed back; their content is not in the "
                    "dedup state", result.unparseable_accepted)
    result.seconds = time.perf_counter() - t0
    return result
