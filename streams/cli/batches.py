"""``sieve batches``: cut, list and inspect fine-tuning batches; and the batch options of ``sieve curate``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

HELP = """\
Fine-tuning batches are directories of shard files (JSONL and Parquet, a stable
train/validation split per example id), an HTML report and a manifest.json with
the sha256 of every file. `sieve batcher` cuts them from the stream and announces
each manifest on the batches topic; `sieve curate --batches DIR` cuts them in
file mode. A batch closes when it holds batches.max_examples examples, when its
oldest example is batches.max_age_s old, or when an operator cuts it:

  sieve batches cut                    ask the running batcher to close the open batch now
                                       (a message on the control topic, sieve.control)
  sieve batches cut --wait 60          ... and wait for its announcement on sieve.batches
  sieve batches cut --dir DIR          close the open batch of a directory no batcher runs on
  sieve batches list [--dir DIR]       closed batches, and what waits in the open one
  sieve batches show ID [--verify]     a batch's manifest; --verify checks every sha256

DIR defaults to batches.dir (SIEVE_BATCHES__DIR, default ./sieve-batches).
See docs/batches.md for the manifest and the topic contract.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batches", help="cut, list and inspect fine-tuning batches", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    p.add_argument("--dir", type=Path, help="batch directory (default: batches.dir)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    cut = actions.add_parser("cut", help="close the open batch now (operator's request)")
    cut.add_argument("--note", help="why; travels with the request and into the batcher's log")
    cut.add_argument("--wait", type=float, default=0.0, metavar="S",
                     help="seconds to wait for the batch's announcement on the batches topic (stream mode)")
    actions.add_parser("list", help="closed batches (id, time, trigger, examples, announced) and the open batch")
    show = actions.add_parser("show", help="print a batch's manifest")
    show.add_argument("batch_id", metavar="ID")
    show.add_argument("--verify", action="store_true", help="check the sha256 and size of every file")
    for a in (cut, actions.choices["list"], show):
        a.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML settings file")
        a.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help="batch directory")
    p.set_defaults(func=run)


def _dir(args: argparse.Namespace, settings: Any) -> Path:
    return Path(args.dir) if getattr(args, "dir", None) else Path(settings.batches.dir)


def run(args: argparse.Namespace) -> int:
    from streams.config import load_settings

    settings = load_settings(getattr(args, "config", None))
    return {"cut": _cut, "list": _list, "show": _show}[args.action](args, settings)


def _cut(args: argparse.Namespace, settings: Any) -> int:
    from batches.assembler import StateLockedError

    if args.wait < 0:
        raise ValueError(f"--wait must be >= 0 seconds, got {args.wait}")
    if getattr(args, "dir", None):
        try:
            with _assembler(settings, Path(args.dir)) as assembler:
                manifest = assembler.request_close()
        except StateLockedError as exc:
            print(f"sieve batches cut: {exc}", file=sys.stderr)
            return 1
        if manifest is None:
            print(json.dumps({"cut": None, "why": "the open batch is empty"}))
        else:
            print(json.dumps({"cut": manifest["batch_id"], "examples": manifest["counts"]["examples"],
                              "manifest": str(Path(manifest["location"]["dir"]) / "manifest.json")}))
        return 0
    return _cut_via_topic(args, settings)


def _assembler(settings: Any, root: Path):
    from dataclasses import replace

    from batches.assembler import BatchAssembler

    return BatchAssembler.from_settings(replace(settings.batches, dir=str(root)))


def _cut_via_topic(args: argparse.Namespace, settings: Any) -> int:
    from kafka import KafkaConsumer, KafkaProducer

    from streams.batcher import control_message
    from streams.topics import client_kwargs, ensure_topics

    k = settings.kafka
    ensure_topics(k, [k.control_topic, k.batches_topic])
    conn = client_kwargs(k)
    watcher = None
    if args.wait:  # find the end of the batches topic before asking, so the announcement cannot slip past
        from kafka import TopicPartition

        watcher = KafkaConsumer(group_id=None, enable_auto_commit=False, **conn)
        parts = [TopicPartition(k.batches_topic, p) for p in sorted(watcher.partitions_for_topic(k.batches_topic))]
        watcher.assign(parts)
        watcher.seek_to_end(*parts)
        for tp in parts:
            watcher.position(tp)  # resolve the end offsets now
    msg = control_message(getpass.getuser(), args.note)
    producer = KafkaProducer(acks="all", client_id="sieve-batches-cut", **conn)
    try:
        producer.send(k.control_topic, json.dumps(msg).encode()).get(timeout=30)
    finally:
        producer.close()
    print(json.dumps({"requested": msg, "topic": k.control_topic}))
    if watcher is None:
        return 0
    try:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            for records in watcher.poll(timeout_ms=500).values():
                for rec in records:
                    manifest = json.loads(rec.value)
                    closed_at = manifest.get("closed_at_unix", 0)
                    if manifest.get("trigger") == "request" and closed_at >= msg["requested_at"]:
                        print(json.dumps({"announced": manifest["batch_id"],
                                          "examples": manifest["counts"]["examples"]}))
                        return 0
    finally:
        watcher.close()
    print(f"sieve batches cut: no batch announced on {k.batches_topic} within {args.wait:g}s; is `sieve batcher` "
          "running, and was the open batch empty?", file=sys.stderr)
    return 1


def _list(args: argparse.Namespace, settings: Any) -> int:
    from batches.assembler import open_batch_summary, read_ledger

    root = _dir(args, settings)
    if not (root / "_state").is_dir():
        raise FileNotFoundError(f"no batch state in {root}; pass --dir or set batches.dir")
    rows = read_ledger(root)
    print(f"{'batch':<17} {'closed at':<21} {'trigger':<13} {'examples':>9}  announced")
    for e in rows:
        print(f"{e['batch_id']:<17} {e['closed_at']:<21} {e['trigger']:<13} {e['examples']:>9}  "
              f"{'yes' if e['published'] else 'no'}")
    waiting = open_batch_summary(root)
    print(f"open batch: {waiting['examples']} examples" + (f", oldest from {waiting['oldest']}"
                                                          if waiting["oldest"] else ""))
    return 0


def _show(args: argparse.Namespace, settings: Any) -> int:
    from batches.manifest import verify_files

    path = _dir(args, settings) / args.batch_id / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no batch {args.batch_id!r}: {path} does not exist (see `sieve batches list`)")
    manifest = json.loads(path.read_text())
    print(json.dumps(manifest, indent=2))
    if args.verify:
        problems = verify_files(manifest, root=path.parent)
        for p in problems:
            print(f"MISMATCH {p}", file=sys.stderr)
        print(f"verified {len(manifest['files'])} files: {'OK' if not problems else f'{len(problems)} problems'}",
              file=sys.stderr)
        return 1 if problems else 0
    return 0


# --------------------------------------------------------------------------- sieve curate --batches

def add_curate_options(p: argparse.ArgumentParser) -> None:
    """The ``--batches`` options of ``sieve curate`` (file mode cuts batches too)."""
    g = p.add_argument_group("fine-tuning batches (see `sieve batches --help`)")
    g.add_argument("--batches", type=Path, metavar="DIR",
                   help="also cut accepted examples into fine-tuning batches in DIR; state in DIR/_state carries "
                        "over between runs, and an id already batched is never batched again")
    g.add_argument("--batch-size-examples", type=int, metavar="N",
                   help="close a batch at N examples (default: batches.max_examples)")
    g.add_argument("--batch-max-age-s", type=float, metavar="S",
                   help="close a batch when its oldest example is S seconds old (default: batches.max_age_s)")
    g.add_argument("--batch-keep-open", action="store_true",
                   help="leave the last, partial batch open for the next run instead of closing it at the end")


class CurateBatches:
    """Context manager that cuts batches while ``curate`` runs (a no-op without ``--batches``).

    Pass :attr:`on_decisions` to :func:`quality.filemode.curate`. On a normal exit the
    last, partial batch is closed (unless ``--batch-keep-open``); after an error it
    stays open, durably, for the next run.
    """

    def __init__(self, args: argparse.Namespace, settings: Any, pipeline: Any) -> None:
        self.closed: list[dict[str, Any]] = []
        self.assembler = None
        self.keep_open = bool(getattr(args, "batch_keep_open", False))
        if getattr(args, "batches", None) is None:
            return
        from dataclasses import replace

        from batches.assembler import BatchAssembler, StateLockedError

        overrides: dict[str, Any] = {"dir": str(args.batches)}
        if args.batch_size_examples is not None:
            overrides["max_examples"] = args.batch_size_examples
        if args.batch_max_age_s is not None:
            overrides["max_age_s"] = args.batch_max_age_s
        try:
            self.assembler = BatchAssembler.from_settings(replace(settings.batches, **overrides))
        except StateLockedError as exc:
            raise ValueError(f"--batches {args.batches}: {exc}") from None
        self.versions = pipeline.versions()
        book = getattr(pipeline, "overrides", None)
        for ov in (book.by_id.values() if book is not None else ()):  # revocations and blocks (batches/overrides.py)
            self.closed.extend(self.assembler.apply_override(ov, feed=False))

    @property
    def on_decisions(self) -> Callable[[list], None] | None:
        return self._feed if self.assembler is not None else None

    def _feed(self, decisions: list) -> None:
        self.closed.extend(self.assembler.feed_decisions(decisions, self.versions))
        aged = self.assembler.tick()
        if aged:
            self.closed.append(aged)

    def __enter__(self) -> "CurateBatches":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.assembler is None:
            return
        try:
            if exc_type is None and not self.keep_open:
                last = self.assembler.close("end_of_input")
                if last:
                    self.closed.append(last)
        finally:
            self.assembler.shutdown()

    def summary(self) -> dict[str, Any]:
        """``{"batches": [...]}`` for curate's printed summary; empty without ``--batches``."""
        if self.assembler is None:
            return {}
        return {"batches": [{"batch_id": m["batch_id"], "examples": m["counts"]["examples"],
                             "trigger": m["trigger"], "manifest": str(Path(m["location"]["dir"]) / "manifest.json")}
                            for m in self.closed]}
