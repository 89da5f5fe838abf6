"""State that survives: snapshots of every stateful stage, the dedup time window, removal by id.

Everything here reaches state only through :class:`~quality.stage.StatefulStage`
(snapshot, restore, expire, remove, size): it never asks what a stage is.

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
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

import orjson

from quality.records import Example
from quality.stage import Stage, stateful_stages

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = 1
T = TypeVar("T")


def example_time(ex: Example, clock: Callable[[], float] = time.time) -> float:
    """When an example entered the stream, in seconds since the epoch.

    The Kafka record timestamp in ``origin["timestamp"]`` (ms or s) when the driver
    put it there, so a replay of ``sieve.accepted`` reproduces the same times; else now.
    """
    ts = ex.origin.get("timestamp") if ex.origin else None
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 0:
        return ts / 1000.0 if ts > 1e11 else float(ts)
    return clock()


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
        stage.snapshot(tmp / stage.name)
        manifest["stages"][stage.name] = {"class": type(stage).__name__, "version": dict(stage.version()),
                                          "size": stage.size()}
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


def load_snapshot(stages: Sequence[Stage], directory: str | Path,
                  rebuilt_from: Collection[str] = ("accepted", "decided")) -> Restored:
    """Restores the stateful stages (those rebuilt from one of ``rebuilt_from``) from the
    current snapshot under ``directory``.

    A stage whose saved state cannot be used (no folder, other MinHash settings) is
    left empty and listed in ``Restored.missing``. No snapshot at all gives
    ``Restored(path=None)`` with every such stage missing.
    """
    root = Path(directory)
    wanted = [s for s in stateful_stages(stages) if s.rebuilt_from in rebuilt_from]
    current = root / "CURRENT"
    if not current.exists():
        return Restored(None, missing=[s.name for s in wanted])
    snap = root / current.read_text(encoding="utf-8").strip()
    manifest = orjson.loads((snap / "manifest.json").read_bytes())
    if manifest.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"snapshot {snap} has format {manifest.get('format')!r}, expected {SNAPSHOT_FORMAT}")
    out = Restored(snap, meta=manifest.get("meta", {}))
    for stage in wanted:
        folder = snap / stage.name
        if stage.name not in manifest["stages"] or not folder.exists():
            out.missing.append(stage.name)
            continue
        try:
            stage.restore(folder)
            out.restored.append(stage.name)
        except (ValueError, OSError, KeyError) as exc:
            log.warning("snapshot state of %s not used: %s", stage.name, exc)
            out.missing.append(stage.name)
    return out


def remove_example(stages: Sequence[Stage], ex_id: str) -> dict[str, int]:
    """Forgets one accepted example in every stateful stage (an operator's request).

    Returns how many entries each stage dropped. A later example with the same
    content is then no longer a duplicate of it.
    """
    return {stage.name: stage.remove(ex_id) for stage in stateful_stages(stages)}


def expire_before(stages: Sequence[Stage], before: float) -> dict[str, int]:
    """Forgets every example added before ``before`` (seconds since the epoch), in every stateful stage."""
    return {stage.name: stage.expire(before) for stage in stateful_stages(stages)}


class DedupWindow:
    """``pipeline.dedup_window_s``: accepted examples older than the window stop counting.

    A decision rule of the core, applied by :class:`~quality.pipeline.Pipeline` with
    each input's own time (:func:`example_time`: its Kafka timestamp, else now), so
    file mode and the stream decide alike however their input is cut into batches.
    Before deciding an input, the pipeline calls :meth:`advance` with its time; when
    that time enters a later step of ``step_s`` (``window_s / 16``) than any input
    before it, every stateful stage forgets what was added before the step's start
    minus ``window_s``. So an accepted example counts for ``window_s`` to
    ``window_s + step_s`` seconds of input time. ``window_s`` 0 keeps everything forever.
    """

    def __init__(self, stages: Sequence[Stage], window_s: float, step_s: float | None = None) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0 (0 = no window), got {window_s!r}")
        if step_s is not None and step_s <= 0:
            raise ValueError(f"step_s must be > 0, got {step_s!r}")
        self.stages, self.window_s = list(stages), float(window_s)
        self.step_s = float(step_s) if step_s is not None else self.window_s / 16
        self._last = -math.inf  # start of the latest step an input reached

    def _step_start(self, t: float) -> float:
        return math.floor(t / self.step_s) * self.step_s

    def due(self, t: float) -> bool:
        """Whether an input at time ``t`` moves the window (so it starts a new run of the batch)."""
        return self.window_s > 0 and self._step_start(t) > self._last

    def runs(self, items: Sequence[T], time_of: Callable[[T], float]) -> list[tuple[float | None, list[T]]]:
        """``items`` (in input order) cut where one moves the window: ``(its time, the run it
        starts)``; the first run's time is None when it does not move the window. Without a
        window, one run."""
        if self.window_s <= 0:
            return [(None, list(items))] if items else []
        runs: list[tuple[float | None, list[T]]] = []
        last = self._last
        for item in items:
            t = time_of(item)
            step = self._step_start(t)
            if step > last:
                runs.append((t, []))
                last = step
            elif not runs:
                runs.append((None, []))
            runs[-1][1].append(item)
        return runs

    def advance(self, t: float) -> dict[str, int]:
        """Moves the window to an input at time ``t``; returns what each stage forgot."""
        if not self.due(t):
            return {}
        self._last = self._step_start(t)
        return expire_before(self.stages, self._last - self.window_s)
