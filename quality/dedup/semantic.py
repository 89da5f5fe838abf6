"""Semantic duplicates: embedding cosine similarity against every accepted example.

The encoder stage (``models/``) leaves an L2-normalized float32 embedding in
``ex.features.embedding``; this stage reads it, so inner product is cosine. The
FAISS index is chosen by size: exact ``IndexFlatIP`` while the store is small,
``IndexHNSWFlat`` (no training, incremental adds) once it holds more than
``flat_max`` vectors, and ``IndexIVFFlat`` (k-means lists trained once on a sample
of the stored vectors) beyond ``ivf_min`` (0 keeps HNSW). Each switch rebuilds the
index once from the stored vectors. At a million stored vectors IVF built in 109 s
with recall@1 1.0 where HNSW (M 16) took 158 s for recall@1 0.58 (docs/dedup.md). faiss is imported inside
:class:`VectorIndex`, never when :mod:`quality` is imported.

Every example with an embedding gets ``semantic_similarity`` (the nearest accepted
neighbour's cosine, or 0.0 for an empty store) and the neighbour's id as detail;
examples without an embedding pass untouched.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import orjson

from quality.dedup.exact import entry_key, id_of_entry
from quality.dedup.tombstones import TombstoneRows
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import ScoreSpec, StatefulStage, Verdict
from quality.state import example_time

log = logging.getLogger(__name__)


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is in the models extra
        raise ImportError("semantic dedup needs faiss: pip install 'sieve[models]' (faiss-cpu)") from None
    faiss.cvar.distance_compute_blas_threshold = 20  # batched flat search uses BLAS (10x faster)
    return faiss


class VectorIndex(TombstoneRows):
    """Ids and normalized vectors in FAISS, searched by inner product.

    Args:
        dim: vector dimension.
        flat_max: stored vectors up to which search is exact (flat); beyond, HNSW.
        hnsw_m: HNSW graph degree.
        ef_construction, ef_search: HNSW build and search breadth (recall against speed).
        ivf_min: stored vectors beyond which the index becomes IVF (0: never); keep it
            >= 40 * ``ivf_nlist`` so each list trains on enough vectors.
        ivf_nlist: IVF lists, fixed at the switch, so sized for the store's final size
            (4096 for ~1M); 0 picks a power of two near ``4 * sqrt(n)`` at the switch.
        ivf_nprobe: IVF lists searched per query (recall against speed).
    """

    def __init__(self, dim: int, *, flat_max: int = 50_000, hnsw_m: int = 32, ef_construction: int = 80,
                 ef_search: int = 64, ivf_min: int = 200_000, ivf_nlist: int = 4096, ivf_nprobe: int = 16) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim!r}")
        if flat_max < 0 or hnsw_m < 2 or ef_search < 1 or ef_construction < 1:
            raise ValueError(f"bad index settings: flat_max={flat_max!r}, hnsw_m={hnsw_m!r}, "
                             f"ef_construction={ef_construction!r}, ef_search={ef_search!r}")
        if ivf_min < 0 or ivf_nlist < 0 or ivf_nprobe < 1:
            raise ValueError(f"bad IVF settings: ivf_min={ivf_min!r} (>= 0), ivf_nlist={ivf_nlist!r} (>= 0), "
                             f"ivf_nprobe={ivf_nprobe!r} (>= 1)")
        self.faiss = _faiss()
        self.dim, self.flat_max, self.hnsw_m = dim, flat_max, hnsw_m
        self.ef_construction, self.ef_search = ef_construction, ef_search
        self.ivf_min, self.ivf_nlist, self.ivf_nprobe = ivf_min, ivf_nlist, ivf_nprobe
        self.index = self.faiss.IndexFlatIP(dim)
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.times: list[float] = []
        self.alive = np.zeros(0, dtype=bool)

    @property
    def kind(self) -> str:
        if isinstance(self.index, self.faiss.IndexFlatIP):
            return "flat"
        return "hnsw" if isinstance(self.index, self.faiss.IndexHNSWFlat) else "ivf"

    def _kind_for(self, n: int) -> str:
        if n <= self.flat_max:
            return "flat"
        return "ivf" if self.ivf_min and n > self.ivf_min else "hnsw"

    def _hnsw(self) -> Any:
        index = self.faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self.faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def _ivf(self, data: np.ndarray) -> Any:
        """An IndexIVFFlat trained on a sample of ``data`` (at least 39 vectors per list)."""
        n = len(data)
        nlist = self.ivf_nlist or 2 ** round(math.log2(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n // 39))
        index = self.faiss.IndexIVFFlat(self.faiss.IndexFlatIP(self.dim), self.dim, nlist,
                                        self.faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
        index.train(np.ascontiguousarray(data[np.sort(sample)]))
        index.nprobe = min(self.ivf_nprobe, nlist)
        return index

    def _rebuild(self, kind: str, data: np.ndarray) -> None:
        """Replaces the index by one of ``kind`` holding ``data`` (the rows, in order)."""
        t0 = time.perf_counter()
        index = self._ivf(data) if kind == "ivf" else self._hnsw()
        for start in range(0, len(data), 100_000):
            index.add(data[start:start + 100_000])
        self.index = index
        log.info("semantic index rebuilt as %s over %d vectors in %.1f s", kind, len(data), time.perf_counter() - t0)

    def add(self, ids: Sequence[str], vectors: np.ndarray, times: Sequence[float] | None = None) -> int:
        """Stores vectors under their ids; ids already stored are skipped. Returns how many were added."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have dimension {self.dim}, got {vectors.shape[1]}")
        times = [0.0] * len(ids) if times is None else list(times)
        fresh, seen = [], set()
        for i, ex_id in enumerate(ids):
            if ex_id not in self.row_of and ex_id not in seen:
                fresh.append(i)
                seen.add(ex_id)
        if not fresh:
            return 0
        kind = self._kind_for(self.index.ntotal + len(fresh))
        if kind != self.kind and self.kind != "ivf":  # flat -> hnsw -> ivf, never back
            old = self.index.reconstruct_n(0, self.index.ntotal) if self.index.ntotal else vectors[:0]
            self._rebuild(kind, np.concatenate([old, vectors[fresh]]))
        else:
            self.index.add(vectors[fresh])
        for i in fresh:
            self.row_of[ids[i]] = len(self.ids)
            self.ids.append(ids[i])
            self.times.append(float(times[i]))
        self.alive = np.concatenate([self.alive, np.ones(len(fresh), dtype=bool)])
        return len(fresh)

    def search(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The most similar live stored row of each vector and its inner product (-1 / 0.0 when empty)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(vectors)
        best_sim, best_row = np.zeros(n, dtype=np.float32), np.full(n, -1, dtype=np.int64)
        live = int(self.alive.sum())
        if n == 0 or live == 0:
            return best_sim, best_row
        k = min(self.index.ntotal, 4 if live == len(self.alive) else 16)
        todo = np.arange(n)
        while len(todo):
            sims, rows = self.index.search(vectors[todo], k)
            ok = (rows >= 0) & self.alive[np.maximum(rows, 0)]
            found = ok.any(axis=1)
            first = ok.argmax(axis=1)
            hit = todo[found]
            best_sim[hit] = sims[found, first[found]]
            best_row[hit] = rows[found, first[found]]
            if k >= self.index.ntotal or (self.kind == "ivf" and k >= 1024):
                break  # IVF only sees its probed lists: more k finds no further live rows there
            todo, k = todo[~found], min(self.index.ntotal, k * 8)
        return best_sim, best_row

    def _row_times(self) -> np.ndarray:
        return np.asarray(self.times, dtype=np.float64)

    def __contains__(self, ex_id: str) -> bool:
        return ex_id in self.row_of

    def __len__(self) -> int:
        return len(self.row_of)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.faiss.write_index(self.index, str(directory / "faiss.index"))
        np.save(directory / "alive.npy", self.alive)
        np.save(directory / "times.npy", np.asarray(self.times, dtype=np.float64))
        (directory / "ids.json").write_bytes(orjson.dumps(self.ids))

    def load(self, directory: Path) -> None:
        index = self.faiss.read_index(str(directory / "faiss.index"))
        if index.d != self.dim:
            raise ValueError(f"snapshot in {directory} has dimension {index.d}, expected {self.dim}")
        self.index = index
        if self.kind == "hnsw":
            index.hnsw.efSearch = self.ef_search
        elif self.kind == "ivf":
            index.nprobe = min(self.ivf_nprobe, index.nlist)
        self.alive = np.load(directory / "alive.npy")
        self.times = np.load(directory / "times.npy").tolist()
        self.ids = orjson.loads((directory / "ids.json").read_bytes())
        self.row_of = {i: r for r, i in enumerate(self.ids) if self.alive[r]}


@dataclass(frozen=True)
class SemanticDedupSettings:
    """Embedding near-duplicates (``[pipeline.semantic_dedup]``): exact flat search up to
    ``flat_max`` stored vectors, HNSW up to ``ivf_min``, then IVF (see docs/dedup.md)."""

    enabled: bool = True
    threshold: float = 0.95  # cosine similarity from which an example is a semantic duplicate
    flat_max: int = 50_000  # stored vectors searched exactly (flat inner product)
    hnsw_m: int = 32
    ef_search: int = 64
    ivf_min: int = 200_000  # from this many stored vectors the index is IVF; 0 = stay HNSW
    ivf_nlist: int = 4096  # IVF lists, trained once at the switch: size it for the store's final size
    ivf_nprobe: int = 16  # IVF lists searched per query (recall against speed)


def _build(s: SemanticDedupSettings, _earlier) -> "SemanticDedup | None":
    if not s.enabled:
        return None
    return SemanticDedup(threshold=s.threshold, flat_max=s.flat_max, hnsw_m=s.hnsw_m, ef_search=s.ef_search,
                         ivf_min=s.ivf_min, ivf_nlist=s.ivf_nlist, ivf_nprobe=s.ivf_nprobe)


@register(rank=130, section="semantic_dedup", settings=SemanticDedupSettings, build=_build)
class SemanticDedup(StatefulStage):
    """Rejects examples whose embedding has cosine >= ``threshold`` with an accepted one.

    Args:
        threshold: cosine similarity at or above which an example is a duplicate.
        flat_max, hnsw_m, ef_search, ivf_min, ivf_nlist, ivf_nprobe: index choice, see :class:`VectorIndex`.
        embed: optional ``texts -> normalized embeddings`` used by :meth:`commit` for
            accepted examples that carry no embedding (a replay of ``sieve.accepted``).
        embed_text: the text of an example that ``embed`` is given.
        clock: time source for examples without a timestamp.
    """

    name = "semantic_dedup"
    reasons = frozenset({Reason.DUPLICATE_SEMANTIC})
    needs = frozenset({"embedding"})
    off_switch = "semantic_dedup.enabled = false"
    scores = {"semantic_similarity": ScoreSpec(
        "cosine of the example's embedding to the most similar earlier example's (accepted ones; in `sieve "
        "score`, every earlier record), -1..1; >= semantic_dedup.threshold is duplicate_semantic")}

    def __init__(self, *, threshold: float = 0.95, flat_max: int = 50_000, hnsw_m: int = 32, ef_search: int = 64,
                 ivf_min: int = 200_000, ivf_nlist: int = 4096, ivf_nprobe: int = 16,
                 embed: Callable[[list[str]], np.ndarray] | None = None,
                 embed_text: Callable[[Example], str] | None = None,
                 embed_examples: Callable[[list[Example]], np.ndarray] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"semantic_dedup threshold must be a cosine in [-1, 1], got {threshold!r}")
        self.threshold = threshold
        if flat_max < 0 or hnsw_m < 2 or ef_search < 1:
            raise ValueError(f"bad semantic_dedup index settings: flat_max={flat_max!r} (>= 0), "
                             f"hnsw_m={hnsw_m!r} (>= 2), ef_search={ef_search!r} (>= 1)")
        if ivf_min < 0 or ivf_nlist < 0 or ivf_nprobe < 1:
            raise ValueError(f"bad semantic_dedup IVF settings: ivf_min={ivf_min!r} (>= 0), "
                             f"ivf_nlist={ivf_nlist!r} (>= 0), ivf_nprobe={ivf_nprobe!r} (>= 1)")
        # faiss is imported at the first embedding, so pipelines without an encoder never need it
        self.index_settings = {"flat_max": flat_max, "hnsw_m": hnsw_m, "ef_search": ef_search,
                               "ivf_min": ivf_min, "ivf_nlist": ivf_nlist, "ivf_nprobe": ivf_nprobe}
        self.index: VectorIndex | None = None
        self.embed, self.embed_examples, self.clock = embed, embed_examples, clock
        self.embed_text = embed_text or (lambda ex: f"{ex.prompt_text}\n{ex.response_text}")

    def _index(self, dim: int) -> VectorIndex:
        if self.index is None:
            self.index = VectorIndex(dim, **self.index_settings)
        return self.index

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        verdicts: list[Verdict] = [Verdict() for _ in batch]
        pos = [i for i, ex in enumerate(batch) if ex.features.embedding is not None]
        if not pos:
            return verdicts
        emb = np.stack([np.asarray(batch[i].features.embedding, dtype=np.float32).ravel() for i in pos])
        index = self._index(emb.shape[1])
        sims, rows = index.search(emb)
        within = emb @ emb.T
        kept: list[int] = []  # positions in emb kept so far
        entries = [entry_key(batch[i]) for i in pos]
        for j, i in enumerate(pos):
            sim, match = float(sims[j]), (index.ids[rows[j]] if rows[j] >= 0 else None)
            if match == entries[j]:  # a replay of an accepted example is not a duplicate of itself
                sim, match = 0.0, None
            in_batch_of = None
            if kept:
                k = kept[int(np.argmax(within[j, kept]))]
                if within[j, k] > sim and entries[k] != entries[j]:
                    sim, match, in_batch_of = float(within[j, k]), entries[k], pos[k]
            match = id_of_entry(match)
            scores = {"semantic_similarity": round(sim, 4)}
            if match is not None and sim >= self.threshold:
                verdicts[i] = Verdict(Reason.DUPLICATE_SEMANTIC, scores, detail=match, in_batch_of=in_batch_of)
            else:
                verdicts[i] = Verdict(None, scores, detail=match)
                kept.append(j)
        return verdicts

    def commit(self, accepted: Sequence[Example]) -> None:
        """Adds the embeddings of accepted examples (computing missing ones with ``embed``)."""
        have = [ex for ex in accepted if ex.features.embedding is not None]
        missing = [ex for ex in accepted if ex.features.embedding is None
                   and (self.index is None or entry_key(ex) not in self.index)]
        vecs = [np.asarray(ex.features.embedding, dtype=np.float32).ravel() for ex in have]
        if missing and self.embed_examples is not None:  # the model stage's own embedding of an example
            vecs += list(np.asarray(self.embed_examples(list(missing)), dtype=np.float32))
            have += missing
        elif missing and self.embed is not None:
            vecs += list(np.asarray(self.embed([self.embed_text(ex) for ex in missing]), dtype=np.float32))
            have += missing
        if have:
            self._index(len(vecs[0])).add([entry_key(ex) for ex in have], np.stack(vecs),
                                          [example_time(ex, self.clock) for ex in have])

    def remove(self, ex_id: str) -> int:
        """Forgets every stored example with this id (an operator's request)."""
        if self.index is None:
            return 0
        keys = [k for k in list(self.index.row_of) if id_of_entry(k) == ex_id]
        return sum(self.index.remove(k) for k in keys)

    def size(self) -> int:
        return len(self.index) if self.index is not None else 0

    def expire(self, before: float) -> int:
        return self.index.expire(before) if self.index is not None else 0

    def snapshot(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"dim": self.index.dim if self.index is not None else 0}
        (directory / "meta.json").write_bytes(orjson.dumps(meta))
        if self.index is not None:
            self.index.save(directory)

    def restore(self, directory: Path) -> None:
        dim = orjson.loads((directory / "meta.json").read_bytes())["dim"]
        self.index = None
        if dim:
            self._index(dim).load(directory)

    def score_thresholds(self) -> Mapping[str, float]:
        return {"semantic_similarity": self.threshold}

    def version(self) -> Mapping[str, Any]:
        return {"threshold": self.threshold, **self.index_settings}
