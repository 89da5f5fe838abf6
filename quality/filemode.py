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
``contaminated``), and ``pii_redactions`` (PII findings redacted, by kind, in every output:
examples and dead letters).
"""

from __future__ import annotations

import gzip
import io
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from quality.envelope import Decision, DecisionKind, encode_decision, safe_text
from quality.pipeline import Pipeline
from quality.records import RawRecord

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


@dataclass
class Summary:
    """Counts and distributions gathered while decisions are written."""

    decisions: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    reasons_carried: Counter = field(default_factory=Counter)
    by_source: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    other: Counter = field(default_factory=Counter)
    pii_redactions: Counter = field(default_factory=Counter)  # findings redacted, by kind, dead letters included

    def add(self, d: Decision) -> None:
        self.decisions[d.decision] += 1
        for r in d.reasons[:1]:  # the reason that decided
            self.reasons[f"{d.decision}:{r}"] += 1
        for r in d.reasons:  # every reason carried: contaminated is recorded whatever decided the example
            self.reasons_carried[f"{d.decision}:{r}"] += 1
        source = safe_text(d.example.source) if d.example is not None and d.example.source else "unknown"
        self.by_source[source][d.decision] += 1
        for name, value in d.scores.items():
            self.scores[name].append(float(value))
            if name.startswith("pii_"):
                self.pii_redactions[name[4:]] += int(value)

    def to_dict(self, pipeline: Pipeline, seconds: float) -> dict[str, Any]:
        total = sum(self.decisions.values())
        return {
            "total": total,
            "decisions": dict(self.decisions),
            "reasons": dict(sorted(self.reasons.items())),
            "reasons_carried": dict(sorted(self.reasons_carried.items())),
            "by_source": {k: dict(v) for k, v in sorted(self.by_source.items())},
            "scores": {k: distribution(v) for k, v in sorted(self.scores.items())},
            "pii_redactions": dict(sorted(self.pii_redactions.items())),
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


def _check_inputs(inputs: Sequence[Path]) -> None:
    for path in inputs:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file not found: {path}")


def _write_summary(summary: Summary, pipeline: Pipeline, seconds: float, path: Path) -> dict[str, Any]:
    result = summary.to_dict(pipeline, seconds)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return result


def curate(pipeline: Pipeline, inputs: Sequence[Path], out_dir: Path, *, batch_size: int = 256,
           progress: Callable[[int], None] | None = None,
           on_decisions: Callable[[list[Decision]], None] | None = None) -> dict[str, Any]:
    """Runs the pipeline over files and writes the three decision files and ``summary.json``; returns the summary.

    Args:
        pipeline: the one pipeline core shared with the stream worker.
        inputs: JSONL or .jsonl.gz files, read in order.
        out_dir: created if missing; existing output files are replaced.
        batch_size, progress, on_decisions: see :func:`decide_records`.
    """
    _check_inputs(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    t0 = time.perf_counter()
    handles = {k: open(out_dir / name, "wb") for k, name in OUTPUT_FILES.items()}
    try:
        decide_records(pipeline, read_records(inputs, summary.other), lambda kind, line: handles[kind].write(line),
                       batch_size=batch_size, progress=progress, on_decisions=on_decisions, summary=summary)
    finally:
        for fh in handles.values():
            fh.close()
    return _write_summary(summary, pipeline, time.perf_counter() - t0, out_dir / "summary.json")


def annotate(pipeline: Pipeline, inputs: Sequence[Path], out: Path, *, batch_size: int = 256,
             progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], Path]:
    """``sieve score``: every envelope into one file ``out``, in input order, and the summary
    beside it (``OUT.summary.json``); returns the summary and its path. Give it a score-mode pipeline."""
    _check_inputs(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    t0 = time.perf_counter()
    with open(out, "wb") as fh:
        decide_records(pipeline, read_records(inputs, summary.other), lambda _kind, line: fh.write(line),
                       batch_size=batch_size, progress=progress, summary=summary)
    path = out.with_name(out.name + ".summary.json")
    return _write_summary(summary, pipeline, time.perf_counter() - t0, path), path
