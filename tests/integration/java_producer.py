"""Produce records with the Apache Kafka Java client, for tests that need a non-Python producer.

`java/RecordFileProducer.java` is compiled once with ``javac`` against the broker jars that
:func:`streams.local_kafka.fetch` caches (they include kafka-clients and the compression
libraries it loads: zstd-jni, lz4-java, snappy-java) into
``<cache>/java-producer/<kafka version>-<source hash>/``, then run with ``java``. The Java
client batches and compresses as production producers do (``compression.type``,
``linger.ms``, ``batch.size``), which no Python client can stand in for.

    result = produce_java(kafka.bootstrap, topic, [(b"key", b"value")], "zstd", partition=0)
    result.offsets  # [(partition, offset)] per record, in order
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streams.local_kafka import KAFKA_VERSION, _java, cache_dir, fetch

SOURCE = Path(__file__).resolve().parent / "java" / "RecordFileProducer.java"
MAIN_CLASS = "RecordFileProducer"
#: Seconds one run of the Java producer may take (JVM start, metadata, every acknowledgement).
JAVA_PRODUCE_TIMEOUT = 120.0
#: Seconds javac may take on a busy 2-core machine.
JAVAC_TIMEOUT = 180.0


class JavaProducerError(RuntimeError):
    """The Java producer could not be compiled, or did not deliver every record."""


@dataclass(frozen=True)
class JavaProduceResult:
    """Where each record went, in input order, and the producer's own batching metrics."""

    offsets: list[tuple[int, int]]
    metrics: dict[str, float]
    stderr: str


def _javac(java: str) -> str:
    beside = Path(java).resolve().parent / "javac"
    found = str(beside) if beside.exists() else shutil.which("javac")
    if not found:
        raise JavaProducerError("`javac` was not found beside java or on PATH; the Java producer test helper "
                                "compiles its source at test time: install a JDK 17+ "
                                "(e.g. `apt-get install openjdk-17-jdk-headless`).")
    return found


def compiled_classes(version: str = KAFKA_VERSION) -> Path:
    """Compile the producer against the broker's kafka-clients jar (once per source and version)."""
    libs = fetch(version)
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    root = cache_dir() / "java-producer"
    out = root / f"{version}-{digest}"
    if (out / f"{MAIN_CLASS}.class").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test sessions compile once
        if (out / f"{MAIN_CLASS}.class").exists():
            return out
        clients = sorted(libs.glob("kafka-clients-*.jar"))
        if not clients:
            raise JavaProducerError(f"no kafka-clients jar in {libs}; delete that directory to fetch it again")
        tmp = Path(tempfile.mkdtemp(prefix=".classes-", dir=root))
        try:
            proc = subprocess.run([_javac(_java()), "-nowarn", "-d", str(tmp), "-cp", str(clients[0]), str(SOURCE)],
                                  capture_output=True, text=True, timeout=JAVAC_TIMEOUT)
            if proc.returncode != 0:
                raise JavaProducerError(f"javac failed on {SOURCE.name} (exit {proc.returncode}):\n"
                                        f"{proc.stdout}{proc.stderr}")
            os.rename(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_record_file(path: Path, records: list[tuple[bytes | None, bytes]], partition: int | None) -> None:
    """Write records in the producer's input format (see the Java source's header)."""
    with open(path, "wb") as f:
        for key, value in records:
            f.write(struct.pack(">i", -1 if partition is None else partition))
            f.write(struct.pack(">i", -1) if key is None else struct.pack(">i", len(key)) + key)
            f.write(struct.pack(">i", len(value)) + value)


def produce_java(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], compression: str, *,
                 partition: int | None = None, properties: dict[str, str] | None = None,
                 heap: str = "256m", timeout: float = JAVA_PRODUCE_TIMEOUT) -> JavaProduceResult:
    """Send ``(key, value)`` records with the Java client and ``compression.type=compression``.

    Waits until the broker acknowledged all of them (acks=all). ``properties`` override the
    producer's defaults (linger.ms=50, batch.size=256 KiB); ``heap`` is the JVM's ``-Xmx`` (the
    records are all read into memory first). Raises :class:`JavaProducerError`
    with the producer's stderr when any record was not delivered.
    """
    classes, libs = compiled_classes(), fetch()
    with tempfile.TemporaryDirectory(prefix="sieve-java-producer-") as tmp:
        path = Path(tmp) / "records.bin"
        write_record_file(path, records, partition)
        props = [f"{k}={v}" for k, v in (properties or {}).items()]
        cmd = [_java(), f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               f"-Djava.io.tmpdir={tmp}",  # snappy-java and zstd-jni unpack their native libraries here
               "-cp", f"{classes}{os.pathsep}{libs}/*", MAIN_CLASS, bootstrap, topic, compression, str(path), *props]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise JavaProducerError(f"the Java producer ({compression}) exited {proc.returncode} on topic {topic}:\n"
                                f"{proc.stderr[-4000:]}")
    offsets, metrics = [], {}
    for line in proc.stdout.splitlines():
        kind, *rest = line.split()
        if kind == "RECORD":
            offsets.append((int(rest[1]), int(rest[2])))
        elif kind == "METRIC":
            metrics[rest[0]] = float(rest[1])
    if len(offsets) != len(records):
        raise JavaProducerError(f"the Java producer reported {len(offsets)} of {len(records)} records:\n"
                                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return JavaProduceResult(offsets, metrics, proc.stderr)
