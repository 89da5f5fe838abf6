"""Model work spent on duplicates once exact and near dedup move after the model.

    .venv/bin/python bench/sim_data.py             # once: encode the dev data (cached)
    .venv/bin/python bench/sim_model_waste.py      # ~3 min; figures into docs/scaling.md

Today one process runs exact and near dedup before the model, so a duplicate costs no
encoder pass. In the two-role design the scorer is stateless: every input that
survives the stateless checks (PII, heuristics, pair structure, decontamination) is
encoded, and the decider rejects duplicates afterwards. This script runs the real
pipeline (``quality.build.build_stages`` with the defaults, decontamination against
the dev benchmarks) over every dev instruction and preference file in three arrival
orders, with the real model stage whose encoder reads the cache of
``bench/sim_data.py`` (same embeddings, heads and thresholds; no encoding here), and
counts, of the inputs a scorer would encode, those the decider then rejects as
``duplicate_exact``, ``duplicate_near`` or ``duplicate_semantic``: examples, encoder
sequences (a preference pair is two: chosen and rejected side) and tokens (what the
encoder runs after truncation to ``max_tokens``, special tokens included).

A scorer-side view of the exact and near indexes would be eventually consistent: it
knows an accepted example only some time after the decider accepted it. The "view
behind by L" columns count the duplicates whose first accepted copy was decided at
least L inputs earlier, which such a view could have skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import write_section  # noqa: E402
from sim_data import DATA, ROOT, CachedEncoder, SegmentCache, dev_files, raw_lines, seq_key, sequences  # noqa: E402

import models.stage  # noqa: E402,F401 - registers the model stage, as streams/assemble.py does
from quality.build import build_pipeline  # noqa: E402
from quality.config import PipelineSettings, load  # noqa: E402
from quality.dedup.exact import content_key  # noqa: E402
from quality.pipeline import Pipeline  # noqa: E402
from quality.records import RawRecord  # noqa: E402
from quality.reasons import Reason  # noqa: E402

BATCH = 256  # sieve curate's batch
AFTER_MODEL = {Reason.DUPLICATE_EXACT.value: "exact_dedup", Reason.DUPLICATE_NEAR.value: "near_dedup",
               Reason.DUPLICATE_SEMANTIC.value: "semantic_dedup"}
SCORER_REASONS = {Reason.LOW_QUALITY.value, Reason.PAIR_LOW_MARGIN.value} | set(AFTER_MODEL)
LAGS = (0, BATCH, 4 * BATCH, 16 * BATCH)


def orders(data: Path, seed: int) -> dict[str, list[RawRecord]]:
    """The dev input in three arrival orders."""
    import numpy as np

    per_file = [raw_lines(p) for p in dev_files(data)]
    concat = [r for lines in per_file for r in lines]
    inter, depth = [], max(len(x) for x in per_file)
    for k in range(depth):  # one line of each file in turn: apps logging at once
        inter += [lines[k] for lines in per_file if k < len(lines)]
    shuffled = [concat[i] for i in np.random.default_rng(seed).permutation(len(concat))]
    return {"concatenated (file by file, as `sieve curate instruction/*.jsonl preference/*.jsonl`)": concat,
            "interleaved (one line of each file in turn)": inter, f"shuffled (seed {seed})": shuffled}


def pipeline(data: Path, cache: SegmentCache) -> tuple[Pipeline, CachedEncoder]:
    settings = load(PipelineSettings, env={}, overrides={"decontam.benchmark_paths": [str(data / "benchmarks")]})
    pipe = build_pipeline(settings)
    model = next((s for s in pipe.stages if s.name == "model_score"), None)
    if model is None:
        raise RuntimeError("the pipeline has no model stage: install the models extra (pip install 'sieve[models]')")
    enc = CachedEncoder(model.encoder, cache)
    model.encoder = enc
    return pipe, enc


def cost(ex, cache: SegmentCache, budget: int, special: int) -> tuple[int, int]:
    """(encoder sequences, tokens) the model stage spends on one example."""
    seqs = sequences([ex])
    got = cache.take([seq_key(p, r) for p, r in seqs])
    tokens = sum(min(int(p) + int(r), budget) + special for p, r in zip(got["prompt_tokens"], got["response_tokens"]))
    return len(seqs), tokens


def run(raws: list[RawRecord], data: Path, cache: SegmentCache) -> dict:
    pipe, enc = pipeline(data, cache)
    special = enc._n_special
    budget = enc.max_tokens - special
    pos_of_accepted: dict[str, int] = {}
    scorer = Counter()          # examples, sequences, tokens the scorer would encode
    today = Counter()           # the same for what reaches the model today
    dup = {r: Counter() for r in AFTER_MODEL}
    saved = {lag: Counter() for lag in LAGS}  # exact+near duplicates a view L behind would know
    saved_exact = {lag: Counter() for lag in LAGS}
    first_reasons = Counter()
    memo = Counter()            # repeats of content the scorer already encoded (any decision)
    encoded: set[bytes] = set()
    t0 = time.perf_counter()
    for start in range(0, len(raws), BATCH):
        for k, d in enumerate(pipe.process(raws[start:start + BATCH])):
            pos = start + k
            reason = d.reasons[0] if d.reasons else d.decision
            first_reasons[reason] += 1
            if d.decision == "accepted":
                pos_of_accepted.setdefault(d.id, pos)
            if d.decision == "dead_letter" or not (d.decision == "accepted" or reason in SCORER_REASONS):
                continue
            seqs, tokens = cost(d.example, cache, budget, special)
            c = Counter(examples=1, sequences=seqs, tokens=tokens)
            scorer.update(c)
            key = content_key(d.example)
            if key in encoded:
                memo.update(c)
            encoded.add(key)
            if reason in AFTER_MODEL:
                dup[reason].update(c)
            else:
                today.update(c)
            if reason in (Reason.DUPLICATE_EXACT.value, Reason.DUPLICATE_NEAR.value):
                first = pos_of_accepted.get(d.details.get(AFTER_MODEL[reason]))
                for lag in LAGS:
                    if first is not None and first <= pos - lag:
                        saved[lag].update(c)
                        if reason == Reason.DUPLICATE_EXACT.value:
                            saved_exact[lag].update(c)
    return {"inputs": len(raws), "scorer": scorer, "today": today, "dup": dup, "saved": saved,
            "saved_exact": saved_exact, "memo": memo, "reasons": first_reasons, "misses": enc.misses,
            "seconds": time.perf_counter() - t0}


def share(part: Counter, whole: Counter, key: str) -> str:
    return f"{part[key]:,} ({part[key] / whole[key]:.1%})" if whole[key] else "0"


def report(results: dict[str, dict], n_files: int) -> list[str]:
    n_lines = next(iter(results.values()))["inputs"]
    lines = [f"Measured {time.strftime('%Y-%m-%d')} by `bench/sim_model_waste.py`: the real pipeline (defaults, "
             f"decontamination against the dev benchmarks, batches of {BATCH} as `sieve curate`) over all {n_files} "
             f"dev instruction and preference files, {n_lines:,} lines. `scorer encodes`: inputs that survive the "
             "stateless checks, which a stateless scorer runs the model on; the rest are rejected before it. "
             "Sequences: one per SFT example, two per preference pair; tokens after truncation to 256.", "",
             "| arrival order | scorer encodes: examples / sequences / tokens | of which duplicate_exact "
             "| duplicate_near | duplicate_semantic | exact + near, share of tokens |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        s, dup = r["scorer"], r["dup"]
        en_tok = dup["duplicate_exact"]["tokens"] + dup["duplicate_near"]["tokens"]
        lines.append(f"| {name} | {s['examples']:,} / {s['sequences']:,} / {s['tokens']:,} | "
                     f"{share(dup['duplicate_exact'], s, 'examples')} | "
                     f"{share(dup['duplicate_near'], s, 'examples')} | "
                     f"{share(dup['duplicate_semantic'], s, 'examples')} | {en_tok / s['tokens']:.1%} |")
    lines += ["", "Shares of the examples the scorer encodes. What a scorer-side, eventually consistent view of the "
              "exact and near indexes could skip, by how far (in inputs) the view is behind the decider: "
              "examples (share of scorer examples), and share of scorer tokens; in brackets the exact index alone.",
              "", "| arrival order | " + " | ".join(f"view behind by {lag:,}" for lag in LAGS) + " |",
              "|---|" + "---:|" * len(LAGS)]
    for name, r in results.items():
        s = r["scorer"]
        cells = [f"{r['saved'][lag]['examples']:,} ({r['saved'][lag]['examples'] / s['examples']:.1%}; "
                 f"tokens {r['saved'][lag]['tokens'] / s['tokens']:.1%}) [{r['saved_exact'][lag]['examples']:,}]"
                 for lag in LAGS]
        lines.append(f"| {name.split(' (')[0]} | " + " | ".join(cells) + " |")
    lines += ["", "A content-addressed memo in the scorer instead (model outputs by exact content key, no view of the "
              "decider's state; outputs are a pure function of the content): repeats of content already encoded, "
              "whatever it was decided, if the memo saw every earlier input: "
              + "; ".join(f"{name.split(' (')[0]} {r['memo']['examples']:,} examples "
                          f"({r['memo']['examples'] / r['scorer']['examples']:.1%}; tokens "
                          f"{r['memo']['tokens'] / r['scorer']['tokens']:.1%})" for name, r in results.items()) + "."]
    lines += ["", "Decisions by first reason (the same in every order up to ties between duplicates):", ""]
    for name, r in results.items():
        lines.append(f"- {name.split(' (')[0]}: " + ", ".join(f"{k} {v:,}" for k, v in r["reasons"].most_common()))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seed", type=int, default=7, help="seed of the shuffled order")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/scaling.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache = SegmentCache()
    results = {}
    for name, raws in orders(args.data, args.seed).items():
        results[name] = run(raws, args.data, cache)
        print(f"{name}: {results[name]['seconds']:.0f} s, {results[name]['misses']} encoder misses", file=sys.stderr)
    if any(r["misses"] for r in results.values()):
        cache.save()
    body = "\n".join(report(results, len(dev_files(args.data))))
    if not args.no_write:
        write_section(args.doc, "model_waste", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
