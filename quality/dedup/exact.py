"""Exact duplicates: the same normalized content as an example accepted earlier."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, Sequence

from quality.normalize import content_key_text
from quality.reasons import Reason
from quality.records import Example
from quality.stage import KEEP, Stage, Verdict


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


ENTRY_SEP = "\x1f"


def entry_key(ex: Example) -> str:
    """How the near and semantic indexes name an accepted example: its id and its content.

    Ids need not be unique (two files numbered from 1, two apps): an index keyed by id
    alone would take a different example under a known id for a replay of the first and
    skip it. With the content in the key only a true replay (same id, same content)
    matches itself.
    """
    return f"{ex.id}{ENTRY_SEP}{content_key(ex).hex()}"


def id_of_entry(key: str | None) -> str | None:
    """The example id inside an :func:`entry_key` (what envelopes name as the duplicate)."""
    return None if key is None else key.split(ENTRY_SEP, 1)[0]


class ExactIndex:
    """Content keys of accepted examples, mapped to the id that was accepted first."""

    def __init__(self) -> None:
        self._ids: dict[bytes, str] = {}

    def add(self, key: bytes, ex_id: str) -> None:
        self._ids.setdefault(key, ex_id)  # idempotent: the first id stays

    def query(self, key: bytes) -> str | None:
        return self._ids.get(key)

    def remove_id(self, ex_id: str) -> int:
        keys = [k for k, v in self._ids.items() if v == ex_id]
        for k in keys:
            del self._ids[k]
        return len(keys)

    def __contains__(self, key: bytes) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def snapshot(self) -> dict[str, str]:
        return {k.hex(): v for k, v in self._ids.items()}

    @classmethod
    def restore(cls, data: Mapping[str, str]) -> "ExactIndex":
        index = cls()
        index._ids = {bytes.fromhex(k): v for k, v in data.items()}
        return index


class ExactDedup(Stage):
    """Rejects an example whose content key was accepted before, or earlier in the batch."""

    name = "exact_dedup"
    reasons = frozenset({Reason.DUPLICATE_EXACT})

    def __init__(self, index: ExactIndex | None = None) -> None:
        super().__init__()
        self.index = index if index is not None else ExactIndex()

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        in_batch: dict[bytes, int] = {}  # key -> position of its first copy in this batch
        verdicts = []
        for pos, ex in enumerate(batch):
            key = content_key(ex)
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
            self.index.add(content_key(ex), ex.id)

    def version(self) -> Mapping[str, Any]:
        return {"key": "blake2b-128(casefold, whitespace-collapsed roles+content)"}
