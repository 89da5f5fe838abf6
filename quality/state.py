"""Durable dedup state: snapshots of every dedup index, time windows and removal by id.

``sieve.accepted`` is the source of truth; a snapshot is a shortcut. A worker that
starts (or replaces another) calls :func:`load_snapshot`, which restores every
stateful stage and returns the ``meta`` saved with the snapshot (the driver puts the
``sieve.accepted`` offsets there), then replays only the accepted records after those
offsets through ``Pipeline.warm``. Stages' ``commit`` is idempotent by example id, so
replaying an overlap is harmless, and the restored worker decides as the old one.

Layout: ``DIR/CURRENT`` names the live snapshot folder ``DIR/snap-<ns>/``, which
holds ``manifest.json`` and one folder per stage. A new snapshot is written beside the
old one and ``CURRENT`` is swapped atomically (``os.replace``), so a crash mid-write
leaves the previous snapshot intact; older folders are deleted afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import orjson

from quality.dedup.exact import ExactDedup, ExactIndex
from quality.stage import Stage

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = 1


class TimedExactIndex(ExactIndex):
    """:class:`ExactIndex` that remembers when each key was added, so old keys can expire."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self.added: dict[bytes, float] = {}

    def add(self, key: bytes, ex_id: str) -> None:
        if key not in self._ids:
            self.added[key] = self.clock()
        super().add(key, ex_id)

    def remove_id(self, ex_id: str) -> int:
        n = super().remove_id(ex_id)
        self.added = {k: t for k, t in self.added.items() if k in self._ids}
        return n

    def expire(self, before: float) -> int:
        old = [k for k, t in self.added.items() if t < before]
        for k in old:
            self._ids.pop(k, None)
            del self.added[k]
        return len(old)


def _is_stateful(stage: Stage) -> bool:
    return isinstance(stage, ExactDedup) or (hasattr(stage, "snapshot") and hasattr(stage, "restore"))


def stateful_stages(stages: Sequence[Stage]) -> list[Stage]:
    """The stages whose state a snapshot holds (exact, near and semantic dedup)."""
    return [s for s in stages if _is_stateful(s)]


def _save_stage(stage: Stage, directory: Path) -> None:
    if isinstance(stage, ExactDedup):
        directory.mkdir(parents=True, exist_ok=True)
        index = stage.index
        (directory / "exact.json").write_bytes(orjson.dumps(index.snapshot()))
        if isinstance(index, TimedExactIndex):
            (directory / "added.json").write_bytes(orjson.dumps({k.hex(): t for k, t in index.added.items()}))
    else:
        stage.snapshot(directory)  # type: ignore[attr-defined]


def _load_stage(stage: Stage, directory: Path) -> None:
    if isinstance(stage, ExactDedup):
        data = orjson.loads((directory / "exact.json").read_bytes())
        if isinstance(stage.index, TimedExactIndex):
            index = TimedExactIndex(stage.index.clock)
            index._ids = {bytes.fromhex(k): v for k, v in data.items()}
            added = directory / "added.json"
            now = index.clock()
            times = orjson.loads(added.read_bytes()) if added.exists() else {}
            index.added = {k: float(times.get(k.hex(), now)) for k in index._ids}
            stage.index = index
        else:
            stage.index = ExactIndex.restore(data)
    else:
        stage.restore(directory)  # type: ignore[attr-defined]


def save_snapshot(stages: Sequence[Stage], directory: str | Path, meta: Mapping[str, Any] | None = None,
                  keep: int = 1) -> Path:
    """Writes the state of every stateful stage to a new folder under ``directory``.

    Args:
        stages: the pipeline's stages (``pipeline.stages``).
        directory: the state directory (created).
        meta: JSON-serializable data stored with the snapshot, e.g. ``{"accepted_offsets": {...}}``.
        keep: how many snapshots to keep (the newest).
    Returns:
        The folder of the new snapshot.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    snap = root / f"snap-{time.time_ns()}"
    tmp = root / f".tmp-{snap.name}"
    manifest: dict[str, Any] = {"format": SNAPSHOT_FORMAT, "created": time.time(), "meta": dict(meta or {}),
                                "stages": {}}
    for stage in stateful_stages(stages):
        _save_stage(stage, tmp / stage.name)
        manifest["stages"][stage.name] = {"class": type(stage).__name__, "version": dict(stage.version()),
                                          "size": _size(stage)}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    _fsync_tree(tmp)
    os.replace(tmp, snap)
    current_tmp = root / "CURRENT.tmp"
    current_tmp.write_text(snap.name, encoding="utf-8")
    with open(current_tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(current_tmp, root / "CURRENT")
    snaps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("snap-"))
    for old in snaps[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-snap-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return snap


def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())


def _size(stage: Stage) -> int:
    index = getattr(stage, "index", None)
    try:
        return len(index) if index is not None else 0
    except TypeError:
        return 0


@dataclass
class Restored:
    """What :func:`load_snapshot` restored.

    ``meta`` is what the snapshot was saved with; ``missing`` names stateful stages the
    snapshot has no state for (added since, or settings changed): the driver must then
    replay all of ``sieve.accepted`` rather than the tail.
    """

    path: Path | None
    meta: dict[str, Any] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.path is not None and not self.missing


def snapshot_meta(directory: str | Path) -> dict[str, Any] | None:
    """The ``meta`` of the current snapshot under ``directory`` without restoring it, or None."""
    current = Path(directory) / "CURRENT"
    if not current.exists():
        return None
    snap = Path(directory) / current.read_text(encoding="utf-8").strip()
    try:
        return dict(orjson.loads((snap / "manifest.json").read_bytes()).get("meta", {}))
    except (OSError, orjson.JSONDecodeError):
        return None


def load_snapshot(stages: Sequence[Stage], directory: str | Path) -> Restored:
    """Restores every stateful stage from the current snapshot under ``directory``.

    A stage whose saved state cannot be used (no folder, other MinHash settings) is
    left empty and listed in ``Restored.missing``. No snapshot at all gives
    ``Restored(path=None)`` with every stateful stage missing.
    """
    root = Path(directory)
    names = [s.name for s in stateful_stages(stages)]
    current = root / "CURRENT"
    if not current.exists():
        return Restored(None, missing=names)
    snap = root / current.read_text(encoding="utf-8").strip()
    manifest = orjson.loads((snap / "manifest.json").read_bytes())
    if manifest.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"snapshot {snap} has format {manifest.get('format')!r}, expected {SNAPSHOT_FORMAT}")
    out = Restored(snap, meta=manifest.get("meta", {}))
    for stage in stateful_stages(stages):
        folder = snap / stage.name
        if stage.name not in manifest["stages"] or not folder.exists():
            out.missing.append(stage.name)
            continue
        try:
            _load_stage(stage, folder)
            out.restored.append(stage.name)
        except (ValueError, OSError, KeyError) as exc:
            log.warning("snapshot state of %s not used: %s", stage.name, exc)
            out.missing.append(stage.name)
    return out


def remove_example(stages: Sequence[Stage], ex_id: str) -> dict[str, int]:
    """Forgets one accepted example in every dedup index (an operator's request).

    Returns how many entries each stage dropped. A later example with the same
    content is then no longer a duplicate of it.
    """
    out = {}
    for stage in stateful_stages(stages):
        if isinstance(stage, ExactDedup):
            out[stage.name] = stage.index.remove_id(ex_id)
        else:
            out[stage.name] = int(stage.remove(ex_id))  # type: ignore[attr-defined]
    return out


def expire_before(stages: Sequence[Stage], before: float) -> dict[str, int]:
    """Forgets every example added before ``before`` (seconds since the epoch).

    Exact dedup expires only with a :class:`TimedExactIndex` (what ``quality.build``
    uses); a plain :class:`ExactIndex` keeps everything and reports 0.
    """
    out = {}
    for stage in stateful_stages(stages):
        if isinstance(stage, ExactDedup):
            index = stage.index
            out[stage.name] = index.expire(before) if isinstance(index, TimedExactIndex) else 0
        else:
            out[stage.name] = stage.expire(before)  # type: ignore[attr-defined]
    return out


class DedupWindow:
    """Applies an optional time window: examples older than ``window_s`` are forgotten.

    The driver calls :meth:`tick` between batches (e.g. once a minute); ``window_s`` 0
    keeps everything forever.
    """

    def __init__(self, stages: Sequence[Stage], window_s: float, clock: Callable[[], float] = time.time,
                 every_s: float = 60.0) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0 (0 = no window), got {window_s!r}")
        self.stages, self.window_s, self.clock, self.every_s = list(stages), window_s, clock, every_s
        self._last = -np.inf

    def tick(self) -> dict[str, int]:
        now = self.clock()
        if self.window_s == 0 or now - self._last < self.every_s:
            return {}
        self._last = now
        return expire_before(self.stages, now - self.window_s)
