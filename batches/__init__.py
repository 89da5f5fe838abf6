"""Fine-tuning batches: accepted examples in, closed batch directories with manifests out.

Built on :mod:`quality` (records, the refusal patterns) and never imported by it. The
stream driver is ``streams/batcher.py``; file mode cuts batches through ``sieve curate --batches``.
"""

from batches.assembler import TRIGGERS, BatchAssembler, BatchSettings, StateLockedError
from batches.state import open_batch_summary, read_ledger

__all__ = ["TRIGGERS", "BatchAssembler", "BatchSettings", "StateLockedError", "open_batch_summary", "read_ledger"]
