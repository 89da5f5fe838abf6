"""Start-up recovery of a stream worker: what was already decided, and the dedup state.

Input is at-least-once: offsets are committed only after the outputs of a batch
are acknowledged, so a worker that dies (kill -9, OOM, lost node) between the
two will see some inputs again. Recovery makes the outputs idempotent anyway:

1. read the consumer group's committed offset of every partition of the raw topic;
2. restore the newest dedup snapshot (see :mod:`quality.state`; the worker writes one
   every ``snapshot_interval_s`` and when it drains). Its meta holds the worker's
   **frontier** at that moment: per raw partition the end of the inputs it had decided
   (every offset below was decided and its envelope acknowledged), and the end offsets
   of the three output topics. Inputs between the committed offset and that end are
   decided: they go into the **skip set** as one offset range per partition;
3. scan the three output topics from the frontier's output offsets (from the beginning
   without a usable snapshot) to their current end, and add the ``origin`` (topic,
   partition, offset) of every envelope whose origin offset is at or past the committed
   offset of its partition to the skip set: those inputs were decided before the crash
   and will be redelivered, so the worker skips them and produces nothing new for them;
4. replay the accepted envelopes of that tail (``sieve.accepted`` is the source of
   truth) into the restored dedup state: each envelope's canonical example is parsed
   back into an :class:`Example` and handed to :meth:`quality.pipeline.Pipeline.warm`.
   Without a usable snapshot all of ``sieve.accepted`` is replayed. Snapshots matter
   most for semantic dedup: an envelope carries no embedding, so a replayed example is
   encoded again.

So a restart reads only the outputs written since the last snapshot, O(traffic in one
``snapshot_interval_s``), not O(all outputs); docs/streams.md has the numbers. A snapshot
of another raw topic, consumer group or output topic (or of output topics that were
recreated since) is not trusted: recovery then scans everything.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import orjson

from quality.pipeline import Pipeline
from quality.records import Example, ParseFailure, RawRecord, parse
from quality.state import load_snapshot, snapshot_meta
from quality.scoring.thresholds import policies_of
from streams.config import KafkaSettings
from streams.topics import client_kwargs, output_topics

log = logging.getLogger(__name__)

#: Milliseconds one poll of the output scan waits for records.
SCAN_POLL_MS = 500
#: Seconds the scan may go without progress before it gives up (broker down, ACLs...).
SCAN_STALL_S = 60.0
#: Accepted examples handed to ``Pipeline.warm`` at a time.
WARM_CHUNK = 2048

Origin = tuple[str, int, int]  # (topic, partition, offset) of an input message


Span = tuple[int, int]  # [first, end) offsets of one partition


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for first, end in sorted(spans):
        if end <= first:
            continue
        if out and first <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((first, end))
    return out


@dataclass
class DecidedInputs:
    """Inputs of ``topic`` already decided: offset spans per partition plus single origins.

    The spans come from a snapshot's frontier, the single origins from the output tail.
    Membership is what the worker asks (``origin in decided``) before deciding an input.
    """

    topic: str
    ranges: dict[int, list[Span]] = field(default_factory=dict)  # partition -> [first, end) spans
    origins: set[Origin] = field(default_factory=set)

    def add_range(self, partition: int, first: int, end: int) -> None:
        if end > first:
            self.ranges[partition] = _merge(self.ranges.get(partition, []) + [(first, end)])

    def _in_ranges(self, partition: int, offset: int) -> bool:
        return any(first <= offset < end for first, end in self.ranges.get(partition, ()))

    def __contains__(self, origin: object) -> bool:
        if not isinstance(origin, tuple) or len(origin) != 3:
            return False
        topic, partition, offset = origin
        if topic == self.topic and self._in_ranges(partition, offset):
            return True
        return origin in self.origins

    def add(self, origin: Origin) -> None:
        if origin not in self:
            self.origins.add(origin)

    def discard(self, origin: Origin) -> None:
        """Forgets a single origin once it was skipped; spans stay (those inputs stay decided)."""
        self.origins.discard(origin)

    def __len__(self) -> int:
        return len(self.origins) + sum(end - first for spans in self.ranges.values() for first, end in spans)

    def spans(self) -> dict[int, list[Span]]:
        """Everything decided, as merged spans per partition."""
        out = {p: list(spans) for p, spans in self.ranges.items()}
        for topic, partition, offset in self.origins:
            if topic == self.topic:
                out.setdefault(partition, []).append((offset, offset + 1))
        return {p: _merge(spans) for p, spans in out.items()}

    def beyond(self, ends: dict[int, int]) -> dict[int, list[Span]]:
        """The decided inputs at or past ``ends[partition]``: the ones a worker has not met again yet."""
        out = {}
        for p, spans in self.spans().items():
            clipped = [(max(first, ends.get(p, 0)), end) for first, end in spans if end > ends.get(p, 0)]
            if clipped:
                out[p] = clipped
        return out

    def ends(self) -> dict[int, int]:
        """Partition -> one past the highest decided offset."""
        return {p: spans[-1][1] for p, spans in self.spans().items() if spans}


@dataclass(frozen=True)
class Frontier:
    """What a snapshot's worker had decided and written when the snapshot was taken.

    Every input of a raw partition below ``decided_end`` was decided and its envelope
    acknowledged; so were the ``pending`` spans past it (inputs recovery found decided that
    the worker had not consumed again yet). ``output_end`` is where each output topic ended.
    """

    decided_end: dict[int, int]              # raw partition -> end of the decided inputs
    output_end: dict[str, dict[int, int]]    # output topic -> partition -> end offset
    pending: dict[int, list[Span]] = field(default_factory=dict)

    def meta(self) -> dict:
        return {"decided_end_offsets": {str(p): o for p, o in self.decided_end.items()},
                "pending_decided_spans": {str(p): [list(s) for s in spans] for p, spans in self.pending.items()},
                "output_end_offsets": {t: {str(p): o for p, o in ends.items()} for t, ends in self.output_end.items()}}


@dataclass
class RecoveryResult:
    """What the worker needs before it consumes, and what recovery cost."""

    committed: dict[int, int] = field(default_factory=dict)   # raw partition -> next offset to consume
    skip: DecidedInputs | None = None                          # inputs already decided, to skip
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
        return {"committed": self.committed, "skip": len(skip), "scanned": self.scanned,
                "frontier": self.frontier, "quota_windows": self.quota_windows,
                "scores_replayed": self.scores_replayed, "snapshot": self.snapshot, "warmed": self.warmed,
                "unparseable_accepted": self.unparseable_accepted, "seconds": round(self.seconds, 3)}


def committed_offsets(kafka: KafkaSettings, group_id: str | None = None) -> dict[int, int]:
    """Partition -> the offset the group will consume next from the raw topic.

    A partition without a committed offset starts at its earliest available offset
    (the worker's ``auto_offset_reset`` is ``earliest``), so that is what it gets here.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(group_id=group_id or kafka.group_id, enable_auto_commit=False,
                             client_id="sieve-recovery", **client_kwargs(kafka))
    try:
        parts = consumer.partitions_for_topic(kafka.raw_topic)
        if not parts:
            raise ValueError(f"kafka.raw_topic {kafka.raw_topic!r} does not exist on {kafka.brokers}; "
                             "create it (the worker does on start) or fix the name")
        tps = [TopicPartition(kafka.raw_topic, p) for p in sorted(parts)]
        earliest = consumer.beginning_offsets(tps)
        out = {}
        for tp in tps:
            offset = consumer.committed(tp)
            out[tp.partition] = earliest[tp] if offset is None else max(offset, earliest[tp])
        return out
    finally:
        consumer.close()


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """Partition -> the offset the next record of ``topic`` will get."""
    return topics_end_offsets(kafka, [topic])[topic]


def topics_end_offsets(kafka: KafkaSettings, topics: list[str]) -> dict[str, dict[int, int]]:
    """Topic -> partition -> the offset its next record will get, asked over one connection."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, client_id="sieve-recovery-ends", **client_kwargs(kafka))
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        out: dict[str, dict[int, int]] = {t: {} for t in topics}
        for tp, off in (consumer.end_offsets(tps) if tps else {}).items():
            out[tp.topic][tp.partition] = off
        return out
    finally:
        consumer.close()


def scan_topic(kafka: KafkaSettings, topic: str, *, start: dict[int, int] | None = None,
               max_fetch_bytes: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """``(partition, offset, value)`` of every record of ``topic``, from ``start`` to its end as of the call.

    ``start`` maps partition to the first offset to read (default: the beginning; an
    offset the retention already deleted reads from the earliest record kept).

    Uses no consumer group (manual assignment), so it commits nothing.

    Raises:
        TimeoutError: no progress for ``SCAN_STALL_S`` seconds.
    """
    from kafka import KafkaConsumer, TopicPartition

    # check_crcs=False: kafka-python checks CRC32C in pure Python (without the optional crc32c
    # extension), which was 56% of recovery time; the broker validated every batch on write
    consumer = KafkaConsumer(enable_auto_commit=False, client_id="sieve-recovery-scan", check_crcs=False,
                             max_partition_fetch_bytes=max_fetch_bytes or kafka.max_fetch_bytes,
                             **client_kwargs(kafka))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return
        end = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        if start:
            earliest = consumer.beginning_offsets(tps)
            for tp in tps:
                if start.get(tp.partition, 0) > earliest[tp]:
                    consumer.seek(tp, min(start[tp.partition], end[tp]))
        todo = {tp for tp in tps if consumer.position(tp) < end[tp]}
        last_progress = time.monotonic()
        while todo:
            batch = consumer.poll(timeout_ms=SCAN_POLL_MS)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset < end[tp]:
                        yield rec.partition, rec.offset, rec.value
            for tp in list(todo):
                if consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > SCAN_STALL_S:
                raise TimeoutError(f"scanning {topic!r} made no progress for {SCAN_STALL_S:.0f}s "
                                   f"(partitions left: {sorted(tp.partition for tp in todo)})")
    finally:
        consumer.close()


def example_from_envelope(env: dict) -> Example | None:
    """The accepted example of an envelope, as the pipeline saw it (id, source, metadata kept)."""
    canonical = env.get("example")
    if not isinstance(canonical, dict):
        return None
    obj = {**canonical, "id": env.get("id"), "source": env.get("source"), "metadata": env.get("metadata")}
    parsed = parse(RawRecord(orjson.dumps(obj), dict(env.get("origin") or {})), max_message_bytes=1 << 40)
    if isinstance(parsed, ParseFailure):
        return None
    return dataclasses.replace(parsed, id=str(env.get("id")))


def snapshot_dir(state_dir: str | Path, kafka: KafkaSettings) -> Path:
    """Where the worker keeps dedup snapshots: one folder per accepted topic."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in kafka.accepted_topic)
    return Path(state_dir) / "dedup" / safe


def _restore_snapshot(kafka: KafkaSettings, pipeline: Pipeline, directory: Path | None, group_id: str,
                      result: RecoveryResult) -> tuple[dict[int, int], Frontier | None]:
    """Restores the snapshot if it belongs to this accepted topic.

    Returns the ``sieve.accepted`` offsets its dedup state covers, and its frontier when
    that can be trusted for the skip set (same raw topic, group and output topics, none
    of them recreated since).
    """
    if directory is None:
        return {}, None
    meta = snapshot_meta(directory)
    if not meta:
        return {}, None
    covered = {int(p): int(o) for p, o in (meta.get("accepted_end_offsets") or {}).items()}
    ends = topics_end_offsets(kafka, list(output_topics(kafka).values()))
    if meta.get("accepted_topic") != kafka.accepted_topic or \
            any(o > ends[kafka.accepted_topic].get(p, 0) for p, o in covered.items()):
        log.warning("recovery: snapshot in %s is not of this %s (topic recreated?); replaying everything",
                    directory, kafka.accepted_topic)
        return {}, None
    frontier = _frontier(kafka, meta, group_id, ends)
    if frontier is not None:
        result.quota_windows = _restore_quota_windows(pipeline, meta)
    restored = load_snapshot(pipeline.stages, directory)
    if not restored.complete:
        log.warning("recovery: snapshot lacks state for %s; replaying all of %s", restored.missing,
                    kafka.accepted_topic)
        return {}, frontier
    result.snapshot = str(restored.path)
    return covered, frontier


def _restore_quota_windows(pipeline: Pipeline, meta: dict) -> bool:
    """Refills the quota windows of the pipeline's threshold policies from the snapshot's meta.

    Returns whether they were restored (the tail's scores are then fed to them too)."""
    policies = policies_of(pipeline.stages)
    if not any(p.quotas() for p in policies):
        return False
    saved = meta.get("quota_windows")
    if not isinstance(saved, list) or len(saved) != len(policies):
        log.warning("recovery: the snapshot holds no quota windows for these thresholds; they start empty")
        return False
    for policy, state in zip(policies, saved):
        policy.restore(state)
    return True


def quota_state(pipeline: Pipeline) -> list[dict] | None:
    """What :func:`_restore_quota_windows` reads back: one state per threshold policy, or None without quotas."""
    policies = policies_of(pipeline.stages)
    return [p.state() for p in policies] if any(p.quotas() for p in policies) else None


def _replay_scores(pipeline: Pipeline, scored: dict[int, list[tuple]]) -> int:
    """Feeds the quality scores of envelopes written after the snapshot to the stages that
    observe them (quota windows), in input order per partition, partitions interleaved by offset."""
    observers = [s for s in pipeline.stages if hasattr(s, "observe")]
    rows = sorted((offset, partition, seq, kind, source, score)
                  for partition, heap in scored.items() for offset, seq, kind, source, score in heap)
    for *_, kind, source, score in rows:
        for stage in observers:
            stage.observe(kind, source, score)
    return len(rows)


def _frontier(kafka: KafkaSettings, meta: dict, group_id: str,
              ends: dict[str, dict[int, int]]) -> Frontier | None:
    """The snapshot's frontier, or None when it is missing or not of these topics and group.

    ``ends``: the output topics' end offsets now (a topic shorter than the snapshot says
    was recreated)."""
    decided, outputs = meta.get("decided_end_offsets"), meta.get("output_end_offsets")
    if not isinstance(decided, dict) or not isinstance(outputs, dict):
        return None  # a snapshot of an older Sieve: scan everything
    if meta.get("raw_topic") != kafka.raw_topic or meta.get("group_id") != group_id:
        log.warning("recovery: the snapshot was taken for %s as group %s, not %s as %s; scanning all outputs",
                    meta.get("raw_topic"), meta.get("group_id"), kafka.raw_topic, group_id)
        return None
    pending = meta.get("pending_decided_spans") or {}
    frontier = Frontier({int(p): int(o) for p, o in decided.items()},
                        {t: {int(p): int(o) for p, o in ends.items()} for t, ends in outputs.items()},
                        {int(p): [(int(a), int(b)) for a, b in spans] for p, spans in pending.items()})
    for topic in output_topics(kafka).values():
        if topic not in frontier.output_end:
            return None
        if any(o > ends[topic].get(p, 0) for p, o in frontier.output_end[topic].items()):
            log.warning("recovery: %s is shorter than when the snapshot was taken (recreated?); scanning all "
                        "outputs", topic)
            return None
    return frontier


def _check_raw_topic_not_recreated(kafka: KafkaSettings, decided: DecidedInputs) -> None:
    """Decided inputs past the raw topic's end mean it was deleted and created again while
    the outputs (or the snapshot) were kept: new inputs at those offsets would be skipped as
    decided, silently. Refuse to start instead."""
    if not len(decided):
        return
    ends = end_offsets(kafka, kafka.raw_topic)
    beyond = sorted((p, o - 1) for p, o in decided.ends().items() if o > ends.get(p, 0))
    if beyond:
        raise ValueError(
            f"the output topics name input(s) of {kafka.raw_topic!r} past its end (partition {beyond[0][0]} "
            f"offset {beyond[0][1]}, end {ends.get(beyond[0][0], 0)}): was the raw topic recreated? Recreate the "
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
    result = RecoveryResult(committed=committed_offsets(kafka, group_id), skip=DecidedInputs(kafka.raw_topic))
    covered, frontier = _restore_snapshot(kafka, pipeline, snapshot_dir(state_dir, kafka) if state_dir else None,
                                          group_id, result)
    if frontier is not None:
        result.frontier = True
        result.decided_end = dict(frontier.decided_end)
        for partition, end in frontier.decided_end.items():
            result.skip.add_range(partition, result.committed.get(partition, 0), end)
        for partition, spans in frontier.pending.items():
            for first, end in spans:
                result.skip.add_range(partition, max(first, result.committed.get(partition, 0)), end)
    pending: list[Example] = []
    # quality scores of the envelopes after the snapshot, for the restored quota windows:
    # raw partition -> the newest (offset, arrival, kind, source, score), at most one window's worth
    keep_scores = max((q.window for p in policies_of(pipeline.stages) for q in p.quotas().values()), default=0) \
        if result.quota_windows else 0
    scored: dict[int, list[tuple]] = {}
    arrival = itertools.count()  # ties on an input offset (a duplicate envelope) never compare the rest
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
            origin = env.get("origin") or {}
            if origin.get("topic") == kafka.raw_topic and "partition" in origin and "offset" in origin:
                in_partition, in_offset = int(origin["partition"]), int(origin["offset"])
                if in_offset >= result.committed.get(in_partition, 0):
                    result.skip.add((kafka.raw_topic, in_partition, in_offset))
                quality = (env.get("scores") or {}).get("quality")
                if keep_scores and isinstance(quality, (int, float)) and frontier is not None \
                        and out_offset >= frontier.output_end[topic].get(out_partition, 0):
                    example = env.get("example") or {}
                    row = (in_offset, next(arrival), "preference" if "chosen" in example else "sft",
                           env.get("source"), quality)
                    heap = scored.setdefault(in_partition, [])
                    (heapq.heappush if len(heap) < keep_scores else heapq.heappushpop)(heap, row)
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
    if scored:
        result.scores_replayed = _replay_scores(pipeline, scored)
    _check_raw_topic_not_recreated(kafka, result.skip)
    if result.unparseable_accepted:
        log.warning("recovery: %d accepted envelopes could not be parsed back; their content is not in the "
                    "dedup state", result.unparseable_accepted)
    result.seconds = time.perf_counter() - t0
    return result
