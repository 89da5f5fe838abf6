#!/usr/bin/env python3
"""A trainer's side of Sieve: follow ``sieve.batches``, verify each batch, load it with ``datasets``.

This file depends only on kafka-python and datasets (not on Sieve), as a training
job would. For every manifest announced on the batches topic it

1. checks the sha256 and size of every file the manifest lists,
2. loads each kind of example with ``datasets.load_dataset("json", data_files=...)``
   from the manifest alone (``sft``: a ``messages`` column; ``preference``:
   ``prompt``/``chosen``/``rejected``, all in conversational form, as TRL expects).
   The manifest lists only the kinds and splits that have rows: a batch without
   preference pairs has no ``preference`` entry, a small one may have no
   ``validation`` split (then there is no eval dataset),
3. drops the ids operators force-rejected after their batch closed: each manifest's
   ``revoked`` list names ids of EARLIER batches; they are dropped from those
   batches if this run loaded them, and from any batch loaded later (with
   ``--manifest``, the later manifests beside it in the batch directory are read
   for them). A trainer that already trained on such a batch drops them from its
   next epoch or run,
4. prints how to hand the splits to TRL's ``SFTTrainer`` or ``DPOTrainer``,
5. commits its offset, so a restarted trainer resumes after the last batch it loaded.
   SIGTERM or Ctrl-C stops it (exit 0); a batch it was loading is not committed, so it
   comes again on the next start.

Examples::

    python examples/trainer_consumer.py --brokers localhost:9092 --max-batches 1
    python examples/trainer_consumer.py --manifest sieve-batches/000001-ab12cd34/manifest.json
    python examples/trainer_consumer.py --brokers kafka:9092 --root /mnt/batches   # batches mounted elsewhere

The topic is ``--topic``, else ``$SIEVE_KAFKA__BATCHES_TOPIC`` (the variable Sieve's own
processes read), else ``sieve.batches``.

SASL/SSL: ``--security-protocol SASL_SSL --sasl-mechanism SCRAM-SHA-512 --sasl-username trainer``
with the password in ``$KAFKA_SASL_PASSWORD``, and ``--ssl-cafile`` for a private CA.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

TRL_HINT = {
    "sft": """\
from trl import SFTConfig, SFTTrainer
trainer = SFTTrainer(model=MODEL, args=SFTConfig(output_dir="out"), processing_class=TOKENIZER,
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


class Revocations:
    """Ids operators force-rejected after their batch closed, by the batch that holds them.

    Each manifest's ``revoked`` list (``[{"id", "batch_id", "who", "note", "at"}]``) names ids
    of earlier batches; closed batches are never rewritten, so the trainer drops them.
    """

    def __init__(self) -> None:
        self.by_batch: dict[str, dict[str, dict[str, Any]]] = {}

    def note(self, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """Records the manifest's revocations; returns those not known before."""
        new = []
        for entry in manifest.get("revoked") or []:
            ids = self.by_batch.setdefault(entry["batch_id"], {})
            if entry["id"] not in ids:
                ids[entry["id"]] = entry
                new.append(entry)
        return new

    def ids(self, batch_id: str) -> set[str]:
        return set(self.by_batch.get(batch_id, ()))

    def drop(self, batch_id: str, loaded: dict[str, Any]) -> int:
        """Removes the rows of ``batch_id``'s revoked ids from its loaded splits, in place; how many."""
        revoked = self.ids(batch_id)
        if not revoked:
            return 0
        dropped = 0
        for kind, splits in loaded.items():
            for split in list(splits):
                kept = splits[split].filter(lambda row: row["id"] not in revoked)
                dropped += splits[split].num_rows - kept.num_rows
                splits[split] = kept
        return dropped


def later_manifests(manifest_path: Path, manifest: dict[str, Any], root: Path | None = None) -> list[dict[str, Any]]:
    """Manifests of the batches closed after this one in the same batch directory (they carry its revocations).

    Raises:
        RuntimeError: one of them cannot be read: it may revoke ids of this batch, so loading without it
            could train on examples an operator took out.
    """
    batches_dir = root if root is not None else manifest_path.resolve().parent.parent
    later = []
    for path in sorted(batches_dir.glob("*/manifest.json")):
        if not path.parent.name[:1].isdigit():  # .tmp-<id>/: a close that never finished, never announced
            continue
        try:
            other = json.loads(path.read_text())
            seq = other["seq"]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise RuntimeError(f"cannot read {path} ({exc}); it may revoke ids of this batch: fix or remove it") \
                from None
        if seq > manifest["seq"]:
            later.append(other)
    return later


def handle(manifest: dict[str, Any], root: Path | None = None, cache_dir: str | None = None,
           revocations: Revocations | None = None, loaded_batches: dict[str, dict[str, Any]] | None = None
           ) -> dict[str, Any]:
    """Verify and load one announced batch, drop revoked ids; print what a trainer would do next.

    Args:
        revocations: what earlier (and, with ``--manifest``, later) manifests revoked; updated with this
            manifest's ``revoked`` list.
        loaded_batches: batches this run loaded before, by batch id; this manifest's revocations are
            dropped from them in place, and this batch is added.
    Returns:
        The loaded kinds: ``{kind: DatasetDict}`` with a ``train`` and/or ``validation`` split.
    """
    revocations = revocations if revocations is not None else Revocations()
    problems = verify(manifest, root)
    if problems:
        raise RuntimeError(f"batch {manifest['batch_id']} failed verification:\n  " + "\n  ".join(problems))
    print(f"batch {manifest['batch_id']}: {manifest['counts']['examples']} examples, closed by "
          f"{manifest['trigger']} at {manifest['closed_at']}; {len(manifest['files'])} files verified")
    if manifest.get("report"):
        print(f"  report: {manifest['report']['uri']}")
    for entry in revocations.note(manifest):
        print(f"  revoked: {entry['id']} of batch {entry['batch_id']} (by {entry.get('who')}: {entry.get('note')})")
    for batch_id, earlier in (loaded_batches or {}).items():
        if (n := revocations.drop(batch_id, earlier)):
            print(f"  dropped {n} revoked rows from batch {batch_id}, loaded earlier")
    loaded = {}
    for kind in manifest["datasets"]:  # only the kinds that have rows
        loaded[kind] = load(manifest, kind, root=root, cache_dir=cache_dir)
    if (n := revocations.drop(manifest["batch_id"], loaded)):
        print(f"  dropped {n} rows of this batch that operators revoked since")
    for kind, ds in loaded.items():
        sizes = ", ".join(f"{split}={d.num_rows}" for split, d in ds.items())
        print(f"  {kind}: {sizes}; columns {next(iter(ds.values())).column_names}")
        if "train" in ds:
            print("    " + TRL_HINT[kind].format(name=kind).replace("\n", "\n    "))
        else:
            print(f"    no train split (every {kind} row of this small batch fell in validation): "
                  "keep it for evaluation")
    if loaded_batches is not None:
        loaded_batches[manifest["batch_id"]] = loaded
    rows = sum(d.num_rows for ds in loaded.values() for d in ds.values())
    print(f"batch {manifest['batch_id']}: loaded, {rows} rows")
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
                             isolation_level="read_committed", **security)
    seen: set[str] = set()
    idle_since = time.monotonic()
    try:
        while not STOP.is_set():  # polls, not a blocking iterator: a stop request is seen within a second
            polled = consumer.poll(timeout_ms=500, max_records=1)
            if not polled:
                if args.timeout and time.monotonic() - idle_since >= args.timeout:
                    break
                continue
            idle_since = time.monotonic()
            for record in (r for records in polled.values() for r in records):
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
                                epilog="Revoked ids (a manifest's \"revoked\": operators' force-rejects of examples "
                                       "in earlier batches) are dropped from the batches this run loads. "
                                       "See docs/batches.md for the manifest and the topic contract.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--brokers", help="Kafka bootstrap servers, host:port[,host:port]")
    src.add_argument("--manifest", type=Path, help="load one batch from its manifest.json instead of Kafka (ids "
                                                   "revoked by the later manifests beside it are dropped)")
    p.add_argument("--topic", default=os.environ.get("SIEVE_KAFKA__BATCHES_TOPIC") or "sieve.batches",
                   help="batches topic (default: $SIEVE_KAFKA__BATCHES_TOPIC, else sieve.batches; now: %(default)s)")
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


#: Set by SIGTERM: the loop stops at its next poll even where the KeyboardInterrupt raised to
#: cut a long load short lands in a finalizer, which ignores it (seen under load).
STOP = threading.Event()


def _stop(signum: int, frame: Any) -> None:
    STOP.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    revocations = Revocations()
    if args.manifest:
        manifest = json.loads(args.manifest.read_text())
        for later in later_manifests(args.manifest, manifest, args.root):
            revocations.note(later)
        handle(manifest, args.root, args.cache_dir, revocations)
        return 0
    signal.signal(signal.SIGTERM, _stop)  # a container stop: leave cleanly, like Ctrl-C
    loaded_batches: dict[str, dict[str, Any]] = {}
    try:
        follow(args, lambda m: handle(m, args.root, args.cache_dir, revocations, loaded_batches))
    except KeyboardInterrupt:
        print("stopped; a batch being loaded was not committed and comes again on the next start", file=sys.stderr)
    else:
        if STOP.is_set():
            print("stopped between batches", file=sys.stderr)
    print(f"handled {len(loaded_batches)} batches", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
