#!/usr/bin/env python3
"""A trainer's side of Sieve: follow ``sieve.batches``, verify each batch, load it with ``datasets``.

This file depends only on kafka-python and datasets (not on Sieve), as a training
job would. For every manifest announced on the batches topic it

1. checks the sha256 and size of every file the manifest lists,
2. loads each kind of example with ``datasets.load_dataset("json", data_files=...)``
   from the manifest alone (``sft``: a ``messages`` column; ``preference``:
   ``prompt``/``chosen``/``rejected``, all in conversational form, as TRL expects),
3. prints how to hand the splits to TRL's ``SFTTrainer`` or ``DPOTrainer``,
4. commits its offset, so a restarted trainer resumes after the last batch it loaded.

Examples::

    python examples/trainer_consumer.py --brokers localhost:9092 --max-batches 1
    python examples/trainer_consumer.py --manifest sieve-batches/000001-ab12cd34/manifest.json
    python examples/trainer_consumer.py --brokers kafka:9092 --root /mnt/batches   # batches mounted elsewhere

SASL/SSL: ``--security-protocol SASL_SSL --sasl-mechanism SCRAM-SHA-512 --sasl-username trainer``
with the password in ``$KAFKA_SASL_PASSWORD``, and ``--ssl-cafile`` for a private CA.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

TRL_HINT = {
    "sft": """\
from trl import SFTConfig, SFTTrainer
trainer = SFTTrainer(model=MODEL, args=SFTConfig(output_dir="out"),
                     train_dataset={name}["train"], eval_dataset={name}.get("validation"))
trainer.train()""",
    "preference": """\
from trl import DPOConfig, DPOTrainer
trainer = DPOTrainer(model=MODEL, args=DPOConfig(output_dir="out"), processing_class=TOKENIZER,
                     train_dataset={name}["train"], eval_dataset={name}.get("validation"))
trainer.train()""",
}


def file_location(manifest: dict[str, Any], entry: dict[str, Any], root: Path | None = None) -> str:
    """Where this trainer opens a file: under ``root`` if given, else the manifest's path or URI."""
    if root is not None:
        return str(root / manifest["batch_id"] / entry["path"])
    if entry.get("local_path") and Path(entry["local_path"]).is_file():
        return entry["local_path"]
    return entry["uri"]


def _open(location: str):
    if "://" in location and not location.startswith("file://"):
        import fsspec  # installed with datasets; s3://, gs://, hf:// ... with their extras

        return fsspec.open(location, "rb").open()
    return open(location.removeprefix("file://"), "rb")


def verify(manifest: dict[str, Any], root: Path | None = None) -> list[str]:
    """Problems with the batch's files (missing, wrong size, wrong sha256); empty when all match."""
    problems = []
    for entry in manifest["files"]:
        location = file_location(manifest, entry, root)
        sha, size = hashlib.sha256(), 0
        try:
            with _open(location) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            problems.append(f"{entry['path']}: cannot read {location}: {exc}")
            continue
        if size != entry["bytes"] or sha.hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']}: {size} bytes sha256 {sha.hexdigest()}, "
                            f"manifest says {entry['bytes']} bytes sha256 {entry['sha256']}")
    return problems


def data_files(manifest: dict[str, Any], kind: str, fmt: str = "json", root: Path | None = None) -> dict[str, list]:
    """``{split: [files]}`` of one kind of example, ready for ``datasets.load_dataset``."""
    if root is None:
        return manifest["datasets"][kind][fmt]
    out: dict[str, list] = {}
    for entry in manifest["files"]:
        if entry.get("kind") == kind and entry.get("format") == fmt:
            out.setdefault(entry["split"], []).append(file_location(manifest, entry, root))
    return out


def load(manifest: dict[str, Any], kind: str, *, fmt: str = "json", root: Path | None = None,
         cache_dir: str | None = None):
    """One kind of the batch as a ``datasets.DatasetDict`` with ``train`` (and ``validation``) splits."""
    from datasets import load_dataset

    return load_dataset(fmt, data_files=data_files(manifest, kind, fmt, root), cache_dir=cache_dir)


def handle(manifest: dict[str, Any], root: Path | None = None, cache_dir: str | None = None) -> dict[str, Any]:
    """Verify and load one announced batch; print what a trainer would do next. Returns the loaded splits."""
    problems = verify(manifest, root)
    if problems:
        raise RuntimeError(f"batch {manifest['batch_id']} failed verification:\n  " + "\n  ".join(problems))
    print(f"batch {manifest['batch_id']}: {manifest['counts']['examples']} examples, closed by "
          f"{manifest['trigger']} at {manifest['closed_at']}; {len(manifest['files'])} files verified")
    if manifest.get("report"):
        print(f"  report: {manifest['report']['uri']}")
    loaded = {}
    for kind in manifest["datasets"]:
        ds = load(manifest, kind, root=root, cache_dir=cache_dir)
        loaded[kind] = ds
        sizes = ", ".join(f"{split}={d.num_rows}" for split, d in ds.items())
        print(f"  {kind}: {sizes}; columns {ds['train'].column_names if 'train' in ds else list(ds)}")
        print("    " + TRL_HINT[kind].format(name=kind).replace("\n", "\n    "))
    return loaded


def follow(args: argparse.Namespace, on_batch: Callable[[dict[str, Any]], Any]) -> int:
    """Call ``on_batch`` with each manifest announced on the topic; commit after it returns.

    A batch is handled once per run even if its announcement was repeated (after a
    batcher crash). A crash inside ``on_batch`` leaves the offset uncommitted, so the
    batch comes back on the next start rather than being skipped. Returns how many
    batches were handled.
    """
    from kafka import KafkaConsumer

    security: dict[str, Any] = {"security_protocol": args.security_protocol}
    if args.security_protocol.startswith("SASL"):
        security.update(sasl_mechanism=args.sasl_mechanism, sasl_plain_username=args.sasl_username,
                        sasl_plain_password=os.environ.get("KAFKA_SASL_PASSWORD"))
    if "SSL" in args.security_protocol and args.ssl_cafile:
        security["ssl_cafile"] = args.ssl_cafile
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.brokers.split(","), group_id=args.group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             # Sieve writes its outputs in Kafka transactions: read only committed ones
                             isolation_level="read_committed",
                             consumer_timeout_ms=int(args.timeout * 1000) if args.timeout else float("inf"),
                             **security)
    seen: set[str] = set()
    try:
        for record in consumer:
            manifest = json.loads(record.value)
            if manifest["batch_id"] not in seen:
                on_batch(manifest)
                seen.add(manifest["batch_id"])
            consumer.commit()
            if args.max_batches and len(seen) >= args.max_batches:
                break
    finally:
        consumer.close()
    return len(seen)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See docs/batches.md for the manifest and the topic contract.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--brokers", help="Kafka bootstrap servers, host:port[,host:port]")
    src.add_argument("--manifest", type=Path, help="load one batch from its manifest.json instead of Kafka")
    p.add_argument("--topic", default="sieve.batches", help="batches topic (default: %(default)s)")
    p.add_argument("--group", default="trainer", help="consumer group of this trainer (default: %(default)s)")
    p.add_argument("--max-batches", type=int, default=0, help="stop after this many batches (0: follow forever)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after this many idle seconds (0: never)")
    p.add_argument("--root", type=Path, help="where this machine mounts the batch directory, if not where "
                                             "the batcher wrote it")
    p.add_argument("--cache-dir", help="datasets cache directory")
    p.add_argument("--security-protocol", default="PLAINTEXT",
                   choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
    p.add_argument("--sasl-mechanism", help="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    p.add_argument("--sasl-username")
    p.add_argument("--ssl-cafile", help="CA bundle of the brokers' certificates")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.manifest:
        handle(json.loads(args.manifest.read_text()), args.root, args.cache_dir)
        return 0
    done = follow(args, lambda manifest: handle(manifest, args.root, args.cache_dir))
    print(f"handled {done} batches", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
