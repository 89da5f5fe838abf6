"""The stream side of fine-tuning batches: ``sieve.accepted`` in, batches and ``sieve.batches`` out.

One :class:`Batcher` process (a kafka-python consumer in its own group,
``<group_id>-batcher``) reads ``sieve.accepted``, ``sieve.rejected`` (for the
window statistics of each batch) and ``sieve.control`` (operators' cut requests, and
the overrides of ``sieve review``: see :mod:`batches.overrides`), feeds a
:class:`batches.assembler.BatchAssembler`, and announces every closed batch
by publishing its manifest on ``sieve.batches`` with the batch id as key.

Delivery: each poll's records are fed and fsynced into the batch state, the
manifests of closed batches are published and acknowledged (and recorded in the
ledger), and only then are the input offsets committed. A crash at any point
redelivers input the state already holds (the assembler ignores ids it has) or
republishes an announcement on the next start (consumers key on the batch id).
Run exactly one batcher per batch directory; its state lock refuses a second one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import orjson

from batches.assembler import BatchAssembler
from quality.overrides import OVERRIDE_TYPE, OverrideError, parse_override
from streams.config import Settings
from streams.metrics.batcher import BatchMetrics
from streams.topics import client_kwargs, ensure_topics

log = logging.getLogger(__name__)

#: Seconds the producer waits for the broker to acknowledge an announcement.
PUBLISH_TIMEOUT_S = 30.0
CUT_COMMAND = "cut"


def batcher_group(settings: Settings) -> str:
    return f"{settings.kafka.group_id}-batcher"


def control_message(requested_by: str, note: str | None = None, now: float | None = None) -> dict[str, Any]:
    """The value ``sieve batches cut`` writes on the control topic."""
    return {"command": CUT_COMMAND, "requested_at": time.time() if now is None else now,
            "requested_by": requested_by, "note": note}


class Batcher:
    """Consumes decisions, cuts batches, announces them. See the module docstring for delivery.

    Args:
        settings: Kafka (brokers, topics, credentials, group) and batch settings.
        registry: where the ``sieve_finetune_*`` metrics go (None: no metrics).
        assembler: the batch state (default: one from ``settings.batches``).
        poll_timeout_s: longest wait for input; also how often the age trigger is checked.
    """

    def __init__(self, settings: Settings, *, registry: Any = None, assembler: BatchAssembler | None = None,
                 poll_timeout_s: float = 1.0) -> None:
        if poll_timeout_s <= 0:
            raise ValueError(f"poll_timeout_s must be > 0, got {poll_timeout_s!r}")
        self.settings = settings
        self.kafka = settings.kafka
        self.poll_timeout_s = poll_timeout_s
        self.assembler = assembler if assembler is not None else BatchAssembler.from_settings(settings.batches)
        self.metrics = BatchMetrics(registry) if registry is not None else None
        self.consumer: Any = None
        self.producer: Any = None
        self.ready = False

    def start(self) -> None:
        """Create missing topics, connect, and announce batches a previous run closed but did not publish."""
        from kafka import KafkaConsumer, KafkaProducer

        k = self.kafka
        ensure_topics(k, [k.accepted_topic, k.rejected_topic, k.batches_topic, k.control_topic])
        conn = client_kwargs(k)
        self.producer = KafkaProducer(acks="all", client_id="sieve-batcher", max_request_size=k.max_output_bytes,
                                      **conn)
        self.publish_pending()
        self.consumer = KafkaConsumer(group_id=batcher_group(self.settings), client_id="sieve-batcher",
                                      enable_auto_commit=False, auto_offset_reset="earliest",
                                      # the deciders write in transactions: never batch an aborted one
                                      isolation_level="read_committed",
                                      max_partition_fetch_bytes=k.max_fetch_bytes, **conn)
        # a new group reads the control topic from its start too: BatchAssembler.request_close
        # ignores cuts requested before the last close (or before the state directory existed)
        self.consumer.subscribe([k.accepted_topic, k.rejected_topic, k.control_topic])
        self.ready = True
        log.info("batcher consuming %s, %s and %s as group %s; batches in %s", k.accepted_topic, k.rejected_topic,
                 k.control_topic, batcher_group(self.settings), self.assembler.root)

    def publish_pending(self) -> list[str]:
        """Publish every closed, unannounced manifest; wait for each acknowledgement; return the batch ids."""
        done = []
        for manifest in self.assembler.unpublished():
            batch_id = manifest["batch_id"]
            value = orjson.dumps(manifest)
            self.producer.send(self.kafka.batches_topic, key=batch_id.encode(), value=value).get(
                timeout=PUBLISH_TIMEOUT_S)
            self.assembler.mark_published(batch_id, self.kafka.batches_topic)
            log.info("announced batch %s on %s (%d examples)", batch_id, self.kafka.batches_topic,
                     manifest["counts"]["examples"])
            done.append(batch_id)
        return done

    def _feed(self, topic: str, records: list[Any], closed: list[dict[str, Any]]) -> None:
        if topic == self.kafka.control_topic:
            for rec in records:
                try:
                    msg = orjson.loads(rec.value)
                except orjson.JSONDecodeError:
                    log.warning("ignoring a control message that is not JSON (offset %d)", rec.offset)
                    continue
                if isinstance(msg, dict) and msg.get("type") == OVERRIDE_TYPE:  # `sieve review`: batches/overrides.py
                    self._override(msg, rec.offset, closed)
                    continue
                if not isinstance(msg, dict) or msg.get("command") != CUT_COMMAND:
                    log.warning("ignoring unknown control message at offset %d: %.100r", rec.offset, msg)
                    continue
                requested_at = msg.get("requested_at")
                if not isinstance(requested_at, (int, float)):
                    requested_at = rec.timestamp / 1000.0
                manifest = self.assembler.request_close(requested_at)
                log.info("cut requested by %s: %s", str(msg.get("requested_by"))[:80],
                         f"closed {manifest['batch_id']}" if manifest else "nothing to close")
                if manifest:
                    closed.append(manifest)
            return
        envelopes = []
        for rec in records:
            try:
                env = orjson.loads(rec.value)
            except orjson.JSONDecodeError:
                env = None
            if not isinstance(env, dict):
                log.warning("%s offset %d is not a JSON envelope; counted as invalid", topic, rec.offset)
                env = {"decision": "accepted", "id": None}
            elif topic == self.kafka.accepted_topic:
                env.setdefault("decision", "accepted")
            envelopes.append(env)
        closed.extend(self.assembler.feed(envelopes))

    def _override(self, msg: dict[str, Any], offset: int, closed: list[dict[str, Any]]) -> None:
        """An operator's override: force-reject leaves or revokes, force-accept joins the open batch."""
        try:
            ov = parse_override(msg)
        except OverrideError as exc:
            log.warning("ignoring an invalid override on the control topic (offset %d): %s", offset, exc)
            return
        closed.extend(self.assembler.apply_override(ov))

    def run_once(self) -> list[dict[str, Any]]:
        """One poll: feed, close on count/age/request, make state durable, publish, then commit."""
        polled = self.consumer.poll(timeout_ms=int(self.poll_timeout_s * 1000))
        closed: list[dict[str, Any]] = []
        for tp, records in polled.items():
            self._feed(tp.topic, records, closed)
        aged = self.assembler.tick()
        if aged:
            closed.append(aged)
        self.assembler.flush()
        self.publish_pending()
        if polled:
            self.consumer.commit()
        if self.metrics is not None:
            for manifest in closed:
                self.metrics.observe_closed(manifest)
            self.metrics.observe_open(self.assembler.open_count, self.assembler.age_s())
            self.metrics.redelivered.inc(self.assembler.redelivered_total - self._redelivered_seen)
            self._redelivered_seen = self.assembler.redelivered_total
        return closed

    _redelivered_seen = 0

    def run(self, stop: threading.Event | None = None,
            on_closed: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Poll until ``stop`` is set (or Ctrl-C); the open batch stays open for the next start."""
        stop = stop or threading.Event()
        if self.consumer is None:
            self.start()
        try:
            while not stop.is_set():
                for manifest in self.run_once():
                    if on_closed is not None:
                        on_closed(manifest)
        finally:
            self.close()

    def close(self) -> None:
        """Flush the state, leave the group and release the batch directory."""
        self.ready = False
        try:
            if self.consumer is not None:
                self.consumer.close(autocommit=False)
            if self.producer is not None:
                self.producer.close()
        finally:
            self.consumer = self.producer = None
            self.assembler.shutdown()
