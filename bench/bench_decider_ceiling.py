"""The decider's ceiling: examples/s of one thread against 10k, 100k and 1M stored examples.

    .venv/bin/python bench/sim_data.py                   # once: encode the dev data (cached)
    .venv/bin/python bench/bench_decider_ceiling.py      # ~15 min here; figures into docs/scaling.md

Stage 2 of the design (``sieve run --role decide``) receives everything stage 1
computed (content hash, MinHash signature, embedding, quality, reward margin: the typed
``Features``) and runs only the stages that need the global state. This bench runs
exactly those, the pipeline's own stage objects built from the default settings by the
stage registry (``exact_dedup``, ``near_dedup``, ``quality_gate``, ``semantic_dedup``,
``pair_margin``, in the pipeline's order), on examples whose features stage 1 filled
(``annotate`` of the exact and near stages, the real model stage reading the encoder
cache of ``bench/sim_data.py``), in batches of 256 on one thread (numpy and faiss), and
commits the accepted ones to every stage as the pipeline does. Before that it decodes
each example's scored record (``orjson`` and ``Features.from_dict``). It does not redo
the pipeline's in-batch recheck (an example rejected as a duplicate of an earlier one of
its batch that was itself rejected later); that is rare.

Data: queries are real dev examples (``../shared/data`` instruction + preference), held
out from the store. The store starts with the other real dev examples and is filled up
to N with synthetic neighbours of them (see :func:`synthetic_fill`), written straight
into the stages' indexes: at 100k and 1M most stored rows are synthetic. The LSH index
merges its recent level into the main sorted level when the recent level passes
``sqrt(8192 * keys)``; the bench times one merge and adds its cost amortized over the
inserts between two merges. Memory: the indexes' own buffers and Python containers per
stored example, and the growth of this process's RSS while filling as a cross-check.
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

from bench_dedup import rss_mib  # noqa: E402
from bench_models import write_section  # noqa: E402
from sim_data import DATA, ROOT, CachedEncoder, SegmentCache, dev_examples  # noqa: E402

import models.stage  # noqa: E402,F401 - registers the model stage, as streams/assemble.py does
from quality.build import build_stages  # noqa: E402
from quality.config import PipelineSettings, load  # noqa: E402
from quality.dedup.exact import entry_key  # noqa: E402
from quality.dedup.minhash import MAX_SIG  # noqa: E402
from quality.features import Features  # noqa: E402
from quality.records import Example  # noqa: E402
from quality.stage import StatefulStage  # noqa: E402

BATCH = 256
DECIDER = ("exact_dedup", "near_dedup", "quality_gate", "semantic_dedup", "pair_margin")
PARTS = ("decode", "exact", "near", "gate + margin", "semantic", "insert exact", "insert near", "insert semantic")
PART_OF = {"exact_dedup": "exact", "near_dedup": "near", "quality_gate": "gate + margin",
           "semantic_dedup": "semantic", "pair_margin": "gate + margin"}
INSERT_OF = {"exact_dedup": "insert exact", "near_dedup": "insert near", "semantic_dedup": "insert semantic"}


@dataclass
class Items:
    """Examples with their stage-1 features, and those features as arrays (for filling stores)."""

    examples: list[Example]
    keys: list[bytes]
    sigs: np.ndarray        # (n, num_perm) uint32
    emb: np.ndarray         # (n, 384) float32, normalized

    def __len__(self) -> int:
        return len(self.examples)

    def slice(self, a: int, b: int) -> "Items":
        return Items(self.examples[a:b], self.keys[a:b], self.sigs[a:b], self.emb[a:b])


def settings_with(semantic: dict[str, str]) -> PipelineSettings:
    return load(PipelineSettings, env={}, overrides={f"semantic_dedup.{k}": v for k, v in semantic.items()})


def scored(examples: list[Example], cache: SegmentCache) -> Items:
    """Fills every example's features as a scorer would: content hash, signature, model outputs."""
    stages = {st.name: st for st in build_stages(PipelineSettings())}
    model = stages["model_score"]
    model.encoder = CachedEncoder(model.encoder, cache)
    for start in range(0, len(examples), BATCH):
        batch = examples[start:start + BATCH]
        stages["exact_dedup"].annotate(batch)
        stages["near_dedup"].annotate(batch)
        model.check_batch(batch)  # embedding, quality, reward margin (no state, no decision kept)
    if model.encoder.misses:
        print(f"{model.encoder.misses} sequences were not in the encoder cache and were encoded", file=sys.stderr)
    f = [ex.features for ex in examples]
    return Items(examples, [x.content_hash for x in f], np.stack([x.minhash for x in f]),
                 np.stack([x.embedding for x in f]).astype(np.float32))


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
    """The decider's stages, built by the registry from the settings, and their indexes."""

    def __init__(self, settings: PipelineSettings) -> None:
        import faiss

        built = {st.name: st for st in build_stages(settings)}
        self.stages = [built[name] for name in DECIDER]
        self.exact, self.near, _, self.semantic, _ = self.stages
        self.lsh = self.near.index
        self.vec = self.semantic._index(384)
        self.mib: dict[str, float] = {}
        self.truth = faiss.IndexFlatIP(384)  # exact search over the same vectors, for recall

    def fill(self, ids: list[str], keys: list[bytes], sigs: np.ndarray, emb: np.ndarray, threads: int) -> None:
        """Writes rows straight into the indexes (``ids`` are entry keys: id, separator, content hash)."""
        import faiss

        now = time.time()
        before = rss_mib()
        for k, i in zip(keys, ids):
            self.exact.index.add(k, i.split("\x1f", 1)[0], now)
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

    def decide(self, records: list[bytes], batch: list[Example], t: dict[str, float]) -> int:
        """Decides one batch as the decider would; returns how many were accepted."""
        clock = time.process_time  # CPU seconds of this (single-threaded) process: others' load does not count
        t0 = clock()
        for rec in records:  # what the decider gets: the canonical example and its features
            Features.from_dict(orjson.loads(rec)["features"])
        t["decode"] = t.get("decode", 0.0) + clock() - t0
        live = list(batch)
        for stage in self.stages:
            t0 = clock()
            verdicts = stage(live)
            live = [ex for ex, v in zip(live, verdicts) if v.reason is None]
            t[PART_OF[stage.name]] = t.get(PART_OF[stage.name], 0.0) + clock() - t0
        for stage in self.stages:
            if not isinstance(stage, StatefulStage):
                continue
            t0 = clock()
            stage.commit(live)
            part = INSERT_OF.get(stage.name, "gate + margin")
            t[part] = t.get(part, 0.0) + clock() - t0
        return len(live)


def py_bytes(obj) -> int:
    """Bytes of a dict or list of str/bytes/float (containers and items; shared items counted again)."""
    items = list(obj.items()) if isinstance(obj, dict) else [(x,) for x in obj]
    return sys.getsizeof(obj) + sum(sys.getsizeof(x) for pair in items for x in pair)


def index_bytes(store: Store) -> dict[str, int]:
    """Bytes each index holds: numpy/FAISS buffers plus the Python ids, dicts and lists around them."""
    import faiss

    lsh, vec, exact = store.lsh, store.vec, store.exact.index
    return {"exact": py_bytes(exact._ids) + py_bytes(exact.added),
            "near": lsh.nbytes() + py_bytes(lsh.ids) + py_bytes(lsh.row_of),
            "semantic": len(faiss.serialize_index(vec.index)) + py_bytes(vec.ids) + py_bytes(vec.row_of)
            + py_bytes(vec.times) + vec.alive.nbytes}


def recall(store: Store, q: Items) -> tuple[float, float, int]:
    """Recall@1 of the semantic index against exact search (by similarity, so ties count), and the share of
    queries with a stored neighbour at >= the threshold that the index finds (and how many there are)."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    truth = store.truth.search(q.emb, 1)[0][:, 0]
    faiss.omp_set_num_threads(1)
    got = np.concatenate([store.vec.search(q.emb[i:i + BATCH])[0] for i in range(0, len(q), BATCH)])
    threshold = store.semantic.threshold
    dups = truth >= threshold
    found = float(np.mean(got[dups] >= threshold)) if dups.any() else float("nan")
    return float(np.mean(got >= truth - 1e-4)), found, int(dups.sum())


def scored_records(q: Items) -> list[bytes]:
    """The bytes stage 1 would send for each example: id, canonical example and its features."""
    return [orjson.dumps({"id": ex.id, "example": ex.canonical(), "origin": dict(ex.origin),
                          "features": ex.features.to_dict()}) for ex in q.examples]


def bench_size(n: int, stored: Items, queries: Items, threads: int, rng: np.random.Generator,
               settings: PipelineSettings) -> dict:
    store = Store(settings)
    real = min(n, len(stored))
    t0 = time.perf_counter()
    store.fill([entry_key(ex) for ex in stored.examples[:real]], stored.keys[:real], stored.sigs[:real],
               stored.emb[:real], threads)
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
        accepted += store.decide(records[start:start + BATCH], queries.examples[start:start + BATCH], timings)
    wall = time.perf_counter() - wall
    merge_keys = len(store.lsh._rkeys)
    t0 = time.process_time()
    store.lsh._merge()
    merge_s = time.process_time() - t0
    # the recent level is merged when it passes sqrt(8192 * keys): that many keys of inserts per merge
    between = max(1 << 16, int(math.sqrt(len(store.lsh._keys) * 8192.0))) / store.lsh.bands
    timings["insert near"] += merge_s * accepted / between
    out = {"n": n, "kind": store.vec.kind, "wall_s": wall, "recall1": recall1, "dup_found": dup_found, "dups": dups,
           "queries": len(queries), "accepted": accepted, "build_s": build_s,
           "timings": timings, "merge_s": merge_s, "merge_keys": merge_keys, "between": between,
           "rss_mib": dict(store.mib), "bytes": index_bytes(store), "stored": len(store.vec),
           "record_bytes": float(np.mean([len(r) for r in records]))}
    print(f"{n:,}: {out}", file=sys.stderr)
    return out


def report(rows: list[dict], n_real: int, n_queries: int, args: argparse.Namespace) -> str:
    lines = [f"Measured {time.strftime('%Y-%m-%d')} by `bench/bench_decider_ceiling.py` on {os.cpu_count()} CPUs "
             f"(shared with other work), one thread for the decisions; {n_queries:,} real dev examples as queries in "
             f"batches of {BATCH}, the accepted ones inserted. Stores: {n_real:,} real dev examples, the rest "
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
              "(it includes waiting for a core). `decode`: `orjson.loads` of the scored record and "
              "`Features.from_dict` of "
              "its features (record: id, origin, canonical example, `Features.to_dict()`: hex content hash, base64 "
              f"uint32 signature and float32 embedding, quality, margin; {rows[0]['record_bytes'] / 1024:.1f} KiB on "
              "average). `gate + margin`: the quality gate (the head's calibrated threshold) and the pair margin "
              "check, with their (empty) commits. "
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
            variants.append((f" ({', '.join(spec.split())})" if spec else "", settings_with(overrides)))
        except ValueError as exc:
            ap.error(f"--semantic {spec!r}: {exc} (give KEY=VALUE pairs of [pipeline.semantic_dedup] settings)")
    examples = [ex for _, ex in dev_examples(args.data)]
    order = np.random.default_rng(12).permutation(len(examples))
    items = scored([examples[i] for i in order], SegmentCache())
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
