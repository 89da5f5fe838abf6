"""Near duplicates: MinHash LSH against every accepted example, and within the batch.

An example is a near duplicate when the estimated Jaccard similarity of its word
n-gram shingles to an accepted example (or to an example kept earlier in the same
batch) is at least ``threshold``. Which text counts is configurable: prompt and
response by default (the chosen side for preference pairs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import orjson

from quality.dedup.exact import entry_key, id_of_entry
from quality.dedup.minhash import FIELDS, MAX_SIG, SIG_DTYPE, LSHIndex, MinHasher, choose_bands, jaccard, texts_of
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import ScoreSpec, StatefulStage, Verdict
from quality.state import example_time


@dataclass(frozen=True)
class NearDedupSettings:
    """MinHash LSH near-duplicate detection (``[pipeline.near_dedup]``); bands/rows 0 = chosen for recall."""

    enabled: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 2  # word bigrams: best agreement with GPTeacher's cleaning (docs/eval_dedup.md)
    fields: tuple[str, ...] = ("prompt", "response", "rejected")  # pairs differing in rejected are distinct
    bands: int = 0
    rows: int = 0
    seed: int = 1


def _build(n: NearDedupSettings, _earlier) -> "NearDedup | None":
    if not n.enabled:
        return None
    return NearDedup(threshold=n.threshold, num_perm=n.num_perm, ngram=n.ngram, fields=n.fields, bands=n.bands,
                     rows=n.rows, seed=n.seed)


@register(rank=100, section="near_dedup", settings=NearDedupSettings, build=_build)
class NearDedup(StatefulStage):
    """Rejects examples whose MinHash Jaccard estimate to an accepted one is >= ``threshold``.

    Args:
        threshold: Jaccard similarity at or above which an example is a duplicate.
        num_perm: MinHash signature length.
        ngram: words per shingle.
        fields: which texts are shingled: some of ``prompt``, ``response``, ``rejected``, ``all``.
        bands, rows: LSH banding; chosen by :func:`quality.dedup.minhash.choose_bands` when 0.
        seed: MinHash seed; a snapshot only restores into a stage with the same seed.
        clock: time source for examples without a timestamp (tests pass their own).
    """

    name = "near_dedup"
    reasons = frozenset({Reason.DUPLICATE_NEAR})
    provides = frozenset({"minhash", "minhash_key"})
    scores = {"near_jaccard": ScoreSpec(
        "MinHash estimate of the word n-gram Jaccard similarity to the most similar earlier example "
        "(accepted ones; in `sieve score`, every earlier record), 0..1; >= near_dedup.threshold is duplicate_near")}

    def __init__(self, *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 2,
                 fields: Sequence[str] = ("prompt", "response"), bands: int = 0, rows: int = 0,
                 seed: int = 1, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near_dedup threshold must be in (0, 1], got {threshold!r}")
        fields = tuple(fields)
        if not fields or any(f not in FIELDS for f in fields):
            raise ValueError(f"near_dedup fields must be some of {FIELDS}, got {fields!r}")
        if (bands == 0) != (rows == 0):
            raise ValueError(f"set both bands and rows, or neither; got bands={bands!r}, rows={rows!r}")
        if bands == 0:
            bands, rows = choose_bands(num_perm, min(threshold, 0.99))
        self.threshold = threshold
        self.fields = fields
        self.hasher = MinHasher(num_perm=num_perm, ngram=ngram, seed=seed)
        self.index = LSHIndex(num_perm, bands, rows)
        self.clock = clock
        # a signature made with other settings (another stage, another process) is not this one's
        self.signature_key = f"num_perm={num_perm},ngram={ngram},seed={seed},fields={'+'.join(fields)}"

    def annotate(self, batch: Sequence[Example]) -> None:
        """The MinHash signature of each example lacking one (the stateless half of this stage)."""
        todo = [ex for ex in batch if ex.features.minhash is None or ex.features.minhash_key != self.signature_key]
        if todo:
            for ex, sig in zip(todo, self.hasher.signatures(texts_of(todo, self.fields))):
                ex.features.minhash, ex.features.minhash_key = sig, self.signature_key

    def _signatures(self, batch: Sequence[Example]) -> np.ndarray:
        self.annotate(batch)
        if not batch:
            return np.zeros((0, self.hasher.num_perm), dtype=SIG_DTYPE)
        return np.stack([ex.features.minhash for ex in batch])

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        sigs = self._signatures(batch)
        stored = self.index.best_matches(sigs)
        keys = self._shared_band_keys(sigs)
        verdicts: list[Verdict] = []
        kept_by_key: dict[int, list[int]] = {}  # band key -> positions in this batch kept so far
        entries = [entry_key(ex) for ex in batch]
        for i, ex in enumerate(batch):
            row, sim = stored[i]
            match = self.index.ids[row] if row >= 0 else None
            if match == entries[i]:  # the same example again (a replay): not a duplicate of itself
                match, sim = None, 0.0
            in_batch_of = None
            if keys[i] and kept_by_key:  # in-batch candidates share a band, as stored ones do
                cands = {j for k in keys[i] for j in kept_by_key.get(k, ())}
                for j in sorted(cands):
                    s = float(jaccard(sigs[j], sigs[i]))
                    if s > sim and entries[j] != entries[i]:
                        match, sim, in_batch_of = entries[j], s, j
            match = id_of_entry(match)
            scores = {"near_jaccard": round(sim, 4)}
            if match is not None and sim >= self.threshold:
                verdicts.append(Verdict(Reason.DUPLICATE_NEAR, scores, detail=match, in_batch_of=in_batch_of))
            else:
                verdicts.append(Verdict(None, scores, detail=match))
                for k in keys[i]:
                    kept_by_key.setdefault(k, []).append(i)
        return verdicts

    def _shared_band_keys(self, sigs: np.ndarray) -> list[list[int]]:
        """Per example, its band keys that another non-empty example of the batch also has.

        Only these can make in-batch candidates, and most examples have none, so the
        sequential in-batch check skips them without touching a dict.
        """
        keys = self.index.band_keys(sigs)
        out: list[list[int]] = [[] for _ in range(len(sigs))]
        nonempty = np.flatnonzero(sigs[:, 0] != MAX_SIG)
        if len(nonempty) < 2:
            return out
        flat = keys[nonempty].ravel()
        _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        shared = (counts[inverse] > 1).reshape(len(nonempty), -1)
        for i in np.flatnonzero(shared.any(axis=1)).tolist():
            out[int(nonempty[i])] = keys[nonempty[i]][shared[i]].tolist()
        return out

    def commit(self, accepted: Sequence[Example]) -> None:
        """Adds accepted examples to the index; examples already stored (same id and content) are skipped."""
        fresh = [ex for ex in accepted if entry_key(ex) not in self.index]
        if fresh:
            sigs = self._signatures(fresh)
            self.index.add([entry_key(ex) for ex in fresh], sigs, [example_time(ex, self.clock) for ex in fresh])

    def remove(self, ex_id: str) -> int:
        """Forgets every stored example with this id (an operator's request)."""
        keys = [k for k in list(self.index.row_of) if id_of_entry(k) == ex_id]
        return sum(self.index.remove(k) for k in keys)

    def size(self) -> int:
        return len(self.index)

    def expire(self, before: float) -> int:
        return self.index.expire(before)

    def snapshot(self, directory: Path) -> None:
        """Writes the index to ``directory`` (created)."""
        directory.mkdir(parents=True, exist_ok=True)
        state = self.index.state()
        ids = state.pop("ids")
        np.savez(directory / "lsh.npz", **state)
        (directory / "ids.json").write_bytes(orjson.dumps(ids))
        (directory / "settings.json").write_bytes(orjson.dumps(self._index_settings()))

    def restore(self, directory: Path) -> None:
        """Replaces the index by the one saved in ``directory``.

        Raises:
            ValueError: the snapshot was written with other MinHash settings.
        """
        saved = orjson.loads((directory / "settings.json").read_bytes())
        if saved != self._index_settings():
            raise ValueError(f"near_dedup snapshot in {directory} has settings {saved}, this stage has "
                             f"{self._index_settings()}; rebuild from sieve.accepted instead")
        with np.load(directory / "lsh.npz") as data:
            state: dict[str, Any] = {k: data[k] for k in data.files}
        state["ids"] = orjson.loads((directory / "ids.json").read_bytes())
        self.index = LSHIndex.from_state(state)

    def score_thresholds(self) -> Mapping[str, float]:
        return {"near_jaccard": self.threshold}

    def _index_settings(self) -> dict[str, Any]:
        v = dict(self.version())
        del v["threshold"]
        return v

    def version(self) -> Mapping[str, Any]:
        return {"threshold": self.threshold, "num_perm": self.hasher.num_perm, "ngram": self.hasher.ngram,
                "bands": self.index.bands, "rows": self.index.rows, "fields": list(self.fields),
                "seed": self.hasher.seed}
