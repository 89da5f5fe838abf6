"""Start-up recovery of a stream worker, by job.

* :mod:`~streams.recovery.recover`: the orchestration (:func:`recover`), read first;
* :mod:`~streams.recovery.checkpoint`: the snapshot's metadata, written and read by one type;
* :mod:`~streams.recovery.decided`: the skip set of inputs already decided;
* :mod:`~streams.recovery.kafka_io`: committed and end offsets, output topics scanned;
* :mod:`~streams.recovery.envelopes`: envelopes back into examples and scores;
* :mod:`~streams.recovery.quotas`: the tail's scores replayed into quota windows.
"""

from streams.recovery.checkpoint import Checkpoint, Frontier, snapshot_dir
from streams.recovery.decided import DecidedInputs, Origin, Span, envelope_origin
from streams.recovery.envelopes import example_from_envelope
from streams.recovery.kafka_io import committed_offsets, end_offsets, scan_topic, topic_ids, topics_end_offsets
from streams.recovery.recover import RecoveryResult, recover

__all__ = ["Checkpoint", "DecidedInputs", "Frontier", "Origin", "RecoveryResult", "Span", "committed_offsets",
           "end_offsets", "envelope_origin", "example_from_envelope", "recover", "scan_topic", "snapshot_dir",
           "topic_ids", "topics_end_offsets"]
