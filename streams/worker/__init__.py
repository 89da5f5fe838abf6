"""The stream worker, by job: the consume loop (:mod:`~streams.worker.loop`), publishing
(:mod:`~streams.worker.publish`), checkpointing (:mod:`~streams.worker.checkpoint`) and
what is decided and written (:mod:`~streams.worker.progress`)."""

from streams.worker.loop import EXIT_DELIVERY_FAILED, StreamWorker, raw_from_event, register_agent
from streams.worker.progress import Progress, RecentOrigins
from streams.worker.publish import Publisher

__all__ = ["EXIT_DELIVERY_FAILED", "Progress", "Publisher", "RecentOrigins", "StreamWorker", "raw_from_event",
           "register_agent"]
