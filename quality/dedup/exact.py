"""Exact duplicates: the same normalized content as an example accepted earlier."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

from quality.normalize import content_key_text
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import KEEP, StatefulStage, Verdict
from quality.state import example_time


def content_key(ex: Example) -> bytes:
    """A 16-byte digest of the case- and whitespace-folded content, roles included.

    Ids, sources and metadata are not part of it: the same text logged twice by two
    apps is one example.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(ex.kind.encode())
    for part, msgs in (("p", ex.messages), ("c", ex.chosen), ("r", ex.rejected)):
        for m in msgs:
            h.update(f"\x1e{part}:{m.role}\x1f".encode())
            h.update(content_key_text(m.content).encode("utf-8", "surrogatepass"))
    return h.digest()


def content_hash(ex: Example) -> bytes:
    """:func:`content_key`, computed once per example and kept in its typed features."""
    if ex.features.content_hash is None:
        ex.features.content_hash = content_key(ex)
    return ex.features.content_hash


ENTRY_SEP = "\x1f"


def entry_key(ex: Example) -> str:
    """How the near and semantic indexes name an accepted example: its id and its content.

    Ids need not be unique (two files numbered from 1, two apps): an index keyed by id
    alone would take a different example under a known id for a replay of the first and
    skip it. With the content in the key only a true replay (same id, same content)
    matches itself.
    """
    return f"{ex.id}{ENTRY_SEP}{content_hash(ex).hex()}"


def id_of_entry(key: str | None) -> str | None:
    """The example id inside an :func:`entry_key` (what envelopes name as the duplicate)."""
    return None if key is None else key.split(ENTRY_SEP, 1)[0]


class ExactIndex:
    """Content keys of accepted examples, mapped to the id that was accepted first, and the
    time each key was added (so old keys can expire).

    Args:
        clock: time of an :meth:`add` that names none (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._ids: dict[bytes, str] = {}
        self.added: dict[bytes, float] = {}

    def add(self, key: bytes, ex_id: str, at: float | None = None) -> None:
        if key not in self._ids:  # idempotent: the first id (and its time) stays
            self._ids[key] = ex_id
            self.added[key] = self.clock() if at is None else at

    def query(self, key: bytes) -> str | None:
        return self._ids.get(key)

    def remove_id(self, ex_id: str) -> int:
        keys = [k for k, v in self._ids.items() if v == ex_id]
        for k in keys:
            del self._ids[k]
            self.added.pop(k, None)
        return len(keys)

    def expire(self, before: float) -> int:
        old = [k for k, t in self.added.items() if t < before]
        for k in old:
            self._ids.pop(k, None)
            del self.added[k]
        return len(old)

    def __contains__(self, key: bytes) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def snapshot(self) -> dict[str, str]:
        return {k.hex(): v for k, v in self._ids.items()}

    def times(self) -> dict[str, float]:
        return {k.hex(): t for k, t in self.added.items()}

    @classmethod
    def restore(cls, data: Mapping[str, str], times: Mapping[str, float] | None = None,
                clock: Callable[[], float] = time.time) -> "ExactIndex":
        """The index :meth:`snapshot` (and :meth:`times`) describe; keys without a time get now."""
        index = cls(clock)
        index._ids = {bytes.fromhex(k): v for k, v in data.items()}
        now = clock()
        index.added = {k: float((times or {}).get(k.hex(), now)) for k in index._ids}
        return index


#: The name of :class:`ExactIndex` when only it remembered times; every index does now.
TimedExactIndex = ExactIndex


@register(rank=90)
class ExactDedup(StatefulStage):
    """Rejects an example whose content key was accepted before, or earlier in the batch."""

    name = "exact_dedup"
    reasons = frozenset({Reason.DUPLICATE_EXACT})
    provides = frozenset({"content_hash"})

    def __init__(self, index: ExactIndex | None = None) -> None:
        super().__init__()
        self.index = index if index is not None else ExactIndex()

    def annotate(self, batch: Sequence[Example]) -> None:
        for ex in batch:
            content_hash(ex)

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        in_batch: dict[bytes, int] = {}  # key -> position of its first copy in this batch
        verdicts = []
        for pos, ex in enumerate(batch):
            key = content_hash(ex)
            first = self.index.query(key)
            if first is not None:
                verdicts.append(Verdict(Reason.DUPLICATE_EXACT, detail=first))
            elif key in in_batch:
                j = in_batch[key]
                verdicts.append(Verdict(Reason.DUPLICATE_EXACT, detail=batch[j].id, in_batch_of=j))
            else:
                in_batch[key] = pos
                verdicts.append(KEEP)
        return verdicts

    def commit(self, accepted: Sequence[Example]) -> None:
        self.add(accepted)

    def add(self, examples: Iterable[Example]) -> None:
        for ex in examples:
            self.index.add(content_hash(ex), ex.id, example_time(ex, self.index.clock))

    def snapshot(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "exact.json").write_bytes(orjson.dumps(self.index.snapshot()))
        (directory / "added.json").write_bytes(orjson.dumps(self.index.times()))

    def restore(self, directory: Path) -> None:
        data = orjson.loads((directory / "exact.json").read_bytes())
        added = directory / "added.json"
        times = orjson.loads(added.read_bytes()) if added.exists() else {}
        self.index = ExactIndex.restore(data, times, self.index.clock)

    def expire(self, before: float) -> int:
        return self.index.expire(before)

    def remove(self, ex_id: str) -> int:
        return self.index.remove_id(ex_id)

    def size(self) -> int:
        return len(self.index)

    def version(self) -> Mapping[str, Any]:
        return {"key": "blake2b-128(casefold, whitespace-collapsed roles+content)"}
