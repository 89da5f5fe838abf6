"""``sieve score``: every record annotated with every score, nothing filtered."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = """\
Runs the whole pipeline in score mode over JSONL files (also .jsonl.gz) and writes one
envelope per input line to --out, in input order. Every stage runs on every parseable
record, so each envelope carries every score:
  quality              quality head, 0..1 (estimated chance the example is top-rated)
  reward               reward head (SFT), or reward_chosen / reward_rejected /
                       reward_margin (pairs; margin = chosen - rejected)
  length_bias          pairs: log(len(chosen) / len(rejected)), positive = chosen longer
  semantic_similarity  cosine to the nearest earlier example (when semantic dedup is on)
`decision` and `reasons` say what `sieve curate` would have decided (all reasons, not
only the first), but nothing is dropped and no dedup index keeps what it sees, so
duplicates are judged against nothing. Lines that cannot be parsed appear as
dead_letter envelopes, so every line is accounted for.
Use it to calibrate thresholds: e.g. pick scoring.quality_threshold from the quality
distribution printed at the end (also in FILE.summary.json).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="annotate every record with every score, no filtering",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="JSONL or .jsonl.gz files")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="output JSONL file (replaced)")
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    p.add_argument("--batch-size", type=int, default=256, help="records per pipeline batch (default: 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from quality.filemode import annotate
    from streams.assemble import build_pipeline
    from streams.config import load_settings

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    for path in args.inputs:
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
    settings = load_settings(args.config)
    pipeline = build_pipeline(settings.pipeline, score_mode=True)
    with tqdm(unit="ex", desc="score", disable=args.no_progress or None, file=sys.stderr) as bar:
        result, summary_path = annotate(pipeline, args.inputs, args.out, batch_size=args.batch_size,
                                        progress=bar.update)
    print(json.dumps({"out": str(args.out), "summary": str(summary_path), "total": result["total"],
                      "decisions": result["decisions"], "scores": result["scores"],
                      "examples_per_s": result["examples_per_s"]}))
    return 0
