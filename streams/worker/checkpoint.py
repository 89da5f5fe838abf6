"""Checkpointing: dedup snapshots between batches, saved with the worker's checkpoint.

A snapshot is taken every ``snapshot_interval_s`` and when the worker drains, only
between batches (when every output so far is acknowledged), on the pipeline's own
thread so no batch mutates the state meanwhile. Its metadata is the
:class:`~streams.recovery.Checkpoint` of the worker's frontier, which recovery reads back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from pathlib import Path

from quality.pipeline import Pipeline
from quality.state import save_snapshot
from streams.config import KafkaSettings
from streams.recovery import Checkpoint
from streams.worker.progress import Progress

log = logging.getLogger(__name__)


class Checkpointer:
    """Writes the pipeline's state and the checkpoint to ``directory``.

    Args:
        directory: the snapshot folder (None: no snapshots).
        interval_s: seconds between snapshots; 0 = never.
        output_topic_ids: the output topics' Kafka ids recovery found; a snapshot records
            them, so the next recovery sees an output topic recreated since.
    """

    def __init__(self, kafka: KafkaSettings, directory: Path | None, interval_s: float,
                 output_topic_ids: dict[str, str | None] | None = None) -> None:
        self.kafka, self.directory, self.interval_s = kafka, directory, interval_s
        self.output_topic_ids = dict(output_topic_ids or {})  # as recovery found them; a snapshot records them
        self._last = time.monotonic()
        self.in_batch = False  # a batch decided but not yet fully acknowledged

    async def maybe_snapshot(self, pipeline: Pipeline, progress: Progress, executor: Executor,
                             force: bool = False) -> None:
        """Snapshot when due (or ``force``), unless a batch is in flight or snapshots are off."""
        if self.directory is None or self.interval_s <= 0 or self.in_batch:
            return  # mid-batch the state may hold examples whose envelopes are not out yet
        if not force and time.monotonic() - self._last < self.interval_s:
            return
        meta = Checkpoint.of(self.kafka, progress.frontier(), self.output_topic_ids).to_meta()
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        self._last = time.monotonic()
        try:
            path = await loop.run_in_executor(executor, save_snapshot, pipeline.stages, self.directory, meta)
        except Exception:  # noqa: BLE001 - a snapshot is a shortcut; the accepted topic stays the truth
            log.exception("dedup snapshot to %s failed; recovery will replay more of %s", self.directory,
                          self.kafka.accepted_topic)
            return
        log.info("dedup snapshot %s in %.2fs", path.name, time.perf_counter() - t0)
