"""``sieve train-scorer``: train the quality and reward heads on frozen encoder embeddings."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HELP = """\
Trains small heads on frozen encoder features (one encoder pass per example, cached)
and writes them, with MODEL_CARD.md, to --out. Point scoring.head_dir at that folder
to use them (SIEVE_PIPELINE__SCORING__HEAD_DIR=DIR). The card describes this run: when,
the command, encoder and feature set, each data file (size, SHA-256), rows, metrics
and the quality threshold.

A pipeline needs a quality head, and a reward head for the pair-margin check
(scoring.min_margin, on by default) unless scoring.reward_model replaces it. When the
folder will lack one the settings (--config, SIEVE_*) expect, train-scorer warns on
stderr, in the card and in its JSON ("warnings"), and so does every pipeline built on
the folder.

  quality head   --quality-data FILE... --quality-labels FILE [--label-key KEY]
                 a classifier of a boolean label column (matched on `id`), e.g. Alpaca
                 files with AlpaGasus labels (in_alpagasus_claude_t45). Its default
                 threshold keeps --keep-rate of the training rows.
  reward head    --pairs FILE... [--pair-labels FILE]
                 a Bradley-Terry reward on preference pairs (prompt, chosen, rejected);
                 rows whose label says valid_pair=false (ties, identical, mismatched
                 prompts) are left out.

Both report k-fold cross-validated metrics (folds by prompt hash) before fitting on all
rows, and are reproducible: same data, seed and encoder give the same weights.
Encoding is the slow part (about 20-40 examples/s on a laptop CPU); --cache DIR keeps
the embeddings so that a second run with other hyper-parameters takes seconds.

example (the shipped default head):
  sieve train-scorer --out models/default_head --cache .cache/embeddings \\
    --quality-data ../shared/data/instruction/alpaca_5000.jsonl \\
                   ../shared/data/instruction/alpagasus_random_9k.jsonl \\
    --quality-labels ../shared/data/labels/alpaca_alpagasus_labels.jsonl \\
    --pairs ../shared/data/preference/*.jsonl \\
    --pair-labels ../shared/data/labels/preference_labels.jsonl
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-scorer", help="train the quality / reward heads on frozen embeddings",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the heads (created)")
    p.add_argument("--config", type=Path, help="TOML settings the heads will run with (default: $SIEVE_CONFIG); "
                                               "used to warn about a head they expect")
    p.add_argument("--quality-data", nargs="+", type=Path, default=[], metavar="FILE", help="labelled SFT JSONL")
    p.add_argument("--quality-labels", type=Path, metavar="FILE", help="JSONL label rows keyed by id")
    p.add_argument("--label-key", default="in_alpagasus_claude_t45", help="boolean label column (default: %(default)s)")
    p.add_argument("--keep-rate", type=float, default=0.8,
                   help="share of training rows the default threshold keeps (default: %(default)s)")
    p.add_argument("--no-mismatched-negatives", action="store_true",
                   help="do not add (prompt, another row's response) negatives to the quality head's training")
    p.add_argument("--pairs", nargs="+", type=Path, default=[], metavar="FILE", help="preference-pair JSONL")
    p.add_argument("--pair-labels", type=Path, metavar="FILE", help="preference labels (valid_pair) keyed by id")
    p.add_argument("--model", default=None, help="encoder folder or id (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--max-tokens", type=int, default=256, help="encoder token limit (default: 256)")
    p.add_argument("--batch-size", type=int, default=32, help="encoder batch size (default: 32)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR", help="embedding cache folder")
    p.add_argument("--quality-l2", type=float, default=3.0, help="L2 on the quality head (default: %(default)s)")
    p.add_argument("--reward-l2", type=float, default=3.0, help="L2 on the reward head (default: %(default)s)")
    p.add_argument("--balance-sources", action="store_true",
                   help="weight reward pairs so each source (id prefix) counts the same")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization and folds (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models.encoder import Encoder
    from models.heads import TrainConfig
    from models.train import missing_heads, train_quality, train_reward, write_card
    from streams.config import load_settings

    if not args.quality_data and not args.pairs:
        raise ValueError("nothing to train: give --quality-data (with --quality-labels) and/or --pairs")
    if args.quality_data and args.quality_labels is None:
        raise ValueError("--quality-data needs --quality-labels (the label rows, keyed by id)")
    for path in [*args.quality_data, *args.pairs, *[p for p in (args.quality_labels, args.pair_labels) if p]]:
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file, not a directory")
    scoring = load_settings(args.config).pipeline.scoring
    expected = [w for w in missing_heads(args.out, scoring.min_margin, scoring.reward_model)
                if ("quality" in w and not args.quality_data) or ("reward" in w and not args.pairs)]
    for warning in expected:  # before the long encoding, so a mistake costs nothing
        print(f"sieve train-scorer: warning: {warning}", file=sys.stderr)
    encoder = Encoder(args.model, device=args.device, max_tokens=args.max_tokens, batch_size=args.batch_size,
                      progress=not args.no_progress)
    heads, report = [], {}
    if args.quality_data:
        head, report["quality"] = train_quality(
            encoder, args.quality_data, args.quality_labels, label_key=args.label_key, keep_rate=args.keep_rate,
            mismatched_negatives=not args.no_mismatched_negatives,
            cfg=TrainConfig(l2=args.quality_l2, seed=args.seed), folds=args.folds, cache_dir=args.cache)
        head.save(args.out, "quality")
        heads.append(head)
    if args.pairs:
        head, report["reward"] = train_reward(encoder, args.pairs, args.pair_labels, folds=args.folds,
                                              balance_sources=args.balance_sources,
                                              cfg=TrainConfig(l2=args.reward_l2, seed=args.seed), cache_dir=args.cache)
        head.save(args.out, "reward")
        heads.append(head)
    command = "sieve " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    warnings = missing_heads(args.out, scoring.min_margin, scoring.reward_model)
    for warning in warnings:
        if warning not in expected:
            print(f"sieve train-scorer: warning: {warning}", file=sys.stderr)
    write_card(args.out, heads, command, warnings)
    print(json.dumps({**report, **({"warnings": warnings} if warnings else {})}, indent=2))
    return 0
