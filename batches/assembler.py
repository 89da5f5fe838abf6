"""Fine-tuning batches: accepted examples accumulate until a count, an age or a request closes them.

:class:`BatchAssembler` is fed envelopes (accepted ones join the open batch; rejected
and dead-letter ones only count towards the batch window's statistics) and closes
the open batch when it holds ``max_examples``, when its oldest example is
``max_age_s`` old (:meth:`BatchAssembler.tick`), or on :meth:`~BatchAssembler.request_close`.
A closed batch is a directory ``<dir>/<batch id>/`` with shard files, ``report.html``
and ``manifest.json`` (see :mod:`batches.manifest` and ``docs/batches.md``).

State lives in ``<dir>/_state/`` and survives restarts:

* ``open.jsonl``: append-only; every envelope fed since the last close (fsynced by
  :meth:`~BatchAssembler.flush`; a stream driver commits its offsets only after it);
* ``ids/<batch id>.jsonl``: the example keys (id + content digest, see ``example_key``) of each
  closed batch, so no example is batched twice;
* ``ledger.jsonl``: one line per closed batch (the commit point of a close), and one
  per announcement of a batch on ``sieve.batches``.

A close writes the batch into ``.tmp-<id>/``, renames it into place, writes the ids,
appends the ledger line, then starts a new ``open.jsonl``. A crash at any step
leaves either the old open batch (the half-written batch directory is removed on the
next start) or the closed batch and a stale ``open.jsonl`` whose examples are all
in it; either way no example is dropped and none is in two batches. One process
owns a state directory at a time (an exclusive ``flock`` on ``_state/lock``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

from batches.closing import write_batch
from batches.manifest import RefusalCounter, kind_of
from batches.overrides import BatchOverrides, apply_override
from batches.state import StateLockedError, Window, example_key, fsync_dir, iso, lock_state, read_jsonl, write_atomic
from batches.state import open_batch_summary, read_ledger  # noqa: F401 - re-exported for the CLI
__all__ = ["BatchAssembler", "BatchSettings", "StateLockedError", "open_batch_summary", "read_ledger"]

log = logging.getLogger(__name__)

BATCH_ID = re.compile(r"^(\d{6})-[0-9a-f]{8}$")
TRIGGERS = ("count", "age", "request", "end_of_input")


@dataclass(frozen=True)
class BatchSettings:
    """Where fine-tuning batches go and when they close (``[batches]`` in the config file).

    ``max_examples = 0`` or ``max_age_s = 0`` turns that trigger off. ``uri_prefix``
    (e.g. ``s3://bucket/sieve-batches`` or the path trainers mount ``dir`` at)
    replaces the local directory in the locations the manifest gives trainers.
    """

    dir: str = "./sieve-batches"
    max_examples: int = 10_000
    max_age_s: float = 3600.0
    validation_ratio: float = 0.1
    split_salt: str = "sieve-split-v1"
    shard_max_rows: int = 100_000
    parquet: bool = True
    report: bool = True
    uri_prefix: str | None = None


class BatchAssembler:
    """Accumulates accepted envelopes into fine-tuning batches, durably.

    Args:
        root: the batch directory: closed batches go in ``root/<batch id>/``, state in ``root/_state/``.
        max_examples: close when the open batch holds this many examples (0: never on count).
        max_age_s: close when the oldest open example is this many seconds old (0: never on age).
        validation_ratio: share of ids that go to the validation split, in [0, 1).
        split_salt: key of the split hash; change it only to draw a different split.
        shard_max_rows: rows per shard file.
        parquet: also write Parquet shards when pyarrow is importable.
        report: write ``report.html`` with plots (needs matplotlib).
        uri_prefix: what trainers see instead of ``root`` in file locations.
        clock: seconds since the epoch (tests pass a fake one).

    Raises:
        ValueError: a bad parameter, naming it.
        ImportError: ``report=True`` without matplotlib.
        StateLockedError: another process owns ``root``.
    """

    def __init__(self, root: str | Path, *, max_examples: int = 10_000, max_age_s: float = 3600.0,
                 validation_ratio: float = 0.1, split_salt: str = "sieve-split-v1", shard_max_rows: int = 100_000,
                 parquet: bool = True, report: bool = True, uri_prefix: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_examples < 0:
            raise ValueError(f"max_examples must be >= 0 (0 turns the count trigger off), got {max_examples!r}")
        if max_age_s < 0:
            raise ValueError(f"max_age_s must be >= 0 (0 turns the age trigger off), got {max_age_s!r}")
        if not 0.0 <= validation_ratio < 1.0:
            raise ValueError(f"validation_ratio must be in [0, 1), got {validation_ratio!r}")
        if shard_max_rows <= 0:
            raise ValueError(f"shard_max_rows must be > 0, got {shard_max_rows!r}")
        if report:
            from batches.report import require_matplotlib
            require_matplotlib()
        self.root = Path(root).resolve()
        self.max_examples, self.max_age_s = max_examples, max_age_s
        self.validation_ratio, self.split_salt = validation_ratio, split_salt
        self.shard_max_rows, self.parquet, self.report = shard_max_rows, parquet, report
        self.uri_prefix = uri_prefix.rstrip("/") if uri_prefix else None
        self.clock = clock
        self.redelivered_total = 0  # since this process started, for metrics
        self.state = self.root / "_state"
        (self.state / "ids").mkdir(parents=True, exist_ok=True)
        self._lock_fh = lock_state(self.state, self.root)
        self._refusals = RefusalCounter()
        self.overrides = BatchOverrides(self.state)  # operators' force-accept / force-reject (batches/overrides.py)
        self._load()

    @classmethod
    def from_settings(cls, s: BatchSettings, **kwargs: Any) -> "BatchAssembler":
        return cls(s.dir, max_examples=s.max_examples, max_age_s=s.max_age_s, validation_ratio=s.validation_ratio,
                   split_salt=s.split_salt, shard_max_rows=s.shard_max_rows, parquet=s.parquet, report=s.report,
                   uri_prefix=s.uri_prefix, **kwargs)

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        meta = self.state / "meta.json"
        if not meta.exists():
            write_atomic(meta, orjson.dumps({"created_at": self.clock(), "format": 1}))
        self.created_at = orjson.loads(meta.read_bytes())["created_at"]
        self.ledger = read_jsonl(self.state / "ledger.jsonl", repair=True)
        closed = [e for e in self.ledger if "batch_id" in e]
        self.published = {e["published"] for e in self.ledger if "published" in e}
        self.last_seq = max((e["seq"] for e in closed), default=0)
        self.last_closed_at = max((e["closed_at_unix"] for e in closed), default=None)
        known = {e["batch_id"] for e in closed}
        self.batched: set[str] = set()
        for batch_id in known:
            self.batched.update(read_jsonl(self.state / "ids" / f"{batch_id}.jsonl"))
        self._remove_orphans(known)
        self._open: list[dict[str, Any]] = []   # accepted envelopes of the open batch
        self._open_ids: dict[str, None] = {}   # example keys of the open batch, in feeding order
        self.opened_at: float | None = None
        lines = read_jsonl(self.state / "open.jsonl", repair=True)
        header = lines[0] if lines and "open_after" in lines[0] else None
        if header is None or header["open_after"] < self.last_seq:
            # no file yet, or a crash after a close's ledger line: every example in it is batched
            self._reset_open(self.last_closed_at)
            return
        self.window = Window(header.get("window_start"))
        for line in lines[1:]:
            self.window.replay(line)
            env = line.get("e")
            key = example_key(env) if env is not None else None
            if key is not None and key not in self.batched and key not in self._open_ids:
                self._join(env, key, line["t"])
        for ex_id in list(self.overrides.blocked):  # force-rejected while open (logged before it was dropped)
            self.drop_open(ex_id)
        self._open_fh = open(self.state / "open.jsonl", "ab")
        if self._open:
            log.info("batch state %s: %d examples in the open batch, %d batches closed", self.root,
                     len(self._open), self.last_seq)

    def _remove_orphans(self, known: set[str]) -> None:
        """Directories and id lists of a close that crashed before its ledger line."""
        for path in self.root.iterdir():
            m = BATCH_ID.match(path.name)
            if path.name.startswith(".tmp-") or (m and path.is_dir() and path.name not in known
                                                 and int(m.group(1)) > self.last_seq):
                log.warning("removing %s: left by a close that did not finish", path)
                shutil.rmtree(path, ignore_errors=True)
        for path in (self.state / "ids").glob("*.jsonl"):
            if path.stem not in known:
                path.unlink()

    def _reset_open(self, window_start: float | None) -> None:
        header = {"open_after": self.last_seq, "window_start": window_start}
        write_atomic(self.state / "open.jsonl", orjson.dumps(header, option=orjson.OPT_APPEND_NEWLINE))
        if getattr(self, "_open_fh", None) is not None:
            self._open_fh.close()
        self._open_fh = open(self.state / "open.jsonl", "ab")
        self._open, self._open_ids, self.opened_at = [], {}, None
        self.window = Window(window_start)

    def _append(self, line: Mapping[str, Any]) -> None:
        self._open_fh.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY))

    def flush(self) -> None:
        """Make everything fed so far durable (fsync). Commit input offsets only after this returns."""
        self._open_fh.flush()
        os.fsync(self._open_fh.fileno())

    def shutdown(self) -> None:
        """Flush, then release the state directory. The open batch stays open for the next start."""
        if self._lock_fh is None:
            return
        self.flush()
        self._open_fh.close()
        self._lock_fh.close()
        self._lock_fh = None

    def __enter__(self) -> "BatchAssembler":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ feeding

    @property
    def open_count(self) -> int:
        return len(self._open)

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest example of the open batch arrived (0 when it is empty)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, (self.clock() if now is None else now) - self.opened_at)

    def _join(self, env: dict[str, Any], key: str, t: float) -> None:
        self._open.append(env)
        self._open_ids[key] = None
        if self.opened_at is None:
            self.opened_at = t

    def feed(self, envelopes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Feed envelopes of any decision; return the manifests of the batches this closed (count trigger)."""
        closed = []
        for env in envelopes:
            t = self.clock()
            if self.window.start is None:
                self.window.start = t
            if env.get("decision") != "accepted":
                reason = (env.get("reasons") or ["none"])[0]
                line = {"t": t, "r": [str(env.get("decision")), str(reason)]}
            elif not isinstance(env.get("id"), str) or not isinstance(env.get("example"), dict) \
                    or kind_of(env["example"]) is None:
                log.warning("accepted envelope %r has no usable example; not batched", str(env.get("id"))[:80])
                line = {"t": t, "x": "invalid"}
            elif (key := example_key(env)) in self.batched or key in self._open_ids:
                line = {"t": t, "x": "redelivered"}
                self.redelivered_total += 1
            elif self.overrides.blocks(env["id"]):
                line = {"t": t, "x": "operator_rejected"}
            else:
                env = dict(env)
                line = {"t": t, "e": env}
                self._join(env, key, t)
            self._append(line)
            self.window.replay(line)
            if self.max_examples and len(self._open) >= self.max_examples:
                closed.append(self.close("count"))
        return closed

    def feed_decisions(self, decisions: Sequence[Any], versions: Mapping[str, Any]) -> list[dict[str, Any]]:
        """File mode: feed :class:`quality.pipeline.Decision` objects (``curate(on_decisions=...)``)."""
        envs = (d.envelope(versions) if d.decision == "accepted" else {"decision": d.decision, "reasons": d.reasons}
                for d in decisions)
        return self.feed(envs)

    def open_envelopes(self) -> list[dict[str, Any]]:
        return list(self._open)

    def drop_open(self, ex_id: str) -> int:
        """Removes every open example with this id (an operator's force-reject); returns how many."""
        keep = [(env, key) for env, key in zip(self._open, self._open_ids) if env.get("id") != ex_id]
        dropped = len(self._open) - len(keep)
        self._open, self._open_ids = [e for e, _ in keep], {k: None for _, k in keep}
        return dropped

    def apply_override(self, ov: Any, *, feed: bool = True) -> list[dict[str, Any]]:
        """Honours an operator's override (:func:`batches.overrides.apply_override`); returns closed manifests."""
        return apply_override(self, ov, feed=feed)

    def tick(self, now: float | None = None) -> dict[str, Any] | None:
        """Close the open batch if it is ``max_age_s`` old (or already full, e.g. after a restart with a
        smaller ``max_examples``); return its manifest, or None."""
        if self.max_examples and len(self._open) >= self.max_examples:
            return self.close("count")
        if self.max_age_s and self._open and self.age_s(now) >= self.max_age_s:
            return self.close("age")
        return None

    def request_close(self, requested_at: float | None = None) -> dict[str, Any] | None:
        """An operator's cut: close the open batch now (None when it is empty).

        A request made before the last close, or before this state directory was
        created, is stale (e.g. replayed from the control topic after a restart, or
        read by a new consumer group) and is ignored.
        """
        horizon = max(self.last_closed_at or 0.0, self.created_at)
        if requested_at is not None and requested_at < horizon:
            log.info("ignoring a cut requested at %s: the last batch closed (or the state began) after it",
                     iso(requested_at))
            return None
        return self.close("request")

    # ------------------------------------------------------------------ closing

    def close(self, trigger: str) -> dict[str, Any] | None:
        """Write the open batch out and start a new one; return the manifest (None if the batch is empty)."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        if not self._open:
            return None
        now = self.clock()
        seq = self.last_seq + 1
        ids = list(self._open_ids)  # one key per open envelope, in feeding order
        digest = hashlib.blake2b("\n".join(sorted(ids)).encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
        batch_id = f"{seq:06d}-{digest}"
        final, tmp = self.root / batch_id, self.root / f".tmp-{batch_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        manifest = self._write(tmp, batch_id, seq, trigger, now)
        os.rename(tmp, final)
        fsync_dir(self.root)
        write_atomic(self.state / "ids" / f"{batch_id}.jsonl",
                      b"".join(orjson.dumps(i, option=orjson.OPT_APPEND_NEWLINE) for i in ids))
        entry = {"batch_id": batch_id, "seq": seq, "trigger": trigger, "examples": len(ids),
                 "closed_at": manifest["closed_at"], "closed_at_unix": now, "manifest": f"{batch_id}/manifest.json"}
        self._append_ledger(entry)
        self.batched.update(ids)
        self.last_seq, self.last_closed_at = seq, now
        self._reset_open(now)
        log.info("closed batch %s (%s): %d examples", batch_id, trigger, len(ids))
        return manifest

    def _write(self, tmp: Path, batch_id: str, seq: int, trigger: str, now: float) -> dict[str, Any]:
        return write_batch(self, tmp, batch_id, seq, trigger, now)

    # ------------------------------------------------------------------ reading back

    def closed(self) -> list[dict[str, Any]]:
        """Ledger entries of the closed batches, oldest first, with ``published`` set."""
        return [{**e, "published": e["batch_id"] in self.published} for e in self.ledger if "batch_id" in e]

    def manifest(self, batch_id: str) -> dict[str, Any]:
        return orjson.loads((self.root / batch_id / "manifest.json").read_bytes())

    def unpublished(self) -> list[dict[str, Any]]:
        """Manifests of closed batches not yet announced, oldest first (to publish after a restart)."""
        return [self.manifest(e["batch_id"]) for e in self.closed() if not e["published"]]

    def _append_ledger(self, entry: dict[str, Any]) -> None:
        """Appends one line to the ledger and fsyncs it: the commit point of a close or an announcement."""
        with open(self.state / "ledger.jsonl", "ab") as fh:
            fh.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
            fh.flush()
            os.fsync(fh.fileno())
        self.ledger.append(entry)

    def mark_published(self, batch_id: str, where: str) -> None:
        """Record (durably) that the batch's manifest was acknowledged on ``where``."""
        entry = {"published": batch_id, "where": where, "at": iso(self.clock())}
        self._append_ledger(entry)
        self.published.add(batch_id)
