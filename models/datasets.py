"""Training and evaluation data for the heads: labelled examples, preference pairs, cached embeddings.

Rows are read with the pipeline's own parser and normalizer (:func:`quality.records.parse`,
:func:`quality.normalize.normalize_example`), so a head is trained on exactly the
texts the model stage will see. Embeddings are the costly part (tens of examples per
second on a laptop CPU), so :func:`cached_segments` stores them in a cache folder
keyed by the encoder's version and a hash of the texts: change either and they are
recomputed, never reused wrongly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import orjson

from quality.normalize import normalize_example
from quality.records import Example, RawRecord, parse


def read_examples(paths: Iterable[str | Path]) -> list[Example]:
    """Every parseable line of JSONL files, normalized as the pipeline does; bad lines are skipped."""
    out = []
    for path in paths:
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                parsed = parse(RawRecord(line.rstrip(b"\r\n"), {"file": str(path), "line": lineno}))
                if isinstance(parsed, Example):
                    out.append(normalize_example(parsed))
    return out


def read_labels(path: str | Path) -> dict[str, dict]:
    """Label rows of a JSONL file keyed by ``id``."""
    with open(path, "rb") as fh:
        rows = [orjson.loads(line) for line in fh if line.strip()]
    return {str(r["id"]): r for r in rows}


def group_of(text: str, folds: int, salt: str = "sieve") -> int:
    """A stable fold number from a text (an id or a prompt), for splits that never move."""
    digest = hashlib.sha256(f"{salt}:{text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % folds


@dataclass
class LabelledSet:
    """SFT examples with a binary label (e.g. AlpaGasus ``in_alpagasus_claude_t45``)."""

    examples: list[Example]
    labels: np.ndarray  # float32 0/1


def labelled_examples(data: Sequence[str | Path], labels: str | Path, label_key: str) -> LabelledSet:
    """Examples of ``data`` that have a label row; ``label_key`` names the boolean column.

    Raises:
        ValueError: no example of ``data`` has a label, or the column is missing.
    """
    rows = read_labels(labels)
    examples, ys = [], []
    for ex in read_examples(data):
        row = rows.get(ex.id)
        if row is None or ex.kind != "sft":
            continue
        if label_key not in row:
            raise ValueError(f"label_key={label_key!r} is not a column of {labels}; columns: {sorted(row)}")
        examples.append(ex)
        ys.append(float(bool(row[label_key])))
    if not examples:
        raise ValueError(f"no example of {list(map(str, data))} has a row in labels={labels}")
    return LabelledSet(examples, np.asarray(ys, dtype=np.float32))


def source_of(ex_id: str) -> str:
    """The dataset name in an id such as ``hh_helpful_base_test-0004`` (the part before the last dash)."""
    return ex_id.rsplit("-", 1)[0] if "-" in ex_id else ex_id


def preference_pairs(data: Sequence[str | Path], labels: str | Path | None = None,
                     valid_only: bool = True) -> list[Example]:
    """Preference pairs of ``data``; with ``labels``, only rows whose ``valid_pair`` is true.

    Ties, no-majority votes, identical sides and prompt mismatches are structural or
    label problems, not preferences: a reward head must not learn from them.
    """
    rows = read_labels(labels) if labels is not None else {}
    out = []
    for ex in read_examples(data):
        if ex.kind != "preference":
            continue
        row = rows.get(ex.id)
        if valid_only and row is not None and not row.get("valid_pair", True):
            continue
        if valid_only and ex.response_text == ex.rejected_text:
            continue
        out.append(ex)
    return out


def _pair_key(prompt: str, response: str) -> str:
    h = hashlib.sha256(prompt.encode("utf-8", "surrogatepass") + b"\x00" + response.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


def cached_segments(encoder, prompts: Sequence[str], responses: Sequence[str], cache_dir: str | Path | None):
    """``encoder.encode_segments(prompts, responses)``, row by row from a cache under ``cache_dir``.

    The cache is a set of ``.npz`` shards per encoder version; each row is keyed by a
    hash of its (prompt, response), so any new combination of known texts is free and
    only unseen rows are encoded (and appended as a new shard).
    """
    from models.encoder import SegmentEmbeddings

    if cache_dir is None:
        return encoder.encode_segments(prompts, responses)
    version = hashlib.sha256(json.dumps(encoder.version(), sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"segments-{version}"
    keys = [_pair_key(p, r) for p, r in zip(prompts, responses)]
    where: dict[str, tuple[int, int]] = {}
    shards: list[dict[str, np.ndarray]] = []
    for path in sorted(folder.glob("shard-*.npz")):
        with np.load(path) as npz:
            shard = {k: npz[k] for k in npz.files}
        for row, key in enumerate(shard.pop("keys")):
            where[str(key)] = (len(shards), row)
        shards.append(shard)
    missing = sorted({i for i, k in enumerate(keys) if k not in where}, key=lambda i: keys[i])
    seen: set[str] = set()
    missing = [i for i in missing if not (keys[i] in seen or seen.add(keys[i]))]
    if missing:
        seg = encoder.encode_segments([prompts[i] for i in missing], [responses[i] for i in missing])
        arrays = seg.to_arrays()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"shard-{len(shards):04d}-{keys[missing[0]][:8]}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array([keys[i] for i in missing]), **arrays)
        tmp.replace(path)
        for row, i in enumerate(missing):
            where[keys[i]] = (len(shards), row)
        shards.append(arrays)
    fields = list(SegmentEmbeddings.__dataclass_fields__)
    picked = {f: np.stack([shards[where[k][0]][f][where[k][1]] for k in keys]) if keys else np.zeros((0,))
              for f in fields}
    return SegmentEmbeddings(**picked)


def sft_segments(encoder, examples: Sequence[Example], cache_dir: str | Path | None = None):
    """Segment embeddings of (prompt, response) of SFT examples."""
    return cached_segments(encoder, [e.prompt_text for e in examples], [e.response_text for e in examples], cache_dir)


def pair_segments(encoder, pairs: Sequence[Example], cache_dir: str | Path | None = None):
    """Segment embeddings of (prompt, chosen) and (prompt, rejected) of preference pairs."""
    prompts = [e.prompt_text for e in pairs]
    chosen = cached_segments(encoder, prompts, [e.response_text for e in pairs], cache_dir)
    rejected = cached_segments(encoder, prompts, [e.rejected_text for e in pairs], cache_dir)
    return chosen, rejected
