"""Removal and expiry for indexes that never delete rows, only mark them dead.

Both the LSH index (``quality/dedup/minhash.py``) and the FAISS vector index
(``quality/dedup/semantic.py``) keep a row per stored example: ``ids`` (row -> key),
``row_of`` (key -> row of a live entry) and ``alive`` (a boolean per row). A dead row
stays in the index structures but never matches.
"""

from __future__ import annotations

import numpy as np


class TombstoneRows:
    """``remove`` and ``expire`` over ``ids``, ``row_of`` and ``alive``.

    Subclasses set those three and implement :meth:`_row_times`.
    """

    ids: list[str]
    row_of: dict[str, int]
    alive: np.ndarray

    def _row_times(self) -> np.ndarray:
        """When each stored row was added (seconds since the epoch), one per row."""
        raise NotImplementedError

    def remove(self, key: str) -> bool:
        """Forgets one key (a tombstone: its row stays but never matches). True if it was stored."""
        row = self.row_of.pop(key, None)
        if row is None:
            return False
        self.alive[row] = False
        return True

    def expire(self, before: float) -> int:
        """Forgets every row added before time ``before``; returns how many."""
        times = self._row_times()
        rows = np.flatnonzero(self.alive[: len(times)] & (times < before))
        for r in rows.tolist():
            self.row_of.pop(self.ids[r], None)
        self.alive[rows] = False
        return len(rows)
