"""``sieve score``: every record annotated with every score, nothing filtered."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streams.cli.curate import add_run_options, check_run_args, progress_bar

SCORES = "{score table}"

HELP = f"""\
Runs the whole pipeline in score mode over JSONL files (also .jsonl.gz) and writes one
envelope per input line to --out, in input order, with a summary beside it
(FILE.summary.json). Every stage runs on every parseable record and nothing is dropped,
so each envelope carries every score its stages write (those that apply to its kind):
{SCORES}
(`python -m streams.docs` writes the same table into docs/scores.md.)

Duplicates: the dedup stages judge each record against EVERY earlier parseable record
of the input (in the order given), whatever was or would be decided about those, and
then keep it. So near_jaccard and semantic_similarity are the similarity to the most
similar earlier record, exact and near duplicates are flagged against the first copy,
and nothing depends on --batch-size. `reasons` lists every check a record fails on its
own; `decision` is rejected when there is one. That is what a threshold is calibrated
on, but it is not always what `sieve curate` decides: curate compares only with
accepted examples, so a copy of a record rejected for another reason is accepted there.
Lines that cannot be parsed appear as dead_letter envelopes, so every line is accounted for.
The one thing --batch-size can move is the last digit of a model score (about 1e-6): the
encoder pads each batch to its longest example, and float32 sums in another order.

Calibrate on the distributions by kind printed at the end (also in FILE.summary.json,
scores_by_kind): pick scoring.quality_threshold from scores_by_kind.sft.quality
(preference pairs are not gated on quality unless scoring.apply_quality_to_pairs),
scoring.min_margin from scores_by_kind.preference.reward_margin, and the dedup
thresholds from near_jaccard and semantic_similarity. Exit status: 0; 2 with a one-line
message for usage and I/O problems, checked before any model loads; 3 when a stage is
broken (it fails on every example of a batch and on a known-good canary).
"""


class _HelpWithScores(argparse.RawDescriptionHelpFormatter):
    """Fills in the score table when help is printed (not on every `sieve` start: it imports every stage)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if SCORES in text:
            import streams.assemble  # noqa: F401 - registers the model stage, whose scores are in the table
            from quality.registry import scores_text

            text = text.replace(SCORES, scores_text())
        return super()._fill_text(text, width, indent)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="annotate every record with every score, no filtering",
                       description=HELP, formatter_class=_HelpWithScores)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="JSONL or .jsonl.gz files")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="output JSONL file (replaced)")
    p.add_argument("--config", type=Path, help="TOML settings file (default: $SIEVE_CONFIG)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from quality.filemode import annotate, check_inputs, prepare_out_file
    from streams.assemble import build_pipeline
    from streams.config import load_settings

    check_run_args(args)
    check_inputs(args.inputs)  # before any model loads
    prepare_out_file(args.out, args.inputs)
    settings = load_settings(args.config)
    pipeline = build_pipeline(settings.pipeline, score_mode=True)
    with progress_bar(args, "score") as bar:
        result, summary_path = annotate(pipeline, args.inputs, args.out, batch_size=args.batch_size,
                                        progress=bar.update, limit=args.limit)
        bar.total = bar.n
    print(json.dumps({"out": str(args.out), "summary": str(summary_path), "total": result["total"],
                      "decisions": result["decisions"], "by_kind": result["by_kind"],
                      "scores_by_kind": {kind: {name: d["all"] for name, d in scores.items()}
                                         for kind, scores in result["scores_by_kind"].items()},
                      "score_counts": result["score_counts"], "thresholds": result["thresholds"],
                      "examples_per_s": result["examples_per_s"]}))
    return 0
