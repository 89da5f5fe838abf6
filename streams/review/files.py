"""File mode for the review: the outputs of ``sieve curate --out DIR``, its batch directories,
and the overrides file that ``sieve curate`` applies on its next run.

``DIR/overrides.jsonl`` is append-only: one override record per line (the schema of
:mod:`quality.overrides.record`), written under an exclusive ``flock`` and fsynced, so
two review pages (or a page and a script) never interleave a line and a crash leaves
at most a torn last line, which readers ignore. The file is the audit log of file mode.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import orjson

from quality.filemode import OUTPUT_FILES
from quality.overrides import OverrideBook, OverrideError, parse_override

log = logging.getLogger(__name__)

OVERRIDES_FILE = "overrides.jsonl"


def read_override_records(path: Path) -> list[dict[str, Any]]:
    """The records of an overrides file, in order (a torn last line is left out).

    Raises:
        ValueError: a complete line that is not a valid override record, naming the line
            and the problem (fix or delete it: an override must not be guessed).
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    out = []
    lines = data.split(b"\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = n == len(lines)  # no newline after it: a crash mid-append
        try:
            rec = orjson.loads(line)
            parse_override(rec)
        except (orjson.JSONDecodeError, OverrideError) as exc:
            if torn:
                log.warning("%s: ignoring the torn last line %d (%s)", path, n, exc)
                continue
            raise ValueError(f"{path}:{n}: not a valid override record: {exc}. Fix or delete that line") from None
        out.append(rec)
    return out


def load_override_book(path: Path) -> OverrideBook:
    """The overrides of a file as the pipeline applies them (see :func:`read_override_records`)."""
    book, errors = OverrideBook.from_records(read_override_records(path))
    assert not errors, errors  # read_override_records validated every record
    return book


def append_override(path: Path, record: dict[str, Any]) -> None:
    """Appends one validated record to an overrides file: locked, one write, fsynced.

    Raises:
        quality.overrides.OverrideError: the record is not a valid override.
    """
    parse_override(record)
    line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    with open(path, "ab") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tail_jsonl(path: Path, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The last ``limit`` JSON objects of a JSONL file and how many lines were left out before them."""
    kept: deque = deque(maxlen=limit)
    total = 0
    if path.exists():
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    total += 1
                    kept.append(line)
    out = []
    for line in kept:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            out.append(obj)
    return out, total - len(kept)


def find_envelope(path: Path, ex_id: str) -> dict[str, Any] | None:
    """The first envelope with ``ex_id`` in an output file, found without parsing every line
    (envelopes start with their id: ``{"id":...``). For first copies beyond the loaded bound."""
    prefix = b'{"id":' + orjson.dumps(ex_id) + b","
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(prefix):
                return orjson.loads(line)
    return None


class FileSource:
    """Reads a ``sieve curate`` output directory (and optionally its batch directory) for the review.

    Args:
        out_dir: the ``--out`` directory of ``sieve curate``.
        batches_dir: the ``--batches`` directory of that run, if any.
        max_records: the most envelopes kept per output file (the last ones).
    """

    mode = "file"

    def __init__(self, out_dir: Path, *, batches_dir: Path | None = None, max_records: int = 20_000) -> None:
        if not (out_dir / OUTPUT_FILES["accepted"]).exists() and not (out_dir / OUTPUT_FILES["rejected"]).exists():
            raise FileNotFoundError(f"{out_dir} holds no accepted.jsonl or rejected.jsonl: pass the --out directory "
                                    "of a `sieve curate` run")
        if batches_dir is not None and not batches_dir.is_dir():
            raise FileNotFoundError(f"--batches {batches_dir}: not a directory")
        if max_records <= 0:
            raise ValueError(f"--max-records must be > 0, got {max_records}")
        self.out_dir, self.batches_dir, self.max_records = out_dir, batches_dir, max_records
        self.overrides_path = out_dir / OVERRIDES_FILE

    def describe(self) -> str:
        return f"file mode: {self.out_dir}" + (f", batches in {self.batches_dir}" if self.batches_dir else "")

    def version(self) -> tuple:
        """Changes when any file the review reads changes (size or time)."""
        paths = [self.out_dir / n for n in (*OUTPUT_FILES.values(), "summary.json", OVERRIDES_FILE)]
        if self.batches_dir is not None:
            paths.append(self.batches_dir / "_state" / "ledger.jsonl")
        out = []
        for p in paths:
            try:
                st = p.stat()
                out.append((st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def load(self) -> dict[str, Any]:
        """Envelopes (the last ``max_records`` of each output), override records, batches, summary."""
        envelopes, truncated = [], {}
        for decision, name in OUTPUT_FILES.items():
            envs, dropped = tail_jsonl(self.out_dir / name, self.max_records)
            envelopes += envs
            if dropped:
                truncated[decision] = dropped
        summary = None
        if (self.out_dir / "summary.json").exists():
            try:
                summary = orjson.loads((self.out_dir / "summary.json").read_bytes())
            except orjson.JSONDecodeError:
                summary = None
        return {"envelopes": envelopes, "truncated": truncated, "summary": summary,
                "overrides": read_override_records(self.overrides_path),
                "batches": list(self._batches())}

    def _batches(self) -> Iterator[dict[str, Any]]:
        if self.batches_dir is None:
            return
        for manifest_path in sorted(self.batches_dir.glob("*/manifest.json")):
            try:
                yield orjson.loads(manifest_path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                log.warning("skipping %s: %s", manifest_path, exc)

    def find_accepted(self, ex_id: str) -> dict[str, Any] | None:
        return find_envelope(self.out_dir / OUTPUT_FILES["accepted"], ex_id)

    def write_override(self, record: dict[str, Any]) -> str:
        """Appends the record to ``overrides.jsonl``; returns where it went."""
        append_override(self.overrides_path, record)
        return str(self.overrides_path)
