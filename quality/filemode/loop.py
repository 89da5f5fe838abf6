"""File mode: JSONL (or .jsonl.gz) files in, envelopes and a summary out.

:func:`decide_records` is the one loop of file mode: records in, the pipeline over
batches, each envelope encoded by the core (:mod:`quality.envelope`) and handed to a
sink, a summary kept. :func:`curate` (``sieve curate``) sinks into the three decision
files, where every non-blank input line ends in exactly one of ``accepted.jsonl``,
``rejected.jsonl`` or ``dead_letter.jsonl``; :func:`annotate` (``sieve score``, a
score-mode pipeline) into one file in input order. Both check their paths first
(:mod:`quality.filemode.files`) and write a summary (:mod:`quality.filemode.summary`).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from quality.envelope import Decision, DecisionKind, encode_decision
from quality.filemode.files import OUTPUT_FILES, check_inputs, open_binary, prepare_out_dir, prepare_out_file
from quality.filemode.summary import Summary
from quality.pipeline import Pipeline
from quality.records import RawRecord


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
