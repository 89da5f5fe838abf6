"""What sharding the decider's dedup state would lose, simulated on the dev data.

    .venv/bin/python bench/sim_data.py             # once: encode the dev data (cached)
    .venv/bin/python bench/sim_shard_recall.py     # ~1 min; figures into docs/scaling.md

Two routings, each compared with one global index over the same examples (every
instruction example and preference pair of ``../shared/data``, as the model stage sees
them: normalized, PII redacted):

* **MinHash band routing (near dedup).** With the near-dedup defaults (128 permutations,
  the banding ``choose_bands`` picks for 0.8), band ``b`` of an example has key
  ``k_b`` (``LSHIndex.band_keys``); the bucket ``(b, k_b)`` lives on shard
  ``hash(b, k_b) mod S``. An example is sent to every shard one of its bands routes to;
  each shard keeps only the buckets routed to it (and a copy of the signature, to verify
  candidates). The simulation builds the S shards' bucket maps, collects the candidates
  each shard returns, verifies them as ``LSHIndex.best_matches`` does, and compares the
  candidate and match sets with the real single ``LSHIndex``.
* **k-means routing (semantic dedup, SemDeDup).** Spherical k-means (``faiss.Kmeans``) on
  the MiniLM embeddings; an example goes to the shard of its nearest centroid (or of its
  two nearest: replication 2, or of the second only when it is nearly as close). A pair
  with cosine >= the threshold is kept when the later example is sent to a shard that
  holds the earlier one. Pairs are found by exact search (all pairs, inner product).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import write_section  # noqa: E402
from sim_data import DATA, ROOT, SegmentCache, dev_examples, embeddings  # noqa: E402

from quality.dedup.exact import content_key  # noqa: E402
from quality.dedup.minhash import MAX_SIG, texts_of  # noqa: E402
from quality.dedup.near import NearDedup, NearDedupSettings  # noqa: E402
from quality.dedup.semantic import SemanticDedupSettings  # noqa: E402

SHARDS = (2, 4, 8, 16, 32)
CLUSTERS = SHARDS + (128, 512)  # past 32: clusters as SemDeDup uses them, several per shard
THRESHOLDS = (0.95, 0.9)


def near_stage() -> NearDedup:
    s = NearDedupSettings()
    return NearDedup(threshold=s.threshold, num_perm=s.num_perm, ngram=s.ngram, fields=s.fields, bands=s.bands,
                     rows=s.rows, seed=s.seed)


# -- MinHash band routing -----------------------------------------------------------------------------

def band_shard(keys: np.ndarray, shards: int) -> np.ndarray:
    """Shard of each bucket ``(band, key)``: a hash of both, mod ``shards`` (keys are already salted per band)."""
    mixed = keys * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(33)) % np.uint64(shards)).astype(np.int64)


def pairs_set(q: np.ndarray, r: np.ndarray) -> set[tuple[int, int]]:
    """Unordered pairs of distinct rows."""
    return {(min(a, b), max(a, b)) for a, b in zip(q.tolist(), r.tolist()) if a != b}


def sharded_candidates(keys: np.ndarray, shards: int) -> tuple[set[tuple[int, int]], np.ndarray, np.ndarray]:
    """Candidate pairs found when every shard keeps only the buckets routed to it.

    Returns the pairs, the distinct shards each example is sent to, and the bucket
    entries (example, band) each shard holds.
    """
    n, bands = keys.shape
    route = band_shard(keys, shards)
    found: set[tuple[int, int]] = set()
    held = np.zeros(shards, dtype=np.int64)
    for s in range(shards):
        rows, cols = np.nonzero(route == s)       # the (example, band) entries this shard holds
        held[s] = len(rows)
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, b in zip(rows.tolist(), cols.tolist()):
            buckets.setdefault((b, int(keys[i, b])), []).append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    found.add((members[x], members[y]))
    per_example = np.array([len(set(r)) for r in route.tolist()])
    return found, per_example, held


def minhash_section(examples: list, shards: tuple[int, ...]) -> list[str]:
    near = near_stage()
    sigs = near.hasher.signatures(texts_of(examples, near.fields))
    ok = sigs[:, 0] != MAX_SIG
    idx = np.flatnonzero(ok)
    sigs = sigs[idx]
    index = near.index
    index.add([str(i) for i in range(len(sigs))], sigs)
    q, r = index.candidate_pairs(sigs)
    single = pairs_set(q, r)
    est = {p: float(np.mean(sigs[p[0]] == sigs[p[1]])) for p in single}
    matches = {p for p, s in est.items() if s >= near.threshold}
    keys = index.band_keys(sigs)
    lines = [f"{len(sigs):,} dev examples with a signature (near-dedup defaults: {near.hasher.num_perm} permutations, "
             f"{index.bands} bands x {index.rows} rows, word {near.hasher.ngram}-grams of "
             f"{', '.join(near.fields)}). One global `LSHIndex`: {len(single):,} candidate pairs, "
             f"{len(matches):,} of them matches (estimated Jaccard >= {near.threshold}).", "",
             "| shards | candidate pairs | same set as one index | matches found | shards per example (mean / max)"
             " | signature copies | bucket entries per shard, max / mean |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for s in shards:
        found, per_example, held = sharded_candidates(keys, s)
        lines.append(f"| {s} | {len(found):,} | {'yes' if found == single else 'NO'} | "
                     f"{len(matches & found):,} of {len(matches):,} | {per_example.mean():.2f} / {per_example.max()} | "
                     f"{per_example.mean():.2f}x | {held.max() / held.mean():.2f} |")
    return lines


# -- k-means routing ----------------------------------------------------------------------------------

def similar_pairs(emb: np.ndarray, threshold: float, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) with inner product >= threshold, by exact blocked search."""
    ii, jj, ss = [], [], []
    for start in range(0, len(emb), block):
        sims = emb[start:start + block] @ emb.T
        a, b = np.nonzero(sims >= threshold)
        a = a + start
        keep = a < b
        ii.append(a[keep])
        jj.append(b[keep])
        ss.append(sims[a[keep] - start, b[keep]])
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(ss)


def routes(emb: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The two nearest centroids of each embedding (spherical k-means) and their cosines."""
    import faiss

    km = faiss.Kmeans(emb.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
    km.train(emb)
    sims, nearest = km.index.search(emb, 2)
    return nearest, sims


def greedy_duplicates(n: int, always: list[list[int]], semantic: list[list[int]], meet) -> np.ndarray:
    """Which examples a decider rejects as duplicates, in arrival order (index order).

    ``always[b]``: earlier examples that are exact or near duplicates of ``b`` (found
    whatever the routing: exact by hash, near by bands); ``semantic[b]``: earlier ones at
    cosine >= the threshold, found only when ``meet(a, b)`` (their shards meet). Only
    accepted examples are stored, as in the pipeline.
    """
    accepted = np.zeros(n, dtype=bool)
    dup = np.zeros(n, dtype=bool)
    for b in range(n):
        if any(accepted[a] for a in always[b]) or any(accepted[a] and meet(a, b) for a in semantic[b]):
            dup[b] = True
        else:
            accepted[b] = True
    return dup


def routings(emb: np.ndarray, k: int, seed: int, delta: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                                         np.ndarray]:
    """Per routing, the shards each example is stored on and queried on (-1: none), and top-1 shard sizes."""
    nearest, sims = routes(emb, k, seed)
    top1 = nearest[:, :1]
    none = np.full_like(top1, -1)
    both = np.hstack([top1, none])
    close = np.where((sims[:, 1] >= sims[:, 0] - delta)[:, None], nearest, both)
    stored = {"top1": both, "top2": nearest, "store2": nearest, "delta": close}
    queried = {"top1": both, "top2": nearest, "store2": both, "delta": close}
    return stored, queried, np.bincount(nearest[:, 0], minlength=k)


ROUTINGS = ("top1", "top2", "store2", "delta")


def kmeans_rows(emb: np.ndarray, a: np.ndarray, b: np.ndarray, always: list[list[int]], k: int, seeds: int,
                delta: float, baseline: np.ndarray) -> dict:
    """Per routing: share of pairs lost, share of the one-index duplicate decisions missed, replication."""
    out: dict[str, list[float]] = {}
    for seed in range(seeds):
        stored, queried, sizes = routings(emb, k, seed + 1, delta)
        out.setdefault("imbalance", []).append(sizes.max() / sizes.mean())
        for name in ROUTINGS:
            st, qu = stored[name], queried[name]
            hit = ((st[a][:, :, None] == qu[b][:, None, :]) & (st[a][:, :, None] >= 0)).any(axis=(1, 2))
            out.setdefault(f"{name}_pairs", []).append(1.0 - hit.mean())
            found = {(x, y) for x, y, h in zip(a.tolist(), b.tolist(), hit.tolist()) if h}
            semantic: list[list[int]] = [[] for _ in range(len(emb))]
            for x, y in zip(a.tolist(), b.tolist()):
                semantic[y].append(x)
            dup = greedy_duplicates(len(emb), always, semantic, lambda x, y: (x, y) in found)
            out.setdefault(f"{name}_missed", []).append(float(np.sum(baseline & ~dup)) / max(1, int(baseline.sum())))
            out.setdefault(f"{name}_rep", []).append(float(np.mean((st >= 0).sum(axis=1))))
    return {key: float(np.mean(v)) for key, v in out.items()}


def semantic_section(examples: list, emb: np.ndarray, shards: tuple[int, ...], seeds: int, delta: float) -> list[str]:
    keys = [content_key(ex) for ex in examples]
    near = near_stage()
    sigs = near.hasher.signatures(texts_of(examples, near.fields))
    index = near.index
    nonempty = np.flatnonzero(sigs[:, 0] != MAX_SIG)
    index.add([str(i) for i in nonempty.tolist()], sigs[nonempty])
    q, r = index.candidate_pairs(sigs[nonempty])
    always: list[list[int]] = [[] for _ in examples]
    for x, y in pairs_set(nonempty[q], nonempty[r.astype(np.int64)]):
        if keys[x] == keys[y] or float(np.mean(sigs[x] == sigs[y])) >= near.threshold:
            always[y].append(x)
    thr = SemanticDedupSettings().threshold
    lines = [f"{len(emb):,} dev examples in dev file order (instruction files, then preference files), MiniLM "
             "embeddings of prompt + response (chosen side) as the model stage makes them. Pairs: every pair at or "
             "above the cosine, by exact search; the earlier one is the stored one. Spherical k-means "
             f"(`faiss.Kmeans`, 25 iterations) on all of them; figures averaged over {seeds} k-means seeds. "
             "Each cell: share of the pairs lost / share of the one-index duplicate decisions missed. The second "
             "figure replays the decider in order (only accepted examples are stored) with exact and near dedup "
             "global and lossless (as hash and band routing make them) and semantic dedup routed, and counts the "
             "examples one global index rejects as duplicates that the sharded decider accepts.", "",
             "Routings: `nearest`: stored and queried on the shard of the nearest centroid (replication 1); "
             "`two nearest`: stored and queried on the two nearest (replication 2, two queries); `stored on two`: "
             "stored on the two nearest, queried on the nearest only (replication 2, one query); `second when "
             f"close`: the second shard too when its centroid's cosine is within {delta} of the nearest's "
             "(replication in brackets).", ""]
    for threshold in THRESHOLDS:
        a, b, _ = similar_pairs(emb, threshold)
        same_key = np.array([keys[x] == keys[y] for x, y in zip(a.tolist(), b.tolist())], dtype=bool)
        near_dup = np.mean(sigs[a] == sigs[b], axis=1) >= near.threshold
        semantic: list[list[int]] = [[] for _ in examples]
        for x, y in zip(a.tolist(), b.tolist()):
            semantic[y].append(x)
        baseline = greedy_duplicates(len(emb), always, semantic, lambda x, y: True)
        only_exact_near = greedy_duplicates(len(emb), always, [[] for _ in examples], lambda x, y: True)
        mark = " (the default threshold)" if threshold == thr else ""
        lines += [f"**Cosine >= {threshold}{mark}**: {len(a):,} pairs over {len(set(a.tolist()) | set(b.tolist())):,} "
                  f"examples ({int(same_key.sum()):,} identical content, {int((near_dup & ~same_key).sum()):,} more "
                  f"near duplicates); one global decider rejects {int(baseline.sum()):,} examples as duplicates, "
                  f"{int((baseline & ~only_exact_near).sum()):,} of them only through the semantic index.", "",
                  "| shards K | nearest | two nearest | stored on two | second when close | largest shard / mean |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for k in shards:
            r = kmeans_rows(emb, a, b, always, k, seeds, delta, baseline)
            cell = {n: f"{r[n + '_pairs']:.2%} / {r[n + '_missed']:.2%}" for n in ROUTINGS}
            lines.append(f"| {k} | {cell['top1']} | {cell['top2']} | {cell['store2']} | {cell['delta']} "
                         f"({r['delta_rep']:.2f}) | {r['imbalance']:.2f} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--shards", type=int, nargs="+", default=list(SHARDS))
    ap.add_argument("--clusters", type=int, nargs="+", default=list(CLUSTERS), help="k-means K (semantic part)")
    ap.add_argument("--seeds", type=int, default=3, help="k-means seeds averaged")
    ap.add_argument("--delta", type=float, default=0.05, help="adaptive routing: cosine gap to the second centroid")
    ap.add_argument("--skip-semantic", action="store_true", help="MinHash part only (needs no embeddings)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/scaling.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    examples = [ex for _, ex in dev_examples(args.data)]
    shards = tuple(args.shards)
    lines = [f"Measured {time.strftime('%Y-%m-%d')} by `bench/sim_shard_recall.py`.", "",
             "**MinHash band routing (near dedup)**", ""] + minhash_section(examples, shards)
    if not args.skip_semantic:
        emb = embeddings(examples, SegmentCache())
        lines += ["", "**k-means routing (semantic dedup)**", ""]
        lines += semantic_section(examples, emb, tuple(args.clusters), args.seeds, args.delta)
    body = "\n".join(lines).rstrip()
    if not args.no_write:
        write_section(args.doc, "shard_recall", body)
    print(body)
    print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
