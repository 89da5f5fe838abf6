"""Examples per second through a real Kafka broker (`sieve run`) against file mode, same input, same run.

    .venv/bin/python bench/bench_stream.py --records 8000 --repeats 3 --out docs/bench_stream.md

Input: the first ``--records`` rows of the dev instruction files in ../shared/data
(real GPTeacher, GSM8K, Alpaca rows). Both modes run the CPU-cheap pipeline
(scoring and semantic dedup off: heuristics, PII, exact and near dedup), so the
comparison shows what the broker path costs, not the model.

* file mode: ``quality.filemode.curate`` on a JSONL file (read, decide, write three files);
* stream mode: the records are first produced to a fresh 1-partition raw topic, then a
  ``sieve run`` subprocess is started; the clock runs from its /readyz turning 200
  to the moment the output topics hold one envelope per input (so producer time and
  the worker's start-up and recovery are excluded, and reported apart).

Each repeat uses fresh topics and a fresh consumer group on one broker. Medians are
reported; the ratio is stream / file examples per second.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from stream_utils import Names, WorkerProcess, create_topics, output_count, produce  # noqa: E402

from quality.config import PipelineSettings, load  # noqa: E402
from quality.filemode import curate  # noqa: E402
from streams.assemble import build_pipeline  # noqa: E402
from streams.local_kafka import LocalKafka  # noqa: E402

CHEAP = {"scoring.enabled": False, "semantic_dedup.enabled": False}
CHEAP_ENV = {"SIEVE_PIPELINE__SCORING__ENABLED": "false", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"}
FILES = ["gpteacher_codegen", "gpteacher_roleplay", "gpteacher_toolformer_dedupe_only", "gsm8k_train_slice",
         "alpaca_5000", "alpagasus_random_9k", "alpagasus_dolly_3k"]


def load_lines(data: Path, n: int) -> list[bytes]:
    lines: list[bytes] = []
    for name in FILES:
        lines += [x for x in (data / "instruction" / f"{name}.jsonl").read_bytes().splitlines() if x.strip()]
    if len(lines) < n:
        raise ValueError(f"--records {n} is more than the {len(lines)} rows available in {data}")
    return lines[:n]


def file_mode(lines: list[bytes], tmp: Path) -> float:
    src = tmp / "input.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    pipeline = build_pipeline(load(PipelineSettings, env={}, overrides=CHEAP))
    t0 = time.perf_counter()
    summary = curate(pipeline, [src], tmp / "out", batch_size=256)
    seconds = time.perf_counter() - t0
    assert summary["total"] == len(lines)
    return seconds


def stream_mode(lines: list[bytes], bootstrap: str, tmp: Path, batch_max: int) -> dict:
    names = Names(f"bench-{uuid.uuid4().hex}", f"bench-group-{uuid.uuid4().hex}")
    create_topics(names, bootstrap)
    t0 = time.perf_counter()
    produce(bootstrap, f"{names.base}.raw", lines)
    produce_s = time.perf_counter() - t0
    env = {**names.env(bootstrap), **CHEAP_ENV, "SIEVE_PIPELINE__MAX_MESSAGE_BYTES": str(1 << 20),
           "SIEVE_KAFKA__BATCH_MAX": str(batch_max), "SIEVE_KAFKA__BATCH_WITHIN_S": "0.5",
           "SIEVE_KAFKA__COMMIT_INTERVAL_S": "2.8"}
    t_start = time.perf_counter()
    worker = WorkerProcess(env, tmp / f"worker-{names.base}.log", tmp)
    try:
        worker.wait_ready()
        ready_s = time.perf_counter() - t_start
        t1 = time.perf_counter()
        while output_count(bootstrap, names.outputs) < len(lines):
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{worker.log()[-3000:]}")
            if time.perf_counter() - t1 > 600:
                raise TimeoutError("stream mode took over 600 s")
            time.sleep(0.02)
        seconds = time.perf_counter() - t1
        worker.terminate()
    finally:
        worker.kill()
    # restarts on the same topics and group: what start-up recovery costs, first with the
    # snapshot the clean stop left (its frontier: only the outputs after it are read), then
    # without any snapshot (a full read of the three output topics)
    recovery = {}
    for kind in ("snapshot", "full"):
        if kind == "full":
            shutil.rmtree(tmp / "sieve-state", ignore_errors=True)
        again = WorkerProcess(env, tmp / f"worker-{names.base}-restart-{kind}.log", tmp)
        try:
            again.wait_ready()
            again.terminate()
        finally:
            again.kill()
        summary = re.search(r"recovery: (\{.*\})", again.log()).group(1)
        scanned = re.search(r"'scanned': \{([^}]*)\}", summary).group(1)
        recovery[kind] = {"seconds": float(re.search(r"'seconds': ([0-9.]+)", summary).group(1)),
                          "warmed": int(re.search(r"'warmed': (\d+)", summary).group(1)),
                          "scanned": sum(int(x) for x in re.findall(r": (\d+)", scanned)),
                          "frontier": "'frontier': True" in summary}
    return {"seconds": seconds, "produce_s": produce_s, "startup_s": ready_s, "recovery": recovery}


def faust_null(bootstrap: str, topic: str, n: int, batch_max: int) -> None:
    """Child process: a faust app built like the worker's, whose agent only counts; prints the rate."""
    import faust

    from streams.app import build_app
    from streams.config import load_settings

    settings = load_settings(overrides={"kafka.brokers": bootstrap, "kafka.raw_topic": topic,
                                        "kafka.group_id": f"null-{uuid.uuid4().hex}"})
    with tempfile.TemporaryDirectory() as d:
        app, raw_topic = build_app(settings, datadir=d)
        state = {"n": 0, "t0": 0.0}

        @app.agent(raw_topic, concurrency=1)
        async def count(stream):
            async for events in stream.take_events(batch_max, within=0.5):
                state["t0"] = state["t0"] or time.perf_counter()
                state["n"] += len(events)
                if state["n"] >= n:
                    print(f"RATE {n / (time.perf_counter() - state['t0']):.1f}", flush=True)
                    os._exit(0)

        faust.Worker(app, loglevel="WARN", quiet=True, redirect_stdouts=False).execute_from_commandline()


def ceiling(bootstrap: str, lines: list[bytes], batch_max: int) -> dict:
    """Messages/s of consuming alone: a faust take_events agent that does nothing, and an aiokafka loop."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    names = Names(f"bench-null-{uuid.uuid4().hex}", "unused")
    create_topics(names, bootstrap)
    produce(bootstrap, f"{names.base}.raw", lines)
    out = subprocess.run([sys.executable, __file__, "--faust-null", bootstrap, f"{names.base}.raw", str(len(lines)),
                          str(batch_max)], capture_output=True, text=True, timeout=300)
    faust_rate = float(re.search(r"RATE ([0-9.]+)", out.stdout + out.stderr).group(1))

    async def aiokafka_loop() -> float:
        consumer = AIOKafkaConsumer(f"{names.base}.raw", bootstrap_servers=bootstrap, group_id=uuid.uuid4().hex,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        n, t0 = 0, 0.0
        try:
            while n < len(lines):
                batch = await consumer.getmany(timeout_ms=500, max_records=batch_max)
                t0 = t0 or time.perf_counter()
                n += sum(len(v) for v in batch.values())
                if batch:
                    await consumer.commit()
        finally:
            await consumer.stop()
        return n / (time.perf_counter() - t0)

    return {"faust": faust_rate, "aiokafka": asyncio.run(aiokafka_loop())}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--faust-null":
        faust_null(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--records", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-max", type=int, nargs="+", default=[256, 32])
    ap.add_argument("--out", type=Path, help="write a markdown table here")
    ap.add_argument("--ceiling", action="store_true", help="also measure consuming alone (faust vs aiokafka)")
    args = ap.parse_args()
    lines = load_lines(args.data, args.records)
    n = len(lines)
    results: dict = {"records": n, "file": [], "stream": {b: [] for b in args.batch_max}}
    with tempfile.TemporaryDirectory() as tmpdir, LocalKafka() as broker:
        tmp = Path(tmpdir)
        for r in range(args.repeats):
            results["file"].append(file_mode(lines, tmp))
            for b in args.batch_max:
                results["stream"][b].append(stream_mode(lines, broker.bootstrap, tmp, b))
            if args.ceiling and r == 0:
                results["ceiling"] = ceiling(broker.bootstrap, lines, args.batch_max[0])
            print(f"repeat {r + 1}: file {n / results['file'][-1]:.0f}/s; " + "; ".join(
                f"stream(batch {b}) {n / results['stream'][b][-1]['seconds']:.0f}/s" for b in args.batch_max),
                file=sys.stderr, flush=True)
    file_rate = n / statistics.median(results["file"])
    rows = [f"| mode | examples/s (median of {args.repeats}) | vs file mode |", "|---|---:|---:|",
            f"| file mode (`sieve curate`) | {file_rate:,.0f} | 1.00 |"]
    for b in args.batch_max:
        runs = results["stream"][b]
        rate = n / statistics.median(x["seconds"] for x in runs)
        rows.append(f"| stream (`sieve run`, batch_max={b}) | {rate:,.0f} | {rate / file_rate:.2f} |")
    startup = statistics.median(x["startup_s"] for runs in results["stream"].values() for x in runs)
    produce_rate = n / statistics.median(x["produce_s"] for runs in results["stream"].values() for x in runs)
    note = (f"\n{n} real records, CPU-cheap pipeline (heuristics, PII, exact + near dedup), 1 partition, "
            f"{os.cpu_count()} CPU cores shared with the broker. Worker start-up to ready (imports, recovery "
            f"scan of empty topics, group join): {startup:.1f} s (median). Test producer (kafka-python, "
            f"acks=all): {produce_rate:,.0f} messages/s.\n")
    if args.ceiling:
        rates = results["ceiling"]
        note += (f"Consuming alone (batch_max={args.batch_max[0]}, nothing done per batch): faust "
                 f"`take_events` {rates['faust']:,.0f} messages/s; a plain aiokafka `getmany` loop with a commit "
                 f"per batch {rates['aiokafka']:,.0f} messages/s.\n")
    rec = [x["recovery"] for runs in results["stream"].values() for x in runs]
    full_s = statistics.median(r["full"]["seconds"] for r in rec)
    snap_s = statistics.median(r["snapshot"]["seconds"] for r in rec)
    note += (f"Restart recovery without a snapshot (a full read of the {rec[0]['full']['scanned']} output "
             f"envelopes, {rec[0]['full']['warmed']} accepted ones parsed back and warmed into the dedup state): "
             f"{full_s:.2f} s, about {n / full_s:,.0f} envelopes/s. With the snapshot the clean stop left (its "
             f"frontier: {rec[0]['snapshot']['scanned']} envelopes read, {rec[0]['snapshot']['warmed']} warmed, "
             f"frontier used: {all(r['snapshot']['frontier'] for r in rec)}): {snap_s:.2f} s.\n")
    table = "\n".join(rows) + "\n" + note
    print(table)
    print(json.dumps(results, default=str), file=sys.stderr)
    if args.out:
        args.out.write_text("# Stream vs file mode throughput\n\nGenerated by `bench/bench_stream.py`.\n\n" + table)


if __name__ == "__main__":
    main()
