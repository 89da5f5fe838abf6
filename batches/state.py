"""Durable bookkeeping of the batch assembler: append-only JSONL, atomic writes, the batch window.

Everything here is read back after a crash: :func:`read_jsonl` drops a torn last
line, :func:`write_atomic` replaces a file in one rename, and :class:`Window`
rebuilds its counts from the lines of ``open.jsonl``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import orjson

from batches.manifest import DUPLICATE_REASONS

TIMELINE_BIN_S = 60


class StateLockedError(RuntimeError):
    """Another process owns the batch state directory."""


def lock_state(state: Path, root: Path):
    """Takes the exclusive lock of a batch state directory (``state/lock``, with our pid); returns its file.

    Raises:
        StateLockedError: another process holds it (its pid is in the message).
    """
    fh = open(state / "lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        owner = fh.read().strip() or "unknown"
        fh.close()
        raise StateLockedError(f"the batch directory {root} is in use by another process (pid {owner}); "
                               "stop it, or ask it to cut with `sieve batches cut` (control topic)") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename, fsynced, so a reader sees the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_jsonl(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The complete lines of an append-only JSONL file; a torn last line (a crash mid-append) is dropped.

    With ``repair`` the file is truncated back to its last complete line, so the
    next append starts on a fresh line.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as fh:
            fh.truncate(end)
            os.fsync(fh.fileno())
    return [orjson.loads(line) for line in data[:end].splitlines() if line.strip()]


class Window:
    """What the pipeline decided between two closes: decisions, reasons, redeliveries."""

    def __init__(self, start: float | None = None) -> None:
        self.start = start
        self.decisions: Counter = Counter()
        self.reasons: Counter = Counter()        # deciding reason of rejected and dead-letter envelopes
        self.timeline: Counter = Counter()       # (minute bin, reason) -> count
        self.redelivered = 0                     # accepted ids already open or batched
        self.invalid = 0                         # accepted envelopes without a usable example

    def replay(self, line: Mapping[str, Any]) -> None:
        t = line["t"]
        if self.start is None:
            self.start = t
        if "r" in line:
            decision, reason = line["r"]
            self.decisions[decision] += 1
            self.reasons[reason] += 1
            self.timeline[(int(t // TIMELINE_BIN_S), reason)] += 1
        elif "e" in line:
            self.decisions["accepted"] += 1
        elif line.get("x") == "redelivered":
            self.redelivered += 1
        elif line.get("x") == "invalid":
            self.invalid += 1

    def to_dict(self, end: float) -> dict[str, Any]:
        decided = sum(self.decisions.values())
        seen = decided + self.redelivered
        rates = {r: round(self.reasons[r] / decided, 6) if decided else 0.0 for r in DUPLICATE_REASONS}
        rates["redelivered"] = round(self.redelivered / seen, 6) if seen else 0.0
        return {"start": iso(self.start if self.start is not None else end), "end": iso(end),
                "decisions": dict(self.decisions), "reasons": dict(self.reasons.most_common()),
                "duplicate_rates": rates, "redelivered": self.redelivered, "invalid_accepted": self.invalid}

    def timeline_rows(self) -> list[tuple[float, str, int]]:
        return sorted((b * TIMELINE_BIN_S, r, n) for (b, r), n in self.timeline.items())


def read_ledger(root: str | Path) -> list[dict[str, Any]]:
    """Closed batches of a batch directory, read without taking its lock (for ``sieve batches list``)."""
    ledger = read_jsonl(Path(root) / "_state" / "ledger.jsonl")
    published = {e["published"] for e in ledger if "published" in e}
    return [{**e, "published": e["batch_id"] in published} for e in ledger if "batch_id" in e]


def example_key(env: Mapping[str, Any]) -> str:
    """What makes an accepted envelope one example for batching: its id and its content.

    Sieve does not require producers' ids to be unique; keyed by id alone, a different
    example under a reused id would be taken for a redelivery and never batched. A
    redelivered envelope has the same id and content, so it still batches once.
    """
    digest = hashlib.blake2b(orjson.dumps(env.get("example"), option=orjson.OPT_SORT_KEYS), digest_size=8)
    return f"{env['id']}\x1f{digest.hexdigest()}"


def open_batch_summary(root: str | Path) -> dict[str, Any]:
    """Examples waiting in the open batch of a batch directory, read without its lock."""
    lines = read_jsonl(Path(root) / "_state" / "open.jsonl")
    ledger = read_ledger(root)
    last = max((e["seq"] for e in ledger), default=0)
    if not lines or lines[0].get("open_after", -1) < last:
        return {"examples": 0, "oldest": None}
    batched: set[str] = set()
    ids, oldest = set(), None
    for line in lines[1:]:
        if "e" in line:
            ids.add(example_key(line["e"]))
            oldest = line["t"] if oldest is None else oldest
    if ids:  # ids of a crashed close are already batched; count only what is really open
        for e in ledger:
            batched.update(read_jsonl(Path(root) / "_state" / "ids" / f"{e['batch_id']}.jsonl"))
    return {"examples": len(ids - batched), "oldest": iso(oldest) if oldest is not None else None}
