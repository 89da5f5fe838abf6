"""Throughput per core and memory of the dedup, decontamination and PII checks.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_dedup.py --sizes 10000 100000 1000000 \
        --semantic-sizes 10000 100000 1000000 --semantic-index hnsw ivf --out docs/bench_dedup.md

Everything runs on one thread (numpy, faiss), so figures are per core. Queries are
real dev examples (``../shared/data/instruction``) in batches of 256, as the
pipeline sends them; the stores are filled with random MinHash signatures / random
exact keys / clustered synthetic unit vectors, since a million real examples (and
their embeddings, at ~20/s on CPU) are not available here. Recall@1 of the
semantic index is measured against exact flat search on the same vectors; index
builds (not throughput) use every core. The LSH banding recall is measured on
synthetic word-set pairs of known Jaccard similarity.
Baselines run in the same process: datasketch ``MinHash.update_batch`` for
signatures, and ``IndexFlatIP`` for the semantic search.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality.decont.ngram import Decontaminator  # noqa: E402
from quality.dedup.exact import ExactDedup, ExactIndex  # noqa: E402
from quality.dedup.minhash import LSHIndex, MinHasher, choose_bands, texts_of  # noqa: E402
from quality.dedup.near import NearDedup  # noqa: E402
from quality.dedup.semantic import VectorIndex  # noqa: E402
from quality.filters.pii import PiiRedactor  # noqa: E402
from quality.normalize import normalize_example  # noqa: E402
from quality.records import Example, RawRecord, parse  # noqa: E402

BATCH = 256


def load(data: Path, limit: int) -> list[Example]:
    out: list[Example] = []
    for path in sorted((data / "instruction").glob("*.jsonl")):
        with open(path, "rb") as fh:
            for i, line in enumerate(fh):
                ex = parse(RawRecord(line, {"file": path.name, "line": i}))
                if isinstance(ex, Example):
                    out.append(normalize_example(ex))
    return out[:limit]


def rate(fn, items: list, repeat: int = 3) -> float:
    """Best of ``repeat`` runs of ``fn`` over batches of ``items``: items per second."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(0, len(items), BATCH):
            fn(items[i:i + BATCH])
        best = max(best, len(items) / (time.perf_counter() - t0))
    return best


def bench_signatures(examples: list[Example]) -> list[str]:
    from datasketch import MinHash

    texts = texts_of(examples, ("prompt", "response"))
    hasher = MinHasher(num_perm=128, ngram=5)
    ours = rate(lambda b: hasher.signatures(b), texts)
    sample = texts[:1000]

    def datasketch_batch(batch):
        for t in batch:
            words = t.lower().split()
            shingles = [" ".join(words[i:i + 5]).encode() for i in range(max(1, len(words) - 4))]
            m = MinHash(num_perm=128)
            m.update_batch(shingles)

    base = rate(datasketch_batch, sample, repeat=1)
    return ["## MinHash signatures (128 permutations, word 5-grams, one core)", "",
            "| implementation | docs/s | ratio |", "|---|---:|---:|",
            f"| datasketch `MinHash.update_batch` (baseline) | {base:,.0f} | 1.0 |",
            f"| numpy, batched (`quality/dedup/minhash.py`) | {ours:,.0f} | {ours / base:.1f} |", ""]


def rss_mib() -> float:
    """Resident memory of this process (Linux), for before/after differences."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fill_near(stage: NearDedup, n: int) -> None:
    rng = np.random.default_rng(1)
    for start in range(0, n, 50_000):
        k = min(50_000, n - start)
        sigs = rng.integers(0, 2**32 - 1, size=(k, stage.hasher.num_perm), dtype=np.uint32)
        stage.index.add([f"r{start + i}" for i in range(k)], sigs, np.zeros(k))


def bench_banding_recall(pairs: int = 5000) -> list[str]:
    """Share of pairs with known true Jaccard that the default banding makes candidates."""
    rng = np.random.default_rng(5)
    hasher = MinHasher(num_perm=128, ngram=1)
    bands, rows = choose_bands(128, 0.8)
    lines = ["## LSH banding recall (threshold 0.8, 128 permutations)", "",
             f"Default banding {bands} x {rows}. {pairs:,} pairs of 100-word sets per row; a pair is found when "
             "the stored original is a candidate of its variant (before the Jaccard estimate is checked).", "",
             "| true Jaccard | pairs found |", "|---|---:|"]
    for lo, hi, label in ((89, 90, "0.80 (at the threshold)"), (89, 101, "0.80 - 1.00")):
        index = LSHIndex(128, bands, rows)
        originals, variants = [], []
        for p in range(pairs):
            shared = int(rng.integers(lo, hi))  # Jaccard = shared / (200 - shared)
            originals.append(" ".join(f"w{p}x{k}" for k in range(100)))
            variants.append(" ".join([f"w{p}x{k}" for k in range(shared)] + [f"v{p}x{k}" for k in range(100 - shared)]))
        index.add([str(p) for p in range(pairs)], hasher.signatures(originals))
        q, r = index.candidate_pairs(hasher.signatures(variants))
        found = len({p for p, row in zip(q.tolist(), r.tolist()) if index.ids[row] == str(p)})
        lines.append(f"| {label} | {found / pairs:.4f} |")
    return lines + [""]


def bench_near_exact(examples: list[Example], sizes: list[int]) -> list[str]:
    lines = ["## Near and exact dedup against N stored examples (one core)", "",
             "Stage throughput includes signatures, LSH query, verification and in-batch checks "
             "(no commit). Query latency is one signature against the store. Near index MiB: RSS growth "
             "while filling; in brackets the numpy arrays (`LSHIndex.nbytes`: signatures, band keys and rows, "
             "bucket directory, times) of which the bucket directory.", "",
             "| stored | near dedup ex/s | LSH query (1 sig) µs | near index MiB (RSS) [arrays; directory] "
             "| exact dedup ex/s | exact index MiB (RSS) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        before = rss_mib()
        near = NearDedup()
        fill_near(near, n)
        near.index._merge()
        near_mib = rss_mib() - before
        arrays_mib, dir_mib = near.index.nbytes() / 2**20, near.index._dir.nbytes / 2**20
        near_rate = rate(near.check_batch, examples)
        sig = near.hasher.signatures([texts_of(examples[:1], near.fields)[0]])
        t0 = time.perf_counter()
        for _ in range(2000):
            near.index.best_matches(sig)
        q_us = (time.perf_counter() - t0) / 2000 * 1e6
        del near
        before = rss_mib()
        index = ExactIndex()
        raw = np.random.default_rng(2).bytes(16 * n)
        for i in range(n):
            index.add(raw[16 * i:16 * i + 16], f"r{i}")
        exact_mib = rss_mib() - before
        exact_rate = rate(ExactDedup(index).check_batch, examples)
        del index
        lines.append(f"| {n:,} | {near_rate:,.0f} | {q_us:,.0f} | {near_mib:,.0f} [{arrays_mib:,.0f}; {dir_mib:,.0f}] "
                     f"| {exact_rate:,.0f} | {exact_mib:,.0f} |")
        print(lines[-1], file=sys.stderr)
    return lines + [""]


def clustered(n: int, dim: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    x = centers[rng.integers(0, len(centers), n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_semantic(sizes: list[int], kinds: list[str], hnsw_m: int, ef_construction: int, ivf_nlist: int,
                   ivf_nprobe: int, dim: int = 384, queries: int = 2048) -> list[str]:
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(2000, dim)).astype(np.float32)
    ivf_min = 40 * ivf_nlist  # lists trained once, on >= 40 vectors per list, when the store passes this
    lines = ["## Semantic search against N stored embeddings (dim 384, one core)", "",
             "Stored vectors are synthetic: 2,000 Gaussian clusters, normalized (well separated, so easier "
             "than real embeddings). Queries: half are perturbed stored vectors (duplicates), half fresh draws. "
             "Recall@1 is against exact flat search. Vectors are added 50,000 at a time as the pipeline would; "
             f"`VectorIndex(flat_max=50_000)`: hnsw rows with M={hnsw_m}, efConstruction {ef_construction}, "
             f"efSearch 64; ivf rows with `ivf_min={ivf_min:,}, ivf_nlist={ivf_nlist}, ivf_nprobe={ivf_nprobe}` "
             "(HNSW until the switch, lists trained on a sample of the store then). Build s: all adds, "
             "all cores; index MiB: the serialized FAISS index.", "",
             "| stored | index | build s | queries/s | recall@1 | flat baseline q/s | index MiB |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for n in sizes:
        store = clustered(n, dim, rng, centers)
        q = np.concatenate([store[rng.integers(0, n, queries // 2)]
                            + 0.02 * rng.normal(size=(queries // 2, dim)).astype(np.float32),
                            clustered(queries // 2, dim, rng, centers)])
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        flat = VectorIndex(dim, flat_max=10**9)
        flat.add([str(i) for i in range(n)], store)
        t0 = time.perf_counter()
        _, truth = flat.search(q)
        flat_qps = len(q) / (time.perf_counter() - t0)
        del flat
        for kind in (["flat"] if n <= 50_000 else [k for k in kinds if k != "ivf" or n > ivf_min]):
            index = VectorIndex(dim, flat_max=50_000, hnsw_m=hnsw_m, ef_construction=ef_construction,
                                ivf_min=ivf_min if kind == "ivf" else 0, ivf_nlist=ivf_nlist, ivf_nprobe=ivf_nprobe)
            faiss.omp_set_num_threads(os.cpu_count() or 1)  # build on every core, query on one
            t0 = time.perf_counter()
            for start in range(0, n, 50_000):
                index.add([str(i) for i in range(start, min(n, start + 50_000))], store[start:start + 50_000])
            build_s = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)
            t0 = time.perf_counter()
            rows = np.concatenate([index.search(q[i:i + BATCH])[1] for i in range(0, len(q), BATCH)])
            qps = len(q) / (time.perf_counter() - t0)
            recall = float(np.mean(rows == truth))
            mib = faiss.serialize_index(index.index).nbytes / 2**20
            lines.append(f"| {n:,} | {index.kind} | {build_s:,.1f} | {qps:,.0f} | {recall:.4f} | {flat_qps:,.0f} | "
                         f"{mib:,.0f} |")
            print(lines[-1], file=sys.stderr)
            del index
        del store
    return lines + [""]


def bench_cheap(examples: list[Example], data: Path) -> list[str]:
    pii = PiiRedactor()
    decontam = Decontaminator([data / "benchmarks"])
    return ["## PII and decontamination (one core)", "",
            "| check | examples/s |", "|---|---:|",
            f"| PII redaction (all five kinds, every field) | {rate(pii.check_batch, examples):,.0f} |",
            f"| decontamination ({len(decontam.index):,} dev benchmark items, 8-grams) | "
            f"{rate(decontam.check_batch, examples):,.0f} |", ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                    help="stored examples for near/exact dedup")
    ap.add_argument("--semantic-sizes", type=int, nargs="*", default=[10_000, 100_000],
                    help="stored embeddings for semantic search (1M builds HNSW for minutes)")
    ap.add_argument("--semantic-index", nargs="+", choices=["hnsw", "ivf"], default=["hnsw", "ivf"],
                    help="index kinds benched beyond flat_max (ivf only where the store passes 40 x --ivf-nlist)")
    ap.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree")
    ap.add_argument("--ef-construction", type=int, default=80, help="HNSW build breadth")
    ap.add_argument("--ivf-nlist", type=int, default=4096, help="IVF lists")
    ap.add_argument("--ivf-nprobe", type=int, default=16, help="IVF lists searched per query")
    ap.add_argument("--skip-near", action="store_true", help="only the semantic section")
    ap.add_argument("--examples", type=int, default=4096, help="query examples")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/bench_dedup.md")
    args = ap.parse_args(argv)
    examples = load(args.data, args.examples)
    lines = ["# Dedup benchmarks", "", f"`bench/bench_dedup.py`, {len(examples)} real dev examples as queries, "
             f"{os.cpu_count()} CPUs visible, one thread used for throughput.", ""]
    if not args.skip_near:
        lines += bench_signatures(examples)
        lines += bench_cheap(examples, args.data)
        lines += bench_banding_recall()
        lines += bench_near_exact(examples, args.sizes)
    if args.semantic_sizes:
        lines += bench_semantic(args.semantic_sizes, args.semantic_index, args.hnsw_m, args.ef_construction,
                                args.ivf_nlist, args.ivf_nprobe)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
