"""``sieve curate``: file mode, the same pipeline core as the stream worker."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streams.cli.batches import CurateBatches, add_curate_options

HELP = """\
Reads JSONL files (also .jsonl.gz), one example per line in any supported format
(Alpaca, OpenAI messages, ShareGPT, preference pairs), and writes to --out:
  accepted.jsonl     envelopes of examples good enough to train on
  rejected.jsonl     envelopes with reason codes (duplicate_exact, refusal, ...)
  dead_letter.jsonl  lines that could not be parsed, with the raw payload and error
  summary.json       counts by decision, reason and source; score distributions; timings
Every non-blank input line ends in exactly one of the three files. Bad lines are data,
not errors (a line that makes a stage raise is a processing_error dead letter): the exit
status is 0, or 2 for usage or I/O problems, or 3 when a stage is broken (it fails on
every example of a batch and on a known-good canary; no summary.json is written).
Exact duplicates are detected across all input files, in the order given.

Operators' overrides (`sieve review`) are applied from --overrides FILE, or from
DIR/overrides.jsonl when it exists: a force-accepted id ends in accepted.jsonl, a
force-rejected one in rejected.jsonl (reason operator_rejected), each with an
"overridden" field saying who, why, when and what the pipeline had decided;
summary.json's "overrides" counts what was applied and lists ids never seen.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curate", help="file mode: decide every line of JSONL files",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="JSONL or .jsonl.gz files")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (created)")
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    p.add_argument("--benchmarks", nargs="+", type=Path, metavar="PATH", default=None,
                   help="evaluation benchmarks to decontaminate against: JSONL files with a 'text' field "
                        "(and 'id'/'benchmark'), text files with one item per line, or directories of them. "
                        "An example whose prompt contains >= pipeline.decontam.threshold (0.8) of a benchmark "
                        "item's word 8-grams is rejected as 'contaminated' and its envelope names the item. "
                        "Overrides pipeline.decontam.benchmark_paths")
    p.add_argument("--batch-size", type=int, default=256, help="records per pipeline batch (default: 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overrides", type=Path, metavar="FILE",
                   help="operators' overrides to apply (JSONL, written by `sieve review`); default: "
                        "DIR/overrides.jsonl when it exists")
    p.add_argument("--no-overrides", action="store_true", help="apply no overrides, not even DIR/overrides.jsonl")
    add_curate_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from quality.filemode import curate
    from streams.assemble import build_pipeline
    from streams.config import load_settings

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    settings = load_settings(args.config)
    pipeline_settings = settings.pipeline
    if args.benchmarks:
        import dataclasses

        decontam = dataclasses.replace(pipeline_settings.decontam, benchmark_paths=tuple(map(str, args.benchmarks)),
                                       reload_interval_s=0.0)
        pipeline_settings = dataclasses.replace(pipeline_settings, decontam=decontam)
    pipeline = build_pipeline(pipeline_settings, overrides=_overrides(args))
    with tqdm(unit="ex", desc="curate", disable=args.no_progress or None, file=sys.stderr) as bar, \
            CurateBatches(args, settings, pipeline) as batches:
        summary = curate(pipeline, args.inputs, args.out, batch_size=args.batch_size, progress=bar.update,
                         on_decisions=batches.on_decisions)
    print(json.dumps({"out": str(args.out), "total": summary["total"], "decisions": summary["decisions"],
                      "examples_per_s": summary["examples_per_s"], **batches.summary()}))
    return 0


def _overrides(args: argparse.Namespace):
    """The overrides to apply: --overrides FILE, else OUT/overrides.jsonl when present; says so on stderr."""
    from streams.review.files import OVERRIDES_FILE, load_override_book

    if args.no_overrides:
        return None
    path = args.overrides or args.out / OVERRIDES_FILE
    if args.overrides is not None and not path.is_file():
        raise FileNotFoundError(f"--overrides {path}: no such file")
    if not path.is_file():
        return None
    book = load_override_book(path)
    print(f"sieve curate: applying {len(book)} override(s) from {path} ({book.records} records; the last per id "
          "stands)", file=sys.stderr)
    return book
