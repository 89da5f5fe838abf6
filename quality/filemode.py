"""File mode: JSONL (or .jsonl.gz) files in, envelopes and a summary out.

:func:`decide_records` is the one loop of file mode: records in, the pipeline over
batches, each envelope encoded by the core (:mod:`quality.envelope`) and handed to a
sink, a summary kept. :func:`curate` (``sieve curate``) sinks into the three decision
files, where every non-blank input line ends in exactly one of ``accepted.jsonl``,
``rejected.jsonl`` or ``dead_letter.jsonl``; :func:`annotate` (``sieve score``, a
score-mode pipeline) into one file in input order. Both write a summary that counts
decisions by reason and source, with score distributions and timings.
``summary.json`` has ``reasons`` (the deciding reason of each decision) and
``reasons_carried`` (every reason an envelope carries: the deciding one first, then e.g.
``contaminated``).
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import time
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from quality.envelope import Decision, DecisionKind, encode_decision, safe_text
from quality.pipeline import Pipeline
from quality.records import RawRecord
from quality.stage import unmet_needs_message

OUTPUT_FILES = {"accepted": "accepted.jsonl", "rejected": "rejected.jsonl", "dead_letter": "dead_letter.jsonl"}


def open_binary(path: Path) -> io.BufferedIOBase:
    """Opens a file for reading bytes, through gzip when it ends in .gz."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_records(paths: Sequence[Path], counts: Counter | None = None) -> Iterator[RawRecord]:
    """Yields one raw record per non-blank line; lines stay bytes so bad UTF-8 is seen.

    The origin is ``{"file": <name as given>, "line": <1-based line number>}``.
    """
    for path in paths:
        with open_binary(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.rstrip(b"\r\n")
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM is no JSON
                    line = line[3:]
                if not line.strip():
                    if counts is not None:
                        counts["blank_lines_skipped"] += 1
                    continue
                yield RawRecord(line, {"file": str(path), "line": lineno})


def batched(items: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    batch: list[RawRecord] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


#: ``kind`` of a decision whose input could not be parsed (it has no example).
UNPARSED = "unparsed"


def _table(factory=Counter) -> defaultdict:
    return defaultdict(factory)


@dataclass
class Summary:
    """Counts and distributions gathered while decisions are written; :meth:`to_dict` is ``summary.json``.

    Scores are kept by kind of example (``sft``, ``preference``) and decision, so a quality
    threshold is read off SFT examples only (pairs are not gated on quality unless
    ``scoring.apply_quality_to_pairs``). ``series`` gives the raw values to the HTML report.
    """

    decisions: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    reasons_carried: Counter = field(default_factory=Counter)
    by_source: dict[str, Counter] = field(default_factory=_table)
    reasons_by_source: dict[str, Counter] = field(default_factory=_table)
    by_kind: dict[str, Counter] = field(default_factory=_table)
    by_file: dict[str, dict[str, Counter]] = field(default_factory=lambda: _table(lambda: _table()))
    # (kind, decision, score name) -> values; lengths likewise, by (kind, decision, length name)
    values: dict[tuple[str, str, str], array] = field(default_factory=lambda: _table(lambda: array("d")))
    lengths: dict[tuple[str, str, str], array] = field(default_factory=lambda: _table(lambda: array("d")))
    other: Counter = field(default_factory=Counter)

    def add(self, d: Decision) -> None:
        self.decisions[d.decision] += 1
        for r in d.reasons:  # every reason carried: contaminated is recorded whatever decided the example
            self.reasons_carried[f"{d.decision}:{r}"] += 1
        source = safe_text(d.example.source) if d.example is not None and d.example.source else "unknown"
        kind = d.example.kind if d.example is not None else UNPARSED
        self.by_source[source][d.decision] += 1
        self.by_kind[kind][d.decision] += 1
        where = self.by_file[str(d.origin.get("file", "?"))] if "file" in d.origin else None
        if where is not None:
            where["decisions"][d.decision] += 1
        for r in d.reasons[:1]:  # the reason that decided; score mode may list several
            key = f"{d.decision}:{r}"
            self.reasons[key] += 1
            self.reasons_by_source[source][key] += 1
            if where is not None:
                where["reasons"][key] += 1
        for name, value in d.scores.items():
            self.values[(kind, d.decision, name)].append(float(value))
        if d.example is not None:
            self.lengths[(kind, d.decision, "prompt_chars")].append(len(d.example.prompt_text))
            self.lengths[(kind, d.decision, "response_chars")].append(len(d.example.response_text))

    def series(self, name: str, kind: str | None = None, decision: str | None = None) -> list[float]:
        """Every value of score ``name`` (of one kind and/or decision, or all of them)."""
        return [v for (k, dec, n), vs in self.values.items()
                if n == name and kind in (None, k) and decision in (None, dec) for v in vs]

    def report_series(self) -> dict[str, dict[str, dict[str, dict[str, array]]]]:
        """What the run report draws: ``{"scores"|"lengths": {kind: {name: {decision: values}}}}``
        (the values as kept, not copied: a run of millions of lines has millions of them)."""
        out: dict[str, dict] = {"scores": {}, "lengths": {}}
        for part, table in (("scores", self.values), ("lengths", self.lengths)):
            for (kind, decision, name), vs in sorted(table.items()):
                out[part].setdefault(kind, {}).setdefault(name, {})[decision] = vs
        return out

    def score_names(self) -> list[str]:
        return sorted({n for _, _, n in self.values})

    def to_dict(self, pipeline: Pipeline, seconds: float) -> dict[str, Any]:
        total = sum(self.decisions.values())
        specs = pipeline.score_specs()
        counted = [n for n in self.score_names() if n in specs and specs[n].count]
        plotted = [n for n in self.score_names() if n not in counted]
        by_kind: dict[str, dict[str, Any]] = {}
        for kind in sorted({k for k, _, _ in self.values}):
            for name in plotted:
                row = {"all": distribution(self.series(name, kind))}
                for decision in sorted({dec for k, dec, n in self.values if k == kind and n == name}):
                    row[decision] = distribution(self.series(name, kind, decision))
                if row["all"] is not None:
                    by_kind.setdefault(kind, {})[name] = row
        counts = {}
        for name in counted:
            xs = self.series(name)
            counts[name] = {"examples": sum(1 for x in xs if x > 0), "total": round(sum(xs), 6)}
        return {
            "total": total,
            "decisions": dict(self.decisions),
            "reasons": dict(sorted(self.reasons.items())),
            "by_kind": {k: dict(v) for k, v in sorted(self.by_kind.items())},
            "reasons_carried": dict(sorted(self.reasons_carried.items())),
            "by_source": {k: dict(v) for k, v in sorted(self.by_source.items())},
            "reasons_by_source": {k: dict(sorted(v.items())) for k, v in sorted(self.reasons_by_source.items())},
            "by_input_file": {f: {"total": sum(t["decisions"].values()), "decisions": dict(t["decisions"]),
                                  "reasons": dict(sorted(t["reasons"].items()))} for f, t in self.by_file.items()},
            "scores": {n: distribution(self.series(n)) for n in plotted},
            "scores_by_kind": by_kind,
            "score_counts": counts,
            "thresholds": pipeline.thresholds(),
            **({"unchecked": {s: unmet_needs_message(st, m) for s, m in pipeline.unmet.items()
                              for st in pipeline.stages if st.name == s}} if pipeline.unmet else {}),
            "stages": pipeline.stats(),
            "seconds": round(seconds, 3),
            "examples_per_s": round(total / seconds, 1) if seconds > 0 else None,
            "versions": pipeline.versions(),
            **({"overrides": pipeline.overrides.report()} if pipeline.overrides is not None else {}),
            **dict(self.other),
        }


def distribution(values: Sequence[float]) -> dict[str, float] | None:
    """count, mean, min, p10, p50, p90 and max of the values (None when there are none)."""
    if not values:
        return None
    xs = sorted(float(v) for v in values)
    n = len(xs)

    def q(p: float) -> float:
        return round(xs[min(n - 1, int(p * (n - 1) + 0.5))], 6)

    return {"count": n, "mean": round(sum(xs) / n, 6), "min": xs[0], "p10": q(0.1), "p50": q(0.5),
            "p90": q(0.9), "max": xs[-1]}


Sink = Callable[[DecisionKind, bytes], None]


def decide_records(pipeline: Pipeline, records: Iterable[RawRecord], sink: Sink, *, batch_size: int = 256,
                   progress: Callable[[int], None] | None = None,
                   on_decisions: Callable[[list[Decision]], None] | None = None,
                   summary: Summary | None = None) -> Summary:
    """Runs the pipeline over ``records`` in batches and hands each envelope (one JSON line) to ``sink``.

    Args:
        pipeline: the one pipeline core shared with the stream worker.
        records: raw records in input order.
        sink: called as ``sink(decision, line)`` once per input, in input order.
        batch_size: records per pipeline call (model stages micro-batch inside).
        progress: called with the number of records done after each batch.
        on_decisions: called with each batch's decisions (e.g. to cut fine-tuning batches).
        summary: where counts go (a new one by default); returned.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    summary = summary if summary is not None else Summary()
    versions = pipeline.versions()
    for batch in batched(records, batch_size):
        decisions = []
        for d in pipeline.process(batch):
            d, data = encode_decision(d, versions)  # total: an unwritable decision becomes a dead letter
            sink(d.decision, data + b"\n")
            summary.add(d)
            decisions.append(d)
        if on_decisions is not None:
            on_decisions(decisions)
        if progress is not None:
            progress(len(batch))
    return summary


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


def _write_summary(summary: Summary, pipeline: Pipeline, seconds: float, path: Path) -> dict[str, Any]:
    result = summary.to_dict(pipeline, seconds)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return result


def _records(inputs: Sequence[Path], summary: Summary, limit: int | None) -> Iterator[RawRecord]:
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    records = read_records(inputs, summary.other)
    if limit is None:
        return records
    summary.other["limit"] = limit
    return itertools.islice(records, limit)


def curate(pipeline: Pipeline, inputs: Sequence[Path], out_dir: Path, *, batch_size: int = 256,
           progress: Callable[[int], None] | None = None,
           on_decisions: Callable[[list[Decision]], None] | None = None, limit: int | None = None,
           summary: Summary | None = None) -> dict[str, Any]:
    """Runs the pipeline over files and writes the three decision files and ``summary.json``; returns the summary.

    Args:
        pipeline: the one pipeline core shared with the stream worker.
        inputs: JSONL or .jsonl.gz files, read in order.
        out_dir: created if missing; existing output files are replaced.
        batch_size, progress, on_decisions: see :func:`decide_records`.
        limit: decide only the first ``limit`` non-blank lines (a trial run).
        summary: where counts and score values go (the caller keeps it for a report).
    """
    check_inputs(inputs)
    prepare_out_dir(out_dir, inputs)
    summary = summary if summary is not None else Summary()
    t0 = time.perf_counter()
    handles = {k: open(out_dir / name, "wb") for k, name in OUTPUT_FILES.items()}
    try:
        decide_records(pipeline, _records(inputs, summary, limit), lambda kind, line: handles[kind].write(line),
                       batch_size=batch_size, progress=progress, on_decisions=on_decisions, summary=summary)
    finally:
        for fh in handles.values():
            fh.close()
    return _write_summary(summary, pipeline, time.perf_counter() - t0, out_dir / "summary.json")


def annotate(pipeline: Pipeline, inputs: Sequence[Path], out: Path, *, batch_size: int = 256,
             progress: Callable[[int], None] | None = None, limit: int | None = None,
             summary: Summary | None = None) -> tuple[dict[str, Any], Path]:
    """``sieve score``: every envelope into one file ``out``, in input order, and the summary
    beside it (``OUT.summary.json``); returns the summary and its path. Give it a score-mode pipeline."""
    check_inputs(inputs)
    prepare_out_file(out, inputs)
    summary = summary if summary is not None else Summary()
    t0 = time.perf_counter()
    with open(out, "wb") as fh:
        decide_records(pipeline, _records(inputs, summary, limit), lambda _kind, line: fh.write(line),
                       batch_size=batch_size, progress=progress, summary=summary)
    path = out.with_name(out.name + ".summary.json")
    return _write_summary(summary, pipeline, time.perf_counter() - t0, path), path
