"""What the review page shows, indexed: envelopes by id, reason, source and batch; first copies of
duplicates; benchmark items of contaminated examples; batches and their samples; overrides.

A source (:class:`~streams.review.files.FileSource` or
:class:`~streams.review.topics.KafkaSource`) loads plain records; :class:`ReviewStore`
indexes them and answers the pages' questions. Reloads replace the whole index at once
(under a lock), so a page never sees half of one load and half of another.

**Batch windows.** A rejection belongs to no batch, but to the window of one: the
decisions a batcher saw while that batch was open. The store orders every envelope by
input (file mode: the input file, in the order files first appear in the outputs, then
the line; stream mode: the raw record's timestamp, partition and offset) and puts each
in the window of the next accepted example that a batch holds. In file mode this is the
batcher's own order; in stream mode the batcher reads the accepted and rejected topics
as they come, so a window's edges can be off by what was in flight.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson

from quality.overrides import OverrideBook

DUPLICATE_STAGES = {"duplicate_exact": "exact_dedup", "duplicate_near": "near_dedup",
                    "duplicate_semantic": "semantic_dedup"}
CONTAMINATED = "contaminated"
#: Rows of a batch shown as its accepted sample.
SAMPLE_ROWS = 12


def example_text(example: Any) -> str:
    """All the text of a canonical example, for search and snippets."""
    if not isinstance(example, Mapping):
        return ""
    parts = []
    for key in ("messages", "prompt", "chosen", "rejected"):
        for m in example.get(key) or []:
            if isinstance(m, Mapping):
                parts.append(str(m.get("content", "")))
    return "\n".join(parts)


def _order_key(env: Mapping[str, Any], file_rank: dict[str, int]) -> tuple:
    o = env.get("origin") or {}
    if "file" in o:
        return (0, file_rank.setdefault(str(o["file"]), len(file_rank)), o.get("line") or 0, 0)
    ts = o.get("timestamp")
    return (1, ts if isinstance(ts, (int, float)) else 0, o.get("partition") or 0, o.get("offset") or 0)


def batch_rows(manifest: Mapping[str, Any], batches_dir: Path | None) -> list[dict[str, Any]]:
    """The JSONL shard rows of a batch, read from the manifest's local paths (or ``batches_dir``)."""
    rows = []
    for f in manifest.get("files") or []:
        if f.get("format") != "json" or f.get("kind") not in ("sft", "preference"):
            continue
        candidates = [Path(f["local_path"])] if f.get("local_path") else []
        if batches_dir is not None:
            candidates.append(batches_dir / str(manifest.get("batch_id")) / f["path"])
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            continue
        for line in path.read_bytes().splitlines():
            if line.strip():
                row = orjson.loads(line)
                row["_split"] = f.get("split")
                rows.append(row)
    return rows


def sample(rows: Iterable[Mapping[str, Any]], n: int = SAMPLE_ROWS) -> list[Mapping[str, Any]]:
    """``n`` rows chosen by a hash of their id: a fixed sample, not the first rows of the batch."""
    return sorted(rows, key=lambda r: hashlib.blake2b(str(r.get("id")).encode("utf-8", "surrogatepass"),
                                                      digest_size=8).digest())[:n]


class ReviewStore:
    """The review's index over one source.

    Args:
        source: a ``FileSource`` or ``KafkaSource``.
        benchmarks: benchmark items by id (``quality.decont.ngram.load_benchmarks``).
        refresh_s: stream mode reloads when the data is older than this (file mode
            reloads when a file changes).
        clock: seconds (tests pass their own).
    """

    def __init__(self, source: Any, *, benchmarks: Mapping[str, Any] | None = None, refresh_s: float = 30.0,
                 clock=time.monotonic) -> None:
        self.source, self.benchmarks, self.refresh_s, self.clock = source, dict(benchmarks or {}), refresh_s, clock
        self._lock = threading.Lock()
        self._version: Any = object()
        self._loaded_at = -float("inf")
        self.data: dict[str, Any] = {}

    # ------------------------------------------------------------------ loading

    def refresh(self, force: bool = False) -> None:
        """Reload if the source changed (file mode) or the data is older than ``refresh_s`` (stream mode)."""
        with self._lock:
            version = self.source.version()
            stale = self.clock() - self._loaded_at >= self.refresh_s if version is None else version != self._version
            if force or stale:
                self.data = self._index(self.source.load())
                self._version, self._loaded_at = version, self.clock()

    def _index(self, raw: dict[str, Any]) -> dict[str, Any]:
        envelopes = [e for e in raw["envelopes"] if isinstance(e.get("id"), str)]
        by_id: dict[str, list[dict]] = defaultdict(list)
        for env in envelopes:
            by_id[env["id"]].append(env)
        batches, member = {}, {}
        for manifest in raw["batches"]:
            rows = batch_rows(manifest, getattr(self.source, "batches_dir", None))
            batches[manifest["batch_id"]] = {"manifest": manifest, "rows": rows}
            for row in rows:
                member.setdefault(str(row.get("id")), manifest["batch_id"])
        file_rank: dict[str, int] = {}
        ordered = sorted(envelopes, key=lambda e: _order_key(e, file_rank))
        window: dict[int, str | None] = {}
        current = None
        for env in reversed(ordered):  # each envelope falls in the window of the next batched example
            if env.get("decision") == "accepted" and env["id"] in member:
                current = member[env["id"]]
            window[id(env)] = current
        for env in envelopes:
            env["_batch"] = member.get(env["id"]) if env.get("decision") == "accepted" else None
            env["_window"] = window.get(id(env))
        book, errors = OverrideBook.from_records(raw["overrides"])
        return {"envelopes": ordered, "by_id": dict(by_id), "batches": batches, "truncated": raw["truncated"],
                "summary": raw.get("summary"), "overrides": raw["overrides"], "override_errors": errors,
                "book": book, "loaded_at": time.time()}

    def note_override(self, record: dict[str, Any]) -> None:
        """Shows an override just written before the next reload reads it back."""
        with self._lock:
            if record not in self.data["overrides"]:
                self.data["overrides"] = [*self.data["overrides"], record]
                self.data["book"], self.data["override_errors"] = OverrideBook.from_records(self.data["overrides"])

    # ------------------------------------------------------------------ questions

    def counts(self) -> dict[str, Counter]:
        out = {"decision": Counter(), "reason": Counter(), "source": Counter(), "window": Counter()}
        for env in self.data["envelopes"]:
            out["decision"][env.get("decision")] += 1
            for r in env.get("reasons") or []:
                out["reason"][r] += 1
            out["source"][str(env.get("source") or "unknown")] += 1
            if env.get("decision") != "accepted" and env.get("_window"):
                out["window"][env["_window"]] += 1
        return out

    def query(self, *, decision: str = "", reason: str = "", source: str = "", batch: str = "", q: str = "",
              offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """Envelopes matching every filter given (empty = any), and how many match in all.

        ``batch`` matches accepted examples the batch holds and the rejections and dead
        letters of its window; ``q`` is a case-insensitive substring of the id or the text.
        """
        needle = q.lower()
        hits = []
        for env in self.data["envelopes"]:
            if decision and env.get("decision") != decision:
                continue
            if reason and reason not in (env.get("reasons") or []):
                continue
            if source and str(env.get("source") or "unknown") != source:
                continue
            if batch and batch not in (env.get("_batch"), env.get("_window") if env.get("decision") != "accepted"
                                       else None):
                continue
            if needle and needle not in env["id"].lower() and needle not in example_text(env.get("example")).lower():
                continue
            hits.append(env)
        return hits[offset:offset + limit], len(hits)

    def by_id(self, ex_id: str) -> list[dict[str, Any]]:
        return list(self.data["by_id"].get(ex_id, []))

    def first_copy(self, env: Mapping[str, Any]) -> tuple[str, str, list[dict[str, Any]]] | None:
        """For a duplicate: (its reason, the first copy's id, the first copy's accepted envelopes)."""
        for reason in env.get("reasons") or []:
            stage = DUPLICATE_STAGES.get(reason)
            first = (env.get("details") or {}).get(stage) if stage else None
            if first:
                copies = [e for e in self.by_id(first) if e.get("decision") == "accepted"]
                if not copies:
                    found = self.source.find_accepted(first)
                    copies = [found] if found else []
                return reason, first, copies
        return None

    def benchmark_item(self, env: Mapping[str, Any]) -> tuple[str, Any] | None:
        """For a contaminated example: (the benchmark item's id, the item or None when not loaded)."""
        if CONTAMINATED not in (env.get("reasons") or []):
            return None
        item_id = (env.get("details") or {}).get("decontam")
        if not item_id:
            return None
        return item_id, self.benchmarks.get(item_id)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        return self.data["batches"].get(batch_id)

    def overrides_for(self, ex_id: str) -> list[dict[str, Any]]:
        return [r for r in self.data["overrides"] if r.get("id") == ex_id]
