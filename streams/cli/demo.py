"""``sieve demo``: a local broker, a worker and a producer replaying real sample data, with live counts."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

HELP = """\
One command to see Sieve work end to end on this machine:
  1. starts a real single-node Kafka broker on 127.0.0.1 (streams/local_kafka.py; the first
     run downloads the broker jars from Maven Central, later runs use the cache);
  2. creates the topics and starts a worker (`sieve run`) as a subprocess;
  3. replays a bundled sample of real fine-tuning data (streams/demo_data/sample.jsonl:
     Alpaca, OpenAI messages, ShareGPT and preference rows, exact duplicates and bad lines)
     into the raw topic;
  4. shows live counts by decision and reason, read from the output topics.
It stops when every sample line is decided (or after --duration seconds, or on Ctrl-C),
prints the final table, and leaves the envelopes in --out as JSONL files:
  accepted.jsonl  rejected.jsonl  dead_letter.jsonl  worker.log
While it runs, the worker's Prometheus metrics are on the URL it prints.
"""

SAMPLE = Path(__file__).resolve().parents[1] / "demo_data" / "sample.jsonl"
FILES = {"accepted": "accepted.jsonl", "rejected": "rejected.jsonl", "dead_letter": "dead_letter.jsonl"}
#: Seconds the worker may take to stop after SIGTERM before it is killed.
WORKER_STOP_TIMEOUT = 30.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="local broker + worker + producer replaying sample data, live counts",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=Path, default=SAMPLE, help="JSONL file to replay (default: bundled sample)")
    p.add_argument("--out", type=Path, default=Path("sieve-demo-out"),
                   help="where the envelopes and the worker log go (default: ./sieve-demo-out)")
    p.add_argument("--rate", type=float, default=100.0, help="messages per second to replay; 0 = as fast as "
                   "possible (default: 100)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds, decided or not")
    p.add_argument("--partitions", type=int, default=1, help="partitions of the demo topics (default: 1)")
    p.add_argument("--config", type=Path, help="TOML settings for the worker's pipeline (default: $SIEVE_CONFIG)")
    p.add_argument("--no-models", action="store_true",
                   help="run without the encoder stage and semantic dedup (the CPU-cheap stages only)")
    p.set_defaults(func=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tally:
    """Counts by decision and reason, fed by a consumer of the three output topics."""

    def __init__(self, out_dir: Path) -> None:
        self.decisions: Counter = Counter()
        self.reasons: Counter = Counter()
        self.lock = threading.Lock()
        self.files = {k: open(out_dir / name, "wb") for k, name in FILES.items()}

    def add(self, envelope: dict, value: bytes) -> None:
        with self.lock:
            d = envelope.get("decision", "?")
            self.decisions[d] += 1
            for r in envelope.get("reasons", [])[:1]:
                self.reasons[(d, r)] += 1
            self.files.get(d, self.files["dead_letter"]).write(value + b"\n")

    @property
    def total(self) -> int:
        return sum(self.decisions.values())

    def table(self) -> list[str]:
        with self.lock:
            rows = [f"  {'decision':<12} {'reason':<22} {'count':>6}", "  " + "-" * 42]
            for d in ("accepted", "rejected", "dead_letter"):
                rows.append(f"  {d:<12} {'':<22} {self.decisions[d]:>6}")
                for (dd, r), n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                    if dd == d:
                        rows.append(f"  {'':<12} {r:<22} {n:>6}")
            rows.append(f"  {'total':<12} {'':<22} {self.total:>6}")
            return rows

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def _read_lines(path: Path) -> list[bytes]:
    """Non-blank lines as bytes: bad UTF-8 must reach the worker as it is."""
    return [line.rstrip(b"\r") for line in path.read_bytes().split(b"\n") if line.strip()]


def _replay(bootstrap: str, topic: str, lines: list[bytes], rate: float, sent: list[int], stop: threading.Event):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=1_100_000)
    try:
        t0 = time.monotonic()
        for i, line in enumerate(lines):
            if stop.is_set():
                break
            if rate > 0:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(topic, value=line)
            sent[0] = i + 1
        producer.flush()
    finally:
        producer.close()


def _consume(bootstrap: str, topics: list[str], tally: Tally, stop: threading.Event) -> None:
    import orjson
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, max_partition_fetch_bytes=2 * 1024 * 1024,
                             isolation_level="read_committed")  # outputs are written in transactions
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    tally.add(orjson.loads(r.value), r.value)
    finally:
        consumer.close()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


#: Set by SIGTERM; the loop checks it too, since the KeyboardInterrupt raised for it can land
#: in a finalizer, which ignores it (seen with examples/trainer_consumer.py under load).
_SIGNALLED = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    _SIGNALLED.set()
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    from streams.config import load_settings
    from streams.local_kafka import KafkaError, LocalKafka
    from streams.topics import ensure_topics, output_topics, quiet_client_logs

    if not args.sample.is_file():
        raise FileNotFoundError(f"--sample file not found: {args.sample}")
    if args.partitions < 1:
        raise ValueError(f"--partitions must be >= 1, got {args.partitions}")
    if args.rate < 0:
        raise ValueError(f"--rate must be >= 0, got {args.rate}")
    quiet_client_logs()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`, `timeout`: stop as cleanly as on Ctrl-C
    lines = _read_lines(args.sample)
    args.out.mkdir(parents=True, exist_ok=True)
    tty = sys.stdout.isatty()
    print(f"starting a local Kafka broker (the first run downloads it; see {args.out / 'worker.log'} later)...",
          flush=True)
    t_start = time.monotonic()
    broker = LocalKafka(num_partitions=args.partitions)
    try:
        broker.start()
    except KafkaError as exc:
        print(f"sieve demo: error: the local Kafka broker did not start: {exc}", file=sys.stderr)
        return 2
    try:
        env = {k: v for k, v in os.environ.items()}
        env.update({"SIEVE_KAFKA__BROKERS": broker.bootstrap, "SIEVE_KAFKA__PARTITIONS": str(args.partitions),
                    "SIEVE_KAFKA__SESSION_TIMEOUT_S": "10", "SIEVE_METRICS__PORT": str(_free_port())})
        # small batches keep the table moving (the model stage takes ~1 s per 20 examples on CPU)
        env.setdefault("SIEVE_KAFKA__BATCH_MAX", "32")
        env.setdefault("SIEVE_KAFKA__BATCH_WITHIN_S", "0.2")
        if args.config:
            env["SIEVE_CONFIG"] = str(args.config)
        if args.no_models:
            env.update({"SIEVE_PIPELINE__SCORING__ENABLED": "false",
                        "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"})
        kafka = load_settings(args.config, overrides={"kafka.brokers": broker.bootstrap,
                                                      "kafka.partitions": args.partitions}).kafka
        ensure_topics(kafka)
        port = int(env["SIEVE_METRICS__PORT"])
        print(f"broker {broker.bootstrap} up in {time.monotonic() - t_start:.1f}s; starting the worker; "
              f"metrics: http://127.0.0.1:{port}/metrics", flush=True)
        log = open(args.out / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-progress"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        tally = Tally(args.out)
        stop = threading.Event()
        sent = [0]
        threads = [threading.Thread(target=_replay, args=(broker.bootstrap, kafka.raw_topic, lines, args.rate,
                                                          sent, stop), daemon=True),
                   threading.Thread(target=_consume, args=(broker.bootstrap, list(output_topics(kafka).values()),
                                                           tally, stop), daemon=True)]
        for t in threads:
            t.start()
        reason, drawn, t_run, last_line = "done", 0, time.monotonic(), 0.0
        try:
            while True:
                if _SIGNALLED.is_set():
                    reason = "interrupted"
                    break
                if worker.poll() is not None:
                    reason = f"the worker exited with {worker.returncode} (see {args.out / 'worker.log'})"
                    break
                if tally.total >= len(lines):
                    break
                if args.duration is not None and time.monotonic() - t_run > args.duration:
                    reason = f"--duration {args.duration:g}s reached"
                    break
                state = "ready" if _ready(port) else "starting"
                head = [f"worker {state} | replayed {sent[0]}/{len(lines)} | decided {tally.total} | "
                        f"{time.monotonic() - t_run:.0f}s"]
                rows = head + tally.table()
                if tty:
                    sys.stdout.write(("\x1b[F\x1b[2K" * drawn) + "\n".join(rows) + "\n")
                    drawn = len(rows)
                elif time.monotonic() - last_line >= 5:
                    print(head[0], flush=True)
                    last_line = time.monotonic()
                sys.stdout.flush()
                time.sleep(0.5)
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            stop.set()
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(WORKER_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            for t in threads:
                t.join(5)
            tally.close()
            log.close()
        if tty and drawn:
            sys.stdout.write("\x1b[F\x1b[2K" * drawn)
        elapsed = time.monotonic() - t_run
        print(f"\nstopped: {reason}; {tally.total} of {len(lines)} sample lines decided in {elapsed:.1f}s "
              f"(total with broker start {time.monotonic() - t_start:.1f}s)")
        print("\n".join(tally.table()))
        print(f"\nenvelopes: {args.out}/accepted.jsonl, rejected.jsonl, dead_letter.jsonl; worker log: "
              f"{args.out}/worker.log\n(the demo broker and its topics are removed on exit)")
    finally:
        broker.stop()
    return 130 if reason == "interrupted" else (1 if reason.startswith("the worker") else 0)
