"""The files of file mode: output names, reading .gz, the line count, and the path checks.

Every check here runs before any work (and before a model loads) and raises
:class:`PathProblem` (a ``ValueError``: ``sieve`` exits 2 with its one line) or
``FileNotFoundError`` with what is wrong and what to do.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Sequence

OUTPUT_FILES = {"accepted": "accepted.jsonl", "rejected": "rejected.jsonl", "dead_letter": "dead_letter.jsonl"}


def open_binary(path: Path) -> io.BufferedIOBase:
    """Opens a file for reading bytes, through gzip when it ends in .gz."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")



class PathProblem(ValueError):
    """An input or output path that cannot be used, found before any work (a usage error: exit 2)."""


def check_inputs(inputs: Sequence[Path]) -> None:
    """Every input is a readable file; checked before the pipeline (and its model) is built.

    Raises:
        FileNotFoundError: an input does not exist.
        PathProblem: an input is a directory or cannot be read.
    """
    for path in inputs:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"input file not found: {path}")
        if path.is_dir():
            raise PathProblem(f"input {path} is a directory; give the JSONL files in it (e.g. {path}/*.jsonl)")
        if not path.is_file():  # a pipe would be drained by the line count and the check, then read empty
            raise PathProblem(f"input {path} is not a regular file (a pipe or a device cannot be read twice); "
                              "write it to a file first")
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise PathProblem(f"cannot read input {path}: {exc.strerror or exc}") from exc


def check_writable_dir(directory: Path, what: str) -> None:
    """``directory`` exists (created if missing) and a file can be written in it.

    Raises:
        PathProblem: it is a file, or cannot be created or written; ``what`` names it (e.g. ``--out DIR``).
    """
    if directory.exists() and not directory.is_dir():
        raise PathProblem(f"{what}: {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".sieve-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PathProblem(f"{what}: cannot write in {directory}: {exc.strerror or exc}") from exc


def _not_an_input(outputs: Sequence[Path], inputs: Sequence[Path], flag: str) -> None:
    """Raises PathProblem when an output would overwrite an input before it is read."""
    def same(a: Path, b: Path) -> bool:
        try:
            return a.exists() and b.exists() and os.path.samefile(a, b)
        except OSError:
            return False

    for out in outputs:
        for path in inputs:
            if same(Path(out), Path(path)):
                also = f" (as {out})" if str(out) != str(path) else ""
                raise PathProblem(f"{flag} would overwrite the input {path}{also} before reading it; write the "
                                  "outputs somewhere else")


def prepare_out_dir(out_dir: Path, inputs: Sequence[Path] = ()) -> None:
    """``--out DIR`` of ``sieve curate``: a directory (created) Sieve can write in.

    Raises:
        PathProblem: it is a file, or cannot be created or written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PathProblem(f"--out {out_dir} is a file, not a directory: give a directory (it is created, and "
                          f"{', '.join(OUTPUT_FILES.values())} and summary.json are written in it)")
    check_writable_dir(out_dir, f"--out {out_dir}")
    names = (*OUTPUT_FILES.values(), "summary.json", "report.html")
    for name in names:
        if (out_dir / name).is_dir():
            raise PathProblem(f"--out {out_dir}: {out_dir / name} is a directory; move it away")
    _not_an_input([out_dir / name for name in names], inputs, f"--out {out_dir}")


def prepare_out_file(out: Path, inputs: Sequence[Path] = ()) -> None:
    """``--out FILE`` of ``sieve score``: a file (replaced) in a directory Sieve can write in.

    Raises:
        PathProblem: it is a directory, or its directory cannot be created or written.
    """
    out = Path(out)
    if out.is_dir():
        raise PathProblem(f"--out {out} is a directory: give a file name (e.g. {out / 'scored.jsonl'})")
    check_writable_dir(out.parent, f"--out {out}")
    _not_an_input([out, out.with_name(out.name + ".summary.json")], inputs, f"--out {out}")


def count_records(paths: Sequence[Path], limit: int | None = None) -> int:
    """How many lines the inputs hold (blank ones too), at most ``limit``: the progress bar's total.

    Counts newlines a megabyte at a time (gzip files are decompressed), far cheaper than
    deciding them.
    """
    total = 0
    for path in paths:
        with open_binary(Path(path)) as fh:
            last = b"\n"
            while chunk := fh.read(1 << 20):
                total += chunk.count(b"\n")
                last = chunk[-1:]
                if limit is not None and total >= limit:
                    return limit
            total += last != b"\n"
    return total if limit is None else min(total, limit)


