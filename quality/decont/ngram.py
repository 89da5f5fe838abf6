"""Benchmark decontamination: reject examples whose prompt reproduces an evaluation item.

The measure is the one the contamination labels use: text is lowercased and split
into ``[a-z0-9]+`` tokens, and the score of a benchmark item against a prompt is the
share of the item's distinct word n-grams (``ngram``, 8 by default; GPT-3 used 13)
that occur in the prompt. An item shorter than ``short_item_tokens`` tokens matches
only when the whole prompt equals it after the same normalization, since a handful
of common words says nothing. An example scoring ``>= threshold`` against any item is
``contaminated`` and the verdict names the item. Containment is measured over the
*item's* n-grams, so a templated prompt that shares boilerplate with an item but asks
something else scores only the boilerplate's share and passes.

Benchmarks are files: JSONL with a ``text`` field (and ``id``/``benchmark``), or
plain text with one item per line; a directory stands for the files in it.

**Both sides are PII-redacted alike.** The PII stage redacts examples before anything
else sees them (so no output carries unredacted text), which once turned a benchmark
item's ``someone@example.com`` into ``[EMAIL]`` on the training side only, and a verbatim
copy of an item with contact details no longer matched it. Benchmark items and the text
checked here both go through the same redaction (every PII kind, reserved values such as
``192.0.2.1`` too, whatever ``pipeline.pii`` says), so a copy matches whether or not the PII stage ran, and
whatever contact details a copier swapped in.

The stage checks every parsed example (``checks_rejected``): an example rejected
earlier (``repetitive``, ``pair_identical``...) still carries ``contaminated`` as a
further reason, so contamination is counted completely.
"""

from __future__ import annotations

import gzip
import logging
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import orjson

from quality.privacy import STRICT
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import ScoreSpec, Stage, Verdict

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9]+")
_BENCH_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".txt")
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5,
                 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
                dtype=np.uint64)


def bench_tokens(text: str) -> list[str]:
    """Lowercase ``[a-z0-9]+`` tokens, the unit of the contamination measure."""
    return _WORD.findall(text.lower())


def comparable(text: str) -> str:
    """The text as the contamination measure sees it, benchmark item or example alike: PII
    redacted with every detector, reserved values too, so redaction upstream cannot hide a copy whatever the
    PII stage kept."""
    return STRICT.redact(text)[0]


def ngram_hashes(toks: Sequence[str], n: int) -> np.ndarray:
    """Distinct 64-bit hashes of the word ``n``-grams of ``toks`` (none if shorter than ``n``)."""
    if len(toks) < n:
        return np.zeros(0, dtype=np.uint64)
    # two independent 32-bit checksums per token, so distinct tokens do not collide in practice
    h = np.fromiter(((zlib.crc32(b) << 32) | zlib.adler32(b) for b in map(str.encode, toks)),
                    dtype=np.uint64, count=len(toks))
    m = len(h) - n + 1
    acc = np.zeros(m, dtype=np.uint64)
    for k in range(n):
        acc = (acc ^ h[k:k + m]) * _MIX[k % len(_MIX)]
        acc ^= acc >> np.uint64(31)
    return np.unique(acc)


@dataclass(frozen=True, slots=True)
class BenchmarkItem:
    id: str
    benchmark: str
    text: str


def benchmark_files(paths: Iterable[str | Path]) -> list[Path]:
    """The benchmark files that ``paths`` name; a directory stands for its benchmark files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_BENCH_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"benchmark path not found: {p}")
    return out


def load_benchmarks(paths: Iterable[str | Path]) -> list[BenchmarkItem]:
    """Reads benchmark items from JSONL (``text`` plus ``id``/``benchmark``) or text files.

    Raises:
        ValueError: a JSON line without a string ``text`` field, naming file and line.
    """
    items: list[BenchmarkItem] = []
    for path in benchmark_files(paths):
        opener = gzip.open if path.name.endswith(".gz") else open
        stem = path.name.split(".")[0]
        is_json = ".json" in path.name
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if not line:
                    continue
                if not is_json:
                    items.append(BenchmarkItem(f"{stem}:{lineno}", stem, line))
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: benchmark line is not JSON ({exc})") from None
                text = obj.get("text") if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise ValueError(f"{path}:{lineno}: benchmark item needs a string 'text' field")
                bench = str(obj.get("benchmark") or stem)
                items.append(BenchmarkItem(str(obj.get("id") or f"{bench}:{lineno}"), bench, text))
    return items


class BenchmarkIndex:
    """Word n-gram index over benchmark items, answering "which item does this text contain most of".

    Args:
        items: the benchmark items.
        ngram: words per n-gram.
        short_item_tokens: items with fewer tokens match by exact normalized equality only.
    """

    def __init__(self, items: Sequence[BenchmarkItem], *, ngram: int = 8, short_item_tokens: int = 10) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram!r}")
        self.items = list(items)
        self.ngram = ngram
        self.short_item_tokens = short_item_tokens
        self.short: dict[str, int] = {}
        keys, owners, sizes = [], [], np.zeros(len(self.items), dtype=np.float64)
        for i, item in enumerate(self.items):
            toks = bench_tokens(comparable(item.text))
            if not toks:
                continue
            if len(toks) < short_item_tokens:
                self.short.setdefault(" ".join(toks), i)
                continue
            h = ngram_hashes(toks, ngram)
            sizes[i] = len(h)
            keys.append(h)
            owners.append(np.full(len(h), i, dtype=np.int32))
        k = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
        o = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int32)
        order = np.argsort(k, kind="stable")
        self._keys, self._owners, self._sizes = k[order], o[order], sizes

    def __len__(self) -> int:
        return len(self.items)

    def best(self, text: str) -> tuple[int, float]:
        """The item with the highest containment in ``text`` and that score; ``(-1, 0.0)`` if none."""
        toks = bench_tokens(comparable(text))
        if not toks:
            return -1, 0.0
        if len(toks) < self.short_item_tokens:
            hit = self.short.get(" ".join(toks))
            if hit is not None:
                return hit, 1.0
        q = ngram_hashes(toks, self.ngram)
        if len(q) == 0 or len(self._keys) == 0:
            return -1, 0.0
        lo = np.searchsorted(self._keys, q, side="left")
        hi = np.searchsorted(self._keys, q, side="right")
        hit = np.flatnonzero(hi > lo)
        if len(hit) == 0:
            return -1, 0.0
        counts = hi[hit] - lo[hit]
        starts = np.repeat(lo[hit] - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        owners = self._owners[starts + np.arange(int(counts.sum()))]
        uniq, n = np.unique(owners, return_counts=True)
        scores = n / self._sizes[uniq]
        j = int(np.argmax(scores))
        return int(uniq[j]), float(scores[j])


@dataclass(frozen=True)
class DecontamSettings:
    """Benchmark decontamination (``[pipeline.decontam]``); no paths = off.

    ``benchmark_paths`` are JSONL/text files or directories, re-read in a running
    worker when their modification times change (checked every ``reload_interval_s``).
    """

    benchmark_paths: tuple[str, ...] = ()
    threshold: float = 0.8
    ngram: int = 8
    short_item_tokens: int = 10
    check_response: bool = False
    reload_interval_s: float = 30.0


def _build(d: DecontamSettings, _earlier) -> "Decontaminator | None":
    if not d.benchmark_paths:
        return None
    return Decontaminator(d.benchmark_paths, threshold=d.threshold, ngram=d.ngram,
                          short_item_tokens=d.short_item_tokens, check_response=d.check_response,
                          reload_interval_s=d.reload_interval_s)


@register(rank=80, section="decontam", settings=DecontamSettings, build=_build)
class Decontaminator(Stage):
    """Rejects examples whose prompt (optionally also response) contains a benchmark item, compared
    PII-redacted on both sides; it checks every parsed example, so one rejected first for another
    reason still lists ``contaminated`` after that reason.

    Args:
        benchmark_paths: JSONL/text files or directories of benchmark items.
        threshold: containment of an item's n-grams at or above which the example is contaminated.
        ngram: words per n-gram.
        short_item_tokens: items shorter than this match only by exact normalized equality.
        check_response: also score the response (the chosen side of a pair).
        reload_interval_s: in a long-running worker, re-read the files when their
            modification times change, checking at most this often; 0 never reloads.
        clock: monotonic time source for the reload check.
    """

    name = "decontam"
    reasons = frozenset({Reason.CONTAMINATED})
    scores = {"contamination": ScoreSpec(
        "share of the closest benchmark item's word n-grams found in the prompt (and response, with "
        "decontam.check_response), 0..1; >= decontam.threshold is contaminated")}
    checks_rejected = True

    def __init__(self, benchmark_paths: Sequence[str | Path] = (), *, threshold: float = 0.8, ngram: int = 8,
                 short_item_tokens: int = 10, check_response: bool = False, reload_interval_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, items: Sequence[BenchmarkItem] | None = None) -> None:
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"decontam threshold must be in (0, 1], got {threshold!r}")
        if reload_interval_s < 0:
            raise ValueError(f"reload_interval_s must be >= 0, got {reload_interval_s!r}")
        self.paths = [Path(p) for p in benchmark_paths]
        self.threshold = threshold
        self.ngram = ngram
        self.short_item_tokens = short_item_tokens
        self.check_response = check_response
        self.reload_interval_s = reload_interval_s
        self.clock = clock
        self._last_check = clock()
        self._mtimes = self._file_times()
        self.reloads = 0
        self.index = BenchmarkIndex(items if items is not None else load_benchmarks(self.paths),
                                    ngram=ngram, short_item_tokens=short_item_tokens)

    def _file_times(self) -> tuple:
        try:
            return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in benchmark_files(self.paths))
        except FileNotFoundError:
            return ()

    def maybe_reload(self) -> bool:
        """Rebuilds the index if the benchmark files changed; a bad file keeps the old index."""
        if self.reload_interval_s <= 0 or not self.paths:
            return False
        now = self.clock()
        if now - self._last_check < self.reload_interval_s:
            return False
        self._last_check = now
        mtimes = self._file_times()
        if mtimes == self._mtimes:
            return False
        try:
            index = BenchmarkIndex(load_benchmarks(self.paths), ngram=self.ngram,
                                   short_item_tokens=self.short_item_tokens)
        except (ValueError, OSError) as exc:
            log.error("benchmark reload failed, keeping %d items: %s", len(self.index), exc)
            return False
        self.index, self._mtimes = index, mtimes
        self.reloads += 1
        log.info("reloaded %d benchmark items from %d path(s)", len(index), len(self.paths))
        return True

    def score(self, ex: Example) -> tuple[int, float]:
        item, score = self.index.best(ex.prompt_text)
        if self.check_response:
            r_item, r_score = self.index.best(ex.response_text)
            if r_score > score:
                item, score = r_item, r_score
        return item, score

    def check_batch(self, batch: Sequence[Example]) -> list[Verdict]:
        self.maybe_reload()
        out = []
        for ex in batch:
            item, score = self.score(ex)
            scores = {"contamination": round(score, 4)}
            detail = self.index.items[item].id if item >= 0 else None
            reason = Reason.CONTAMINATED if item >= 0 and score >= self.threshold else None
            out.append(Verdict(reason, scores, detail=detail))
        return out

    def score_thresholds(self) -> Mapping[str, float]:
        return {"contamination": self.threshold}

    def version(self) -> Mapping[str, Any]:
        return {"threshold": self.threshold, "ngram": self.ngram, "short_item_tokens": self.short_item_tokens,
                "check_response": self.check_response, "items": len(self.index), "compare": "pii-redacted"}
