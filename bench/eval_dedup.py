"""Scores the dedup, decontamination and PII-adjacent stages on the shared dev data.

    .venv/bin/python bench/eval_dedup.py --data ../shared/data --out docs/eval_dedup.md

Sections of the report:

* contamination: recall on ``exact``/``near`` rows of ``labels/contamination_labels.jsonl``
  (those whose matched benchmark item is in the given benchmark files, and all of
  them), false-positive rate on the ``partial_template`` hard negatives and on ``none``;
* GPTeacher Toolformer: precision/recall/F1 of near-dup (MinHash) and semantic
  (embedding) decisions, made in file order as the service makes them, against the
  author's cleaning at each similarity threshold (removed = positive), over a grid of
  our thresholds;
* MRPC: ROC-AUC of embedding cosine (and of MinHash Jaccard) against the paraphrase label;
* exact duplicate groups: how many of the labelled duplicates ExactDedup rejects.

Embeddings come from ``models.encoder.Encoder`` (all-MiniLM-L6-v2) and are cached
under ``out/eval_cache``; ``--no-embeddings`` skips the semantic parts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality.decont.ngram import Decontaminator, load_benchmarks  # noqa: E402
from quality.dedup.exact import ExactDedup  # noqa: E402
from quality.dedup.minhash import MinHasher, jaccard  # noqa: E402
from quality.dedup.near import NearDedup  # noqa: E402
from quality.dedup.semantic import SemanticDedup  # noqa: E402
from quality.normalize import normalize_example  # noqa: E402
from quality.records import Example, RawRecord, parse  # noqa: E402

GPT_THRESHOLDS = ("0.9", "0.8", "0.7", "0.6")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def load_examples(paths: list[Path]) -> list[Example]:
    out = []
    for path in paths:
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                ex = parse(RawRecord(line.rstrip(b"\n"), {"file": path.name, "line": lineno}))
                if isinstance(ex, Example):
                    out.append(normalize_example(ex))
    return out


def prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(pred & truth))
    p = tp / max(1, int(pred.sum()))
    r = tp / max(1, int(truth.sum()))
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "flagged": int(pred.sum())}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from models.metrics import auroc

    return auroc(labels, scores)


def embed(texts: list[str], cache: Path, name: str) -> np.ndarray:
    path = cache / f"{name}.npy"
    if path.exists():
        emb = np.load(path)
        if len(emb) == len(texts):
            return emb
    from models.encoder import Encoder

    enc = Encoder()
    t0 = time.perf_counter()
    emb = np.concatenate([enc.encode(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    print(f"encoded {len(texts)} texts for {name} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def eval_contamination(data: Path) -> list[str]:
    labels = {r["id"]: r for r in read_jsonl(data / "labels/contamination_labels.jsonl")}
    files = sorted((data / "instruction").glob("*.jsonl")) + sorted((data / "preference").glob("*.jsonl"))
    examples = [ex for ex in load_examples(files) if ex.id in labels]
    items = load_benchmarks([data / "benchmarks"])
    have = {it.id for it in items}
    stage = Decontaminator(items=items)
    t0 = time.perf_counter()
    verdicts = stage(examples)
    rate = len(examples) / (time.perf_counter() - t0)
    counts: Counter = Counter()
    for ex, v in zip(examples, verdicts):
        lab = labels[ex.id]
        level = lab["contamination_level"]
        in_files = any(m["benchmark_id"] in have for m in lab["matches"] or [])
        counts[(level, in_files, v.reason is not None)] += 1

    def share(level: str, in_files: bool | None) -> tuple[int, int]:
        keys = [k for k in counts if k[0] == level and (in_files is None or k[1] == in_files)]
        return sum(counts[k] for k in keys if k[2]), sum(counts[k] for k in keys)

    lines = ["## Contamination", "",
             f"{len(items)} benchmark items from `{data / 'benchmarks'}` (dev half only: labels matched against "
             f"dev ∪ holdout items, so positives whose items are all in the holdout half cannot be found here). "
             f"Threshold {stage.threshold} on item 8-gram containment; {len(examples)} labelled examples at "
             f"{rate:,.0f} examples/s.", "",
             "| level | rows | flagged | rate |", "|---|---:|---:|---:|"]
    for level, in_files, what in (("exact", True, "recall"), ("near", True, "recall"),
                                  ("exact", None, "recall, all rows"), ("near", None, "recall, all rows"),
                                  ("partial_template", None, "false-positive rate"),
                                  ("none", None, "false-positive rate")):
        hit, total = share(level, in_files)
        label = f"`{level}`" + (" (item in files)" if in_files else "")
        lines.append(f"| {label} | {total} | {hit} | {hit / total:.4f} ({what}) |" if total else
                     f"| {label} | 0 | 0 | n/a ({what}) |")
    return lines + [""]


def greedy_near(examples: list[Example], threshold: float, fields: tuple[str, ...], ngram: int) -> np.ndarray:
    stage = NearDedup(threshold=threshold, fields=fields, ngram=ngram)
    removed = []
    for i in range(0, len(examples), 256):
        batch = examples[i:i + 256]
        verdicts = stage(batch)
        stage.commit([ex for ex, v in zip(batch, verdicts) if v.keep])
        removed += [not v.keep for v in verdicts]
    return np.array(removed)


def greedy_semantic(examples: list[Example], emb: np.ndarray, threshold: float) -> np.ndarray:
    stage = SemanticDedup(threshold=threshold)
    removed = []
    for i in range(0, len(examples), 256):
        batch = examples[i:i + 256]
        for ex, e in zip(batch, emb[i:i + 256]):
            ex.features.embedding = e
        verdicts = stage(batch)
        stage.commit([ex for ex, v in zip(batch, verdicts) if v.keep])
        removed += [not v.keep for v in verdicts]
    return np.array(removed)


def _best_table(title: str, results: dict[float, dict[str, dict]], default: float) -> list[str]:
    lines = [f"**{title}** — best F1 over our thresholds; P/R/F1 with our threshold set to T; F1 at our "
             f"default {default}:", "",
             "| GPTeacher T | removed by author | our best threshold | best F1 | P at T | R at T | F1 at T "
             "| F1 at default |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    nan = {"f1": float("nan"), "precision": float("nan"), "recall": float("nan")}
    for t in GPT_THRESHOLDS:
        best_x = max(results, key=lambda x: results[x][t]["f1"])
        b = results[best_x][t]
        at_t = results[float(t)][t] if float(t) in results else nan
        d = results[default][t] if default in results else nan
        lines.append(f"| {t} | {b['truth']} | {best_x:.2f} | {b['f1']:.3f} | {at_t['precision']:.3f} | "
                     f"{at_t['recall']:.3f} | {at_t['f1']:.3f} | {d['f1']:.3f} |")
    return lines + [""]


def eval_gpteacher(data: Path, cache: Path, with_embeddings: bool) -> list[str]:
    labels = {r["id"]: r for r in read_jsonl(data / "labels/gpteacher_toolformer_dedup_labels.jsonl")}
    examples = [ex for ex in load_examples([data / "instruction/gpteacher_toolformer_dedupe_only.jsonl"])
                if ex.id in labels]
    truth = {t: np.array([not labels[ex.id][f"kept_similarity_{t}"] for ex in examples]) for t in GPT_THRESHOLDS}
    lines = ["## GPTeacher Toolformer near-duplicates", "",
             f"{len(examples)} dev examples in file order; positive = removed by the author's cleaning at "
             "similarity T (the measure was never documented). Our stages decide greedily in file order, "
             "as the service does.", ""]
    grid = [round(x, 2) for x in np.arange(0.3, 0.96, 0.05)]
    for fields, ngram in ((("prompt", "response"), 2), (("prompt", "response"), 3), (("prompt", "response"), 5),
                          (("prompt",), 2)):
        res = {}
        for x in grid:
            pred = greedy_near(examples, x, fields, ngram)
            res[x] = {t: {**prf(pred, truth[t]), "truth": int(truth[t].sum())} for t in GPT_THRESHOLDS}
        lines += _best_table(f"MinHash near-dup, fields={'+'.join(fields)}, {ngram}-gram shingles", res, 0.8)
    if with_embeddings:
        emb = embed([f"{ex.prompt_text}\n{ex.response_text}" for ex in examples], cache, "gpteacher")
        res = {}
        for x in [round(v, 2) for v in np.arange(0.60, 0.991, 0.01)]:
            pred = greedy_semantic(examples, emb, x)
            res[x] = {t: {**prf(pred, truth[t]), "truth": int(truth[t].sum())} for t in GPT_THRESHOLDS}
        lines += _best_table("Semantic dedup (all-MiniLM-L6-v2 cosine of prompt + response)", res, 0.95)
    return lines


def eval_mrpc(data: Path, cache: Path, with_embeddings: bool) -> list[str]:
    labels = {r["id"]: r["is_paraphrase"] for r in read_jsonl(data / "labels/mrpc_labels.jsonl")}
    pairs = [r for r in read_jsonl(data / "pairs/mrpc.jsonl") if r["id"] in labels]
    y = np.array([labels[r["id"]] for r in pairs])
    mh = MinHasher(ngram=1)
    s1 = mh.signatures([r["text_1"] for r in pairs])
    s2 = mh.signatures([r["text_2"] for r in pairs])
    lines = ["## MRPC paraphrase pairs", "", f"{len(pairs)} pairs, {int(y.sum())} paraphrases.", "",
             "| similarity | ROC-AUC |", "|---|---:|",
             f"| MinHash Jaccard of word unigrams | {roc_auc(jaccard(s1, s2), y):.4f} |"]
    if with_embeddings:
        e1 = embed([r["text_1"] for r in pairs], cache, "mrpc_1")
        e2 = embed([r["text_2"] for r in pairs], cache, "mrpc_2")
        lines.append(f"| all-MiniLM-L6-v2 cosine | {roc_auc(np.sum(e1 * e2, axis=1), y):.4f} |")
    return lines + [""]


def eval_exact(data: Path) -> list[str]:
    groups = read_jsonl(data / "labels/exact_duplicate_groups.jsonl")
    files = sorted((data / "instruction").glob("*.jsonl")) + sorted((data / "preference").glob("*.jsonl"))
    examples = load_examples(files)
    stage = ExactDedup()
    flagged = set()
    for i in range(0, len(examples), 256):
        batch = examples[i:i + 256]
        verdicts = stage(batch)
        stage.commit([ex for ex, v in zip(batch, verdicts) if v.keep])
        flagged |= {ex.id for ex, v in zip(batch, verdicts) if not v.keep}
    in_groups = {i for g in groups for i in g["ids"]}
    expected = sum(len(g["ids"]) - 1 for g in groups)
    caught = sum(min(len(g["ids"]) - 1, sum(i in flagged for i in g["ids"])) for g in groups)
    outside = len(flagged - in_groups)
    return ["## Exact duplicate groups", "",
            f"{len(groups)} labelled groups over {len(examples)} examples: {caught} of {expected} expected "
            f"duplicates rejected (recall {caught / max(1, expected):.4f}); {outside} rejections outside any "
            "labelled group.", ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data", help="the dev data folder")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/eval_dedup.md", help="report to write")
    ap.add_argument("--cache", type=Path, default=ROOT / "out/eval_cache", help="embedding cache folder")
    ap.add_argument("--no-embeddings", action="store_true", help="skip the parts that need the encoder")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    lines = ["# Dedup and decontamination evaluation", "",
             f"Generated by `bench/eval_dedup.py` on `{args.data}` (dev split).", ""]
    lines += eval_contamination(args.data)
    lines += eval_exact(args.data)
    lines += eval_mrpc(args.data, args.cache, not args.no_embeddings)
    lines += eval_gpteacher(args.data, args.cache, not args.no_embeddings)
    lines.append(f"_Run time {time.perf_counter() - t0:.0f}s._")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
