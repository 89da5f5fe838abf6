"""``sieve curate``: file mode, the same pipeline core as the stream worker."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from streams.cli.batches import CurateBatches, add_curate_options

log = logging.getLogger(__name__)

HELP = """\
Reads JSONL files (also .jsonl.gz), one example per line in any supported format
(Alpaca, OpenAI messages, ShareGPT, preference pairs), and writes to --out:
  accepted.jsonl     envelopes of examples good enough to train on
  rejected.jsonl     envelopes with reason codes (duplicate_exact, refusal, ...)
  dead_letter.jsonl  lines that could not be parsed, with the raw payload and error
  summary.json       counts by decision, reason, kind (sft, preference), source and input
                     file; deciding reason x source (reasons_by_source); score
                     distributions by kind and decision (scores_by_kind); counted scores
                     such as PII redactions (score_counts); the cuts (thresholds); timings
  report.html        the same as a page to read: decisions by source and input file,
                     reasons with counts, accepted against rejected score histograms with
                     the cuts drawn, the reason x source table (needs matplotlib;
                     --no-report to skip)
Every non-blank input line ends in exactly one of the three files. Bad lines are data,
not errors (a line that makes a stage raise is a processing_error dead letter). Exit
status: 0; 2 with a one-line message for usage and I/O problems (a missing or unreadable
input, --out naming a file or an unwritable place), checked before any model loads; 3
when a stage is broken (it fails on every example of a batch and on a known-good canary;
no summary.json is written). Try settings on a sample first with --limit N.
Exact and near duplicates are detected across all input files, in the order given.

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
    add_run_options(p)
    p.add_argument("--no-report", action="store_true", help="do not write DIR/report.html")
    p.add_argument("--overrides", type=Path, metavar="FILE",
                   help="operators' overrides to apply (JSONL, written by `sieve review`); default: "
                        "DIR/overrides.jsonl when it exists")
    p.add_argument("--no-overrides", action="store_true", help="apply no overrides, not even DIR/overrides.jsonl")
    add_curate_options(p)
    p.set_defaults(func=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options ``sieve curate`` and ``sieve score`` share."""
    p.add_argument("--batch-size", type=int, default=256,
                   help="records per pipeline batch (default: 256); decisions do not depend on it")
    p.add_argument("--limit", type=int, metavar="N", help="decide only the first N non-blank input lines (a trial)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_run_args(args: argparse.Namespace) -> None:
    """Usage errors of the shared options, before anything is loaded."""
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be > 0, got {args.limit}")


def progress_bar(args: argparse.Namespace, desc: str):
    """A progress bar with the inputs' line count as total (so it shows an ETA); counted cheaply first."""
    from tqdm import tqdm

    from quality.filemode import count_records

    total = None if args.no_progress else count_records(args.inputs, args.limit)
    return tqdm(total=total, unit="ex", desc=desc, disable=args.no_progress or None, file=sys.stderr,
                dynamic_ncols=True)


def run(args: argparse.Namespace) -> int:
    from quality.filemode import Summary, check_inputs, check_writable_dir, curate, prepare_out_dir
    from streams.assemble import build_pipeline
    from streams.config import load_settings

    check_run_args(args)
    check_inputs(args.inputs)  # before any model loads: a typo costs a second, not a model load
    prepare_out_dir(args.out, args.inputs)
    if args.batches is not None:
        check_writable_dir(args.batches, f"--batches {args.batches}")
    settings = load_settings(args.config)
    pipeline_settings = settings.pipeline
    if args.benchmarks:
        import dataclasses

        for path in args.benchmarks:
            if not path.exists():
                raise FileNotFoundError(f"--benchmarks {path}: no such file or directory")
        decontam = dataclasses.replace(pipeline_settings.decontam, benchmark_paths=tuple(map(str, args.benchmarks)),
                                       reload_interval_s=0.0)
        pipeline_settings = dataclasses.replace(pipeline_settings, decontam=decontam)
    overrides = _overrides(args)
    report = not args.no_report and _report_possible()
    pipeline = build_pipeline(pipeline_settings, overrides=overrides)
    summary = Summary()
    with progress_bar(args, "curate") as bar, CurateBatches(args, settings, pipeline) as batches:
        result = curate(pipeline, args.inputs, args.out, batch_size=args.batch_size, progress=bar.update,
                        on_decisions=batches.on_decisions, limit=args.limit, summary=summary)
        bar.total = bar.n  # blank lines were counted too
    extra = {}
    if not report and (args.out / "report.html").is_file():
        (args.out / "report.html").unlink()  # a report of an earlier run would mislead
    if report:
        from batches.run_report import write_run_report

        try:
            extra["report"] = str(write_run_report(args.out / "report.html", result, summary.report_series()))
        except Exception:  # noqa: BLE001 - the decisions are written: a report that cannot be drawn must not undo that
            log.exception("report.html could not be drawn (the outputs and summary.json are complete)")
    print(json.dumps({"out": str(args.out), "total": result["total"], "decisions": result["decisions"],
                      "examples_per_s": result["examples_per_s"], **extra, **batches.summary()}))
    return 0


def _report_possible() -> bool:
    """Whether report.html can be drawn; says why not (once, before the run) when it cannot."""
    try:
        from batches.plots import require_matplotlib

        require_matplotlib("report.html")
        return True
    except ImportError as exc:
        print(f"sieve curate: no report.html: {exc}; or pass --no-report", file=sys.stderr)
        return False


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
