"""The decider's ceiling: examples/s of one thread against 10k, 100k and 1M stored examples.

    .venv/bin/python bench/sim_data.py                   # once: encode the dev data (cached)
    .venv/bin/python bench/bench_decider_ceiling.py      # ~10 min here; figures into docs/scaling.md

Stage 2 of the design (``sieve run --role decide``) receives everything stage 1
computed (content hash, MinHash signature, embedding, scores) and does, per example,
only what needs the global state: an exact-hash lookup, a MinHash LSH query, a FAISS
query, the in-batch checks, the pair-margin and threshold checks, and for each accepted
example the inserts into all three indexes. This bench times exactly that with the
index classes the pipeline uses (``TimedExactIndex``, ``LSHIndex`` with the near-dedup
defaults, ``VectorIndex`` with the semantic-dedup defaults: flat up to 50k stored, HNSW
M 32, IVF 4096 lists / nprobe 16 past 200k), on one thread (numpy and faiss), in
batches of 256.

Data: queries are real dev examples (``../shared/data`` instruction + preference; their
content keys, signatures with the near-dedup settings, and MiniLM embeddings from the
cache of ``bench/sim_data.py``), held out from the store. The store starts with the
other real dev examples and is filled up to N with synthetic neighbours of them
(see :func:`synthetic_fill`): so at 100k and 1M most stored rows are synthetic.
Every query that is not a duplicate is accepted and inserted (the worst case for insert
cost). The LSH index merges its recent level into the main sorted level when the
recent level passes ``sqrt(8192 * keys)``; the bench times one merge and adds its cost
amortized over the inserts between two merges. Memory is the growth of this process's
RSS while each index is filled, per stored example.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import orjson  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import write_section  # noqa: E402
from sim_data import DATA, ROOT, SegmentCache, dev_examples, embeddings  # noqa: E402

from quality.config import NearDedupSettings, ScoringSettings, SemanticDedupSettings, load  # noqa: E402
from quality.dedup_exact import content_key, entry_key  # noqa: E402
from quality.dedup_near import NearDedup  # noqa: E402
from quality.dedup_semantic import VectorIndex  # noqa: E402
from quality.minhash import MAX_SIG, jaccard, texts_of  # noqa: E402
from quality.pairs import MARGIN_FEATURE, PairMarginCheck  # noqa: E402
from quality.records import Example  # noqa: E402
from quality.state import TimedExactIndex  # noqa: E402
from quality.thresholds import FixedThreshold, ThresholdPolicy  # noqa: E402

BATCH = 256
PARTS = ("decode", "exact", "near", "semantic", "checks", "insert exact", "insert near", "insert semantic")


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def py_bytes(obj) -> int:
    """Bytes of a dict or list of str/bytes/float (containers and items; shared items counted again)."""
    items = list(obj.items()) if isinstance(obj, dict) else [(x,) for x in obj]
    return sys.getsizeof(obj) + sum(sys.getsizeof(x) for pair in items for x in pair)


def index_bytes(store: "Store") -> dict[str, int]:
    """Bytes each index holds: numpy/FAISS buffers plus the Python ids, dicts and lists around them."""
    import faiss

    lsh, vec = store.lsh, store.vec
    return {"exact": py_bytes(store.exact._ids) + py_bytes(store.exact.added),
            "near": lsh.nbytes() + py_bytes(lsh.ids) + py_bytes(lsh.row_of),
            "semantic": len(faiss.serialize_index(vec.index)) + py_bytes(vec.ids) + py_bytes(vec.row_of)
            + py_bytes(vec.times) + vec.alive.nbytes}


@dataclass
class Items:
    """What crosses ``sieve.scored`` for a set of examples, as arrays."""

    ids: list[str]
    keys: list[bytes]
    sigs: np.ndarray        # (n, num_perm) uint32
    emb: np.ndarray         # (n, 384) float32, normalized
    examples: list[Example]

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, a: int, b: int) -> "Items":
        return Items(self.ids[a:b], self.keys[a:b], self.sigs[a:b], self.emb[a:b], self.examples[a:b])


def real_items(examples: list[Example], near: NearDedup, cache: SegmentCache) -> Items:
    for ex in examples:  # the scorer's reward margin travels with a pair; 1.0 passes the default -0.5
        if ex.kind == "preference":
            ex.features[MARGIN_FEATURE] = 1.0
    sigs = near.hasher.signatures(texts_of(examples, near.fields))
    return Items([entry_key(ex) for ex in examples], [content_key(ex) for ex in examples], sigs,
                 embeddings(examples, cache), examples)


def synthetic_fill(seeds: Items, n: int, rng: np.random.Generator) -> tuple[list[str], list[bytes], np.ndarray,
                                                                           np.ndarray]:
    """``n`` stored rows made from real seeds: related to them, but not duplicates.

    Embedding: ``normalize(seed + t * g)`` with Gaussian ``g`` scaled so that the cosine
    to the seed is drawn from U(0.70, 0.92) (below the 0.95 threshold). Signature: each
    position of the seed's signature kept with probability U(0.1, 0.5), else random
    (estimated Jaccard 0.1-0.5 to the seed, below 0.8, yet sharing LSH bands now and
    then, so queries meet candidates to verify). Exact key: 16 random bytes.
    """
    src = rng.integers(0, len(seeds), n)
    dim = seeds.emb.shape[1]
    cos = rng.uniform(0.70, 0.92, n).astype(np.float32)
    t = np.sqrt(1.0 / cos**2 - 1.0)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb *= (t / np.sqrt(dim))[:, None]
    emb += seeds.emb[src]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sigs = seeds.sigs[src].copy()
    for start in range(0, n, 100_000):  # chunked: a (n, 128) float mask at 1M is 0.5 GiB
        part = slice(start, min(n, start + 100_000))
        m = len(sigs[part])
        keep = rng.random((m, sigs.shape[1]), dtype=np.float32) < rng.uniform(0.1, 0.5, m)[:, None]
        sigs[part] = np.where(keep, sigs[part], rng.integers(0, MAX_SIG, (m, sigs.shape[1]), dtype=np.uint32))
    raw = rng.bytes(16 * n)
    keys = [raw[16 * i:16 * i + 16] for i in range(n)]
    ids = [f"syn-{i}\x1f{keys[i].hex()}" for i in range(n)]
    return ids, keys, sigs, emb


class Store:
    """The decider's three indexes, built like ``quality.build`` builds the stages' ones."""

    def __init__(self, s: SemanticDedupSettings = SemanticDedupSettings()) -> None:
        import faiss

        self.exact = TimedExactIndex()
        self.near = NearDedup(**{k: getattr(NearDedupSettings(), k) for k in
                                 ("threshold", "num_perm", "ngram", "fields", "bands", "rows", "seed")})
        self.lsh = self.near.index
        self.vec = VectorIndex(384, flat_max=s.flat_max, hnsw_m=s.hnsw_m, ef_search=s.ef_search, ivf_min=s.ivf_min,
                               ivf_nlist=s.ivf_nlist, ivf_nprobe=s.ivf_nprobe)
        self.semantic_threshold = s.threshold
        self.margin = PairMarginCheck(min_margin=ScoringSettings().min_margin)
        self.policy = ThresholdPolicy(FixedThreshold(0.0))
        self.mib: dict[str, float] = {}
        self.truth = faiss.IndexFlatIP(384)  # exact search over the same vectors, for recall

    def fill(self, ids: list[str], keys: list[bytes], sigs: np.ndarray, emb: np.ndarray, threads: int) -> None:
        import faiss

        now = time.time()
        before = rss_mib()
        for k, i in zip(keys, ids):
            self.exact.add(k, i)
        self.mib["exact"] = self.mib.get("exact", 0.0) + rss_mib() - before
        before = rss_mib()
        for start in range(0, len(ids), 50_000):
            stop = start + 50_000
            self.lsh.add(ids[start:stop], sigs[start:stop], np.full(len(ids[start:stop]), now))
        self.lsh._merge()
        self.mib["near"] = self.mib.get("near", 0.0) + rss_mib() - before
        before = rss_mib()
        faiss.omp_set_num_threads(threads)  # builds use every core; queries one
        step = 250_000  # the first call goes straight to the index kind of its size
        for start in range(0, len(ids), step):
            self.vec.add(ids[start:start + step], emb[start:start + step], [now] * len(ids[start:start + step]))
        faiss.omp_set_num_threads(1)
        self.truth.add(np.ascontiguousarray(emb, dtype=np.float32))
        self.mib["semantic"] = self.mib.get("semantic", 0.0) + rss_mib() - before

    def decide(self, q: Items, records: list[bytes], t: dict[str, float]) -> int:
        """Decides one batch as the decider would; returns how many were accepted."""
        n = len(q)
        clock = time.process_time  # CPU seconds of this (single-threaded) process: others' load does not count
        t0 = clock()
        for rec in records:  # a scored record: example, hash, signature and float16 embedding
            orjson.loads(rec)
        t1 = clock()
        dup = np.zeros(n, dtype=bool)
        first: dict[bytes, int] = {}
        for i, k in enumerate(q.keys):
            if self.exact.query(k) is not None or first.setdefault(k, i) != i:
                dup[i] = True
        t2 = clock()
        best = self.lsh.best_matches(q.sigs)
        near_sim = np.array([s for _, s in best])
        dup |= near_sim >= self.near.threshold
        dup |= self._in_batch_near(q.sigs, dup)
        t3 = clock()
        sims, _ = self.vec.search(q.emb)
        dup |= sims >= self.semantic_threshold
        within = q.emb @ q.emb.T
        kept: list[int] = []
        for i in range(n):
            if not dup[i] and kept and float(within[i, kept].max()) >= self.semantic_threshold:
                dup[i] = True
            elif not dup[i]:
                kept.append(i)
        t4 = clock()
        ok = ~dup
        for i in np.flatnonzero(ok).tolist():
            ex = q.examples[i]
            if self.margin.check(ex).reason is not None or not self.policy.keep(0.5, ex.source):
                ok[i] = False
        t5 = clock()
        acc = np.flatnonzero(ok)
        ids = [q.ids[i] for i in acc]
        for i in acc.tolist():
            self.exact.add(q.keys[i], q.ids[i])
        t6 = clock()
        now = np.full(len(acc), time.time())
        self.lsh.add(ids, q.sigs[acc], now)
        t7 = clock()
        self.vec.add(ids, q.emb[acc], now.tolist())
        t8 = clock()
        for part, a, b in zip(PARTS, (t0, t1, t2, t3, t4, t5, t6, t7), (t1, t2, t3, t4, t5, t6, t7, t8)):
            t[part] = t.get(part, 0.0) + b - a
        return len(acc)

    def _in_batch_near(self, sigs: np.ndarray, dup: np.ndarray) -> np.ndarray:
        """Examples that share a band with an earlier kept one of the batch at Jaccard >= threshold."""
        keys = self.lsh.band_keys(sigs)
        out = np.zeros(len(sigs), dtype=bool)
        _, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
        shared = (counts[inverse] > 1).reshape(keys.shape).any(axis=1) & (sigs[:, 0] != MAX_SIG)
        seen: dict[int, list[int]] = {}
        for i in np.flatnonzero(shared).tolist():
            cands = {j for k in keys[i].tolist() for j in seen.get(k, ())}
            if any(float(jaccard(sigs[j], sigs[i])) >= self.near.threshold for j in cands):
                out[i] = True
            elif not dup[i]:
                for k in keys[i].tolist():
                    seen.setdefault(k, []).append(i)
        return out


def scored_records(q: Items) -> list[bytes]:
    """The bytes stage 1 would send for each example: canonical example, key, signature, f16 embedding."""
    return [orjson.dumps({"id": q.ids[i].split("\x1f")[0], "example": q.examples[i].canonical(),
                          "exact": q.keys[i].hex(), "minhash": q.sigs[i].tobytes().hex(),
                          "embedding": q.emb[i].astype(np.float16).tobytes().hex()}) for i in range(len(q))]


def recall(store: Store, q: Items) -> tuple[float, float, int]:
    """Recall@1 of the semantic index against exact search (by similarity, so ties count), and the share of
    queries with a stored neighbour at >= the threshold that the index finds (and how many there are)."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    truth = store.truth.search(q.emb, 1)[0][:, 0]
    faiss.omp_set_num_threads(1)
    got = np.concatenate([store.vec.search(q.emb[i:i + BATCH])[0] for i in range(0, len(q), BATCH)])
    dups = truth >= store.semantic_threshold
    found = float(np.mean(got[dups] >= store.semantic_threshold)) if dups.any() else float("nan")
    return float(np.mean(got >= truth - 1e-4)), found, int(dups.sum())


def bench_size(n: int, stored: Items, queries: Items, threads: int, rng: np.random.Generator,
               semantic: SemanticDedupSettings) -> dict:
    store = Store(semantic)
    real = min(n, len(stored))
    t0 = time.perf_counter()
    store.fill(stored.ids[:real], stored.keys[:real], stored.sigs[:real], stored.emb[:real], threads)
    for start in range(0, n - real, 250_000):
        ids, keys, sigs, emb = synthetic_fill(stored, min(250_000, n - real - start), rng)
        ids = [f"{start}-{i}" for i in ids]
        store.fill(ids, keys, sigs, emb, threads)
        del ids, keys, sigs, emb
        gc.collect()
    build_s = time.perf_counter() - t0
    recall1, dup_found, dups = recall(store, queries)
    del store.truth
    gc.collect()
    records = scored_records(queries)
    timings: dict[str, float] = {}
    accepted = 0
    wall = time.perf_counter()
    for start in range(0, len(queries), BATCH):
        accepted += store.decide(queries.slice(start, start + BATCH), records[start:start + BATCH], timings)
    wall = time.perf_counter() - wall
    merge_keys = len(store.lsh._rkeys)
    t0 = time.process_time()
    store.lsh._merge()
    merge_s = time.process_time() - t0
    # the recent level is merged when it passes sqrt(8192 * keys): that many keys of inserts per merge
    between = max(1 << 16, int(math.sqrt(len(store.lsh._keys) * 8192.0))) / store.lsh.bands
    timings["insert near"] += merge_s * accepted / between
    out = {"n": n, "kind": store.vec.kind, "wall_s": wall, "recall1": recall1, "dup_found": dup_found, "dups": dups, "queries": len(queries), "accepted": accepted, "build_s": build_s,
           "timings": timings, "merge_s": merge_s, "merge_keys": merge_keys, "between": between,
           "rss_mib": dict(store.mib), "bytes": index_bytes(store), "stored": len(store.vec),
           "record_bytes": float(np.mean([len(r) for r in records]))}
    print(f"{n:,}: {out}", file=sys.stderr)
    return out


def report(rows: list[dict], n_real: int, n_queries: int, args: argparse.Namespace) -> str:
    lines = [f"Measured {time.strftime('%Y-%m-%d')} by `bench/bench_decider_ceiling.py` on {os.cpu_count()} CPUs "
             f"(shared with other work), one thread for the decisions; {n_queries:,} real dev examples as queries in "
             f"batches of {BATCH}, every non-duplicate inserted. Stores: {n_real:,} real dev examples, the rest "
             "synthetic neighbours of them (embeddings at cosine U(0.70, 0.92) to a real one, signatures keeping "
             "10-50% of a real one's positions, random exact keys).", "",
             "**Per example, µs (one thread)**", "",
             "| stored | FAISS index | " + " | ".join(PARTS) + " | total | examples/s | without decode | wall ex/s "
             "| recall@1 | duplicates found |", "|---:|---|" + "---:|" * (len(PARTS) + 6)]
    for r in rows:
        per = {p: r["timings"].get(p, 0.0) / r["queries"] * 1e6 for p in PARTS}
        total = sum(per.values())
        lines.append(f"| {r['n']:,} | {r['kind']}{r['variant']} | " + " | ".join(f"{per[p]:,.1f}" for p in PARTS)
                     + f" | {total:,.0f} | **{1e6 / total:,.0f}** | {1e6 / (total - per['decode']):,.0f} | "
                     f"{r['queries'] / r['wall_s']:,.0f} | {r['recall1']:.3f} | {r['dup_found']:.3f} ({r['dups']}) |")
    lines += ["", "FAISS index: the kind `VectorIndex` chose with the `[pipeline.semantic_dedup]` defaults (flat up "
              "to 50k stored, HNSW M 32 up to 200k, then IVF 4096 lists, nprobe 16) unless settings are named. "
              "`recall@1`: queries whose nearest stored vector the FAISS index finds (by cosine, against exact "
              "search over the same store, before the pass); `duplicates found`: of the queries with a stored "
              "neighbour at cosine >= the threshold (how many in brackets), the share the index finds. "
              "Times are CPU seconds of the one decision thread (`time.process_time`), so the load of other work "
              "on this shared machine does not count; `wall ex/s` is the same pass by the clock, for comparison "
              "(it includes waiting for a core). `decode`: `orjson.loads` of the scored record (canonical example, hex content key, hex "
              f"signature, hex float16 embedding: {rows[0]['record_bytes'] / 1024:.1f} KiB on average). "
              "`insert near` includes the amortized merge of the LSH recent level "
              f"(at the largest store: {rows[-1]['merge_s']:.2f} s per merge, one merge per "
              f"~{rows[-1]['between']:,.0f} inserts). Accepted and inserted: "
              + ", ".join(f"{r['accepted']:,} of {r['queries']:,} at {r['n']:,}" for r in rows) + ".", "",
              "**Memory per stored example** (bytes; numpy and FAISS buffers plus the Python ids, dicts and lists "
              "of each index, after the queries' inserts; RSS: growth of this process while filling, a cross-check)",
              "", "| stored | exact | near (LSH) | semantic (FAISS + ids) | total | RSS total | build s (2 threads) |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = {k: v / r["stored"] for k, v in r["bytes"].items()}
        rss = sum(r["rss_mib"].values()) * 2**20 / r["n"]
        lines.append(f"| {r['n']:,} | {b['exact']:,.0f} | {b['near']:,.0f} | {b['semantic']:,.0f} | "
                     f"{sum(b.values()):,.0f} | {rss:,.0f} | {r['build_s']:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=3_000, help="real dev examples held out as queries")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1, help="faiss threads for builds")
    ap.add_argument("--semantic", action="append", default=[], metavar="'KEY=VALUE ...'",
                    help="a variant of the [pipeline.semantic_dedup] settings, e.g. 'ivf_min=50000 ivf_nlist=1024'; "
                         "repeat for several (rows for each); default: the defaults")
    ap.add_argument("--section", default="decider_ceiling", help="which generated block of --doc to replace")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/scaling.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    variants = []
    for spec in args.semantic or [""]:
        try:
            overrides = dict(kv.split("=", 1) for kv in spec.split())
            variants.append((f" ({', '.join(spec.split())})" if spec else "",
                             load(SemanticDedupSettings, env={}, overrides=overrides)))
        except ValueError as exc:
            ap.error(f"--semantic {spec!r}: {exc} (give KEY=VALUE pairs of [pipeline.semantic_dedup] settings)")
    cache = SegmentCache()
    examples = [ex for _, ex in dev_examples(args.data)]
    rng = np.random.default_rng(12)
    order = rng.permutation(len(examples))
    near = Store().near
    items = real_items([examples[i] for i in order], near, cache)
    queries, stored = items.slice(0, args.queries), items.slice(args.queries, len(items))
    rows = [dict(bench_size(n, stored, queries, args.build_threads, np.random.default_rng(n), settings), variant=label)
            for label, settings in variants for n in args.sizes]
    body = report(rows, len(stored), len(queries), args)
    if not args.no_write:
        write_section(args.doc, args.section, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
