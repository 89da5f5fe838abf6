"""The dev data and its encoder outputs, shared by the scaling benchmarks and simulations.

    .venv/bin/python bench/sim_data.py            # encode every dev example once (~10-20 min on 2 cores)

The expensive part of every scaling figure is the encoder (all-MiniLM-L6-v2 at ~20-35
sequences/s on 2 CPU cores), so it runs once: :func:`precompute` feeds every
instruction example and preference pair of ``../shared/data`` through what the pipeline
does before the model (parse, normalize, PII redaction), runs
``Encoder.encode_segments`` on each (prompt, response) sequence the model stage would
encode (SFT: the response; pairs: the chosen and the rejected side), and stores the
results in ``.cache/scaling/segments.npz`` (gitignored), keyed by a hash of the two
texts. :class:`CachedEncoder` then stands in for the encoder inside the real
``ModelScoreStage``: the same heads, thresholds and embeddings, read from the cache
(a miss is encoded live and added). Re-running :func:`precompute` only encodes what is
missing, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality.normalize import normalize_example  # noqa: E402
from quality.filters.pii import PiiRedactor  # noqa: E402
from quality.records import Example, RawRecord, parse  # noqa: E402

# ../shared/data from the main checkout; a worktree under <project>/wt/<name> looks two levels up
DATA = next((p for p in (ROOT.parent / "shared/data", ROOT.parents[1] / "shared/data") if p.is_dir()),
            ROOT.parent / "shared/data")
CACHE = ROOT / ".cache/scaling"
KINDS = ("instruction", "preference")
ARRAYS = ("example", "prompt", "response", "example_mid", "response_mid")


def dev_files(data: Path = DATA) -> list[Path]:
    """The instruction and preference files of the dev data, in name order."""
    files = [p for kind in KINDS for p in sorted((data / kind).glob("*.jsonl"))]
    if not files:
        raise FileNotFoundError(f"no instruction/ or preference/ JSONL files under {data}; pass --data "
                                "pointing at the shared dev data (../shared/data)")
    return files


def raw_lines(path: Path) -> list[RawRecord]:
    """Every non-blank line of a JSONL file as the file mode reads it (origin: file, line)."""
    out = []
    with open(path, "rb") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                out.append(RawRecord(line.rstrip(b"\r\n"), {"file": str(path), "line": i}))
    return out


def model_view(raw: RawRecord, pii: PiiRedactor) -> Example | None:
    """The example as the model stage would see it: parsed, normalized, PII redacted."""
    ex = parse(raw)
    if not isinstance(ex, Example):
        return None
    ex = normalize_example(ex)
    v = pii.check_batch([ex])[0]
    return v.replacement if v.replacement is not None else ex


def dev_examples(data: Path = DATA) -> list[tuple[str, Example]]:
    """(file stem, example) for every parseable dev instruction example and preference pair."""
    pii = PiiRedactor()
    out = []
    for path in dev_files(data):
        for raw in raw_lines(path):
            ex = model_view(raw, pii)
            if ex is not None:
                out.append((path.stem, ex))
    return out


def seq_key(prompt: str, response: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(prompt.encode("utf-8", "surrogatepass"))
    h.update(b"\x00\x1f\x00")
    h.update(response.encode("utf-8", "surrogatepass"))
    return h.digest()


def sequences(examples: Sequence[Example]) -> list[tuple[str, str]]:
    """The (prompt, response) sequences the model stage encodes for these examples."""
    out = []
    for ex in examples:
        out.append((ex.prompt_text, ex.response_text))
        if ex.kind == "preference":
            out.append((ex.prompt_text, ex.rejected_text))
    return out


class SegmentCache:
    """Encoder outputs by sequence key, kept in numpy arrays and saved as one .npz."""

    def __init__(self, path: Path = CACHE / "segments.npz") -> None:
        self.path = path
        self.row: dict[bytes, int] = {}
        self.arrays: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS + ("prompt_tokens", "response_tokens",
                                                                             "truncated")}
        self._stacked: dict[str, np.ndarray] | None = None
        if path.exists():
            with np.load(path) as z:
                keys = z["keys"]
                for k in self.arrays:
                    self.arrays[k] = [z[k]]
            # keys are a (n, 16) uint8 matrix; an "S16" array (older caches) dropped trailing NUL bytes
            self.row = {(bytes(k) if keys.dtype == np.uint8 else bytes(k).ljust(16, b"\x00")): i
                        for i, k in enumerate(keys)}

    def __len__(self) -> int:
        return len(self.row)

    def __contains__(self, key: bytes) -> bool:
        return key in self.row

    def stacked(self) -> dict[str, np.ndarray]:
        if self._stacked is None:
            self._stacked = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.arrays.items()}
            self.arrays = {k: [v] for k, v in self._stacked.items()}
        return self._stacked

    def put(self, keys: Sequence[bytes], seg: Any) -> None:
        fresh = [i for i, k in enumerate(keys) if k not in self.row]
        for i in fresh:
            self.row[keys[i]] = len(self.row)
        for k in self.arrays:
            self.arrays[k].append(np.asarray(getattr(seg, k))[fresh])
        self._stacked = None

    def take(self, keys: Sequence[bytes]) -> dict[str, np.ndarray]:
        idx = np.array([self.row[k] for k in keys], dtype=np.int64)
        return {k: v[idx] for k, v in self.stacked().items()}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.frombuffer(b"".join(sorted(self.row, key=self.row.get)), dtype=np.uint8).reshape(-1, 16)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, **self.stacked())
        os.replace(tmp, self.path)


class CachedEncoder:
    """An :class:`models.encoder.Encoder` whose ``encode_segments`` reads a :class:`SegmentCache`.

    Everything else (version, dim, tokenizer) is the real encoder's, so the model stage
    around it builds the same features and decides as it would live.
    """

    def __init__(self, encoder: Any, cache: SegmentCache) -> None:
        self._encoder, self.cache = encoder, cache
        self.misses = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode_segments(self, prompts: Sequence[str], responses: Sequence[str]) -> Any:
        from models.encoder import SegmentEmbeddings

        keys = [seq_key(p, r) for p, r in zip(prompts, responses)]
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self.cache:
                first.setdefault(k, i)
        todo = list(first.values())
        if todo:
            self.misses += len(todo)
            seg = self._encoder.encode_segments([prompts[i] for i in todo], [responses[i] for i in todo])
            self.cache.put([keys[i] for i in todo], seg)
        got = self.cache.take(keys)
        return SegmentEmbeddings(**{f: got[f] for f in SegmentEmbeddings.__dataclass_fields__})


def real_encoder(threads: int = 2) -> Any:
    """The pipeline's default encoder (bundled all-MiniLM-L6-v2, CPU, 256 tokens)."""
    import torch

    from models.stage import shared_encoder
    from quality.scoring.gate import ScoringSettings

    torch.set_num_threads(threads)
    s = ScoringSettings()
    return shared_encoder(s.model, "cpu", s.max_tokens, s.batch_size, s.dtype)


def precompute(data: Path, cache: SegmentCache, chunk: int = 512, threads: int = 2) -> None:
    """Encodes every dev sequence that the cache lacks, saving after each chunk."""
    seqs = sequences([ex for _, ex in dev_examples(data)])
    distinct = {seq_key(p, r): (p, r) for p, r in seqs}
    todo = [(k, pr) for k, pr in distinct.items() if k not in cache]
    print(f"{len(seqs):,} sequences ({len(distinct):,} distinct), {len(distinct) - len(todo):,} cached, "
          f"{len(todo):,} to encode", file=sys.stderr)
    if not todo:
        return
    enc = real_encoder(threads)
    t0 = time.perf_counter()
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        seg = enc.encode_segments([p for _, (p, _r) in part], [r for _, (_p, r) in part])
        cache.put([k for k, _ in part], seg)
        cache.save()
        done = start + len(part)
        print(f"  {done:,}/{len(todo):,} encoded, {done / (time.perf_counter() - t0):.1f} seq/s", file=sys.stderr)


def embeddings(examples: Sequence[Example], cache: SegmentCache) -> np.ndarray:
    """The embedding semantic dedup stores for each example (prompt + response, chosen side)."""
    return cache.take([seq_key(ex.prompt_text, ex.response_text) for ex in examples])["example"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=CACHE / "segments.npz")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    precompute(args.data, SegmentCache(args.cache), threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
