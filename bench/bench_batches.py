"""What a fine-tuning batch costs: feeding the open batch, closing it, restarting with it open.

    .venv/bin/python bench/bench_batches.py --examples 10000 --repeats 3 --out docs/bench_batches.md

Input: real rows of ../shared/data (instruction files as SFT, preference files as
pairs), parsed to canonical examples and wrapped in accepted envelopes as the
worker publishes them (the pipeline itself is not run: its cost is measured in
bench_stream.py). Each repeat uses a fresh batch directory.

* feed: envelopes per second into the open batch, with one fsync per 256 (a poll);
* close: seconds to write one batch of ``--examples`` examples, for JSONL shards only
  (the baseline), + Parquet shards, + the HTML report; ratios are against the baseline;
* restart: seconds for a new assembler to read the open batch back (``--examples`` open).

Medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batches.assembler import BatchAssembler  # noqa: E402
from quality.filemode import read_records  # noqa: E402
from quality.records import Example, parse  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def envelopes(n: int) -> list[dict]:
    files = sorted((DATA / "instruction").glob("*.jsonl")) + sorted((DATA / "preference").glob("*.jsonl"))
    out: list[dict] = []
    for raw in read_records(files):
        ex = parse(raw)
        if not isinstance(ex, Example):
            continue
        out.append({"id": ex.id, "decision": "accepted", "reasons": [], "scores": {"quality": (len(out) % 97) / 97},
                    "example": ex.canonical(), "origin": dict(raw.origin), "source": ex.source,
                    "versions": {"pipeline": "bench"}})
    if len(out) < n:
        raise SystemExit(f"only {len(out)} examples in {DATA}; ask for fewer with --examples")
    step = len(out) / n  # spread over every file, so SFT and pairs both appear
    return [out[int(i * step)] for i in range(n)]


def run_once(envs: list[dict], parquet: bool, report: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sieve-bench-batches-") as tmp:
        a = BatchAssembler(tmp, max_examples=0, max_age_s=0, parquet=parquet, report=report)
        t0 = time.perf_counter()
        for i in range(0, len(envs), 256):
            a.feed(envs[i:i + 256])
            a.flush()
        feed_s = time.perf_counter() - t0
        a.shutdown()
        t0 = time.perf_counter()
        b = BatchAssembler(tmp, max_examples=0, max_age_s=0, parquet=parquet, report=report)
        restart_s = time.perf_counter() - t0
        assert b.open_count == len(envs)
        t0 = time.perf_counter()
        m = b.close("request")
        close_s = time.perf_counter() - t0
        b.shutdown()
        size = sum(f["bytes"] for f in m["files"])
    return {"feed_per_s": len(envs) / feed_s, "restart_s": restart_s, "close_s": close_s, "bytes": size}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=10_000, help="examples per batch (default 10000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration; medians are reported")
    p.add_argument("--out", type=Path, help="write the markdown table here (e.g. docs/bench_batches.md)")
    args = p.parse_args()
    envs = envelopes(args.examples)
    configs = [("JSONL (baseline)", False, False), ("JSONL + Parquet", True, False),
               ("JSONL + Parquet + report", True, True)]
    rows = []
    for name, parquet, report in configs:
        runs = [run_once(envs, parquet, report) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append((name, med))
        print(name, {k: round(v, 3) for k, v in med.items()}, flush=True)
    base = rows[0][1]["close_s"]
    kinds = sum(1 for e in envs if "messages" in e["example"])
    lines = [f"# Batch costs ({args.examples} examples: {kinds} SFT, {args.examples - kinds} preference; "
             f"medians of {args.repeats})", "",
             "Measured by `bench/bench_batches.py` on the development machine (2 shared cores).", "",
             "| files written | close (s) | close vs JSONL | batch size (MB) | feed (envelopes/s, fsync per 256) "
             "| restart with the batch open (s) |", "|---|---:|---:|---:|---:|---:|"]
    for name, med in rows:
        lines.append(f"| {name} | {med['close_s']:.2f} | {med['close_s'] / base:.2f}x | {med['bytes'] / 1e6:.1f} "
                     f"| {med['feed_per_s']:,.0f} | {med['restart_s']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
