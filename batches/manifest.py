"""Shard files and the manifest of one closed fine-tuning batch.

:func:`write_batch` turns accepted envelopes into TRL-ready rows, writes them as
JSONL shards (and Parquet ones when pyarrow is importable), one dataset per kind
of example::

    sft/train-00000-of-00001.jsonl          {"id", "messages", "source", "overridden"}
    sft/validation-00000-of-00001.jsonl
    preference/train-00000-of-00001.jsonl   {"id", "prompt", "chosen", "rejected", "source", "overridden"}

and returns the manifest (see ``docs/batches.md``): counts, the sha256, size and
row count of every file, score and length statistics, balance by source and
category, the refusal share and the versions that decided the examples. The
split is stable per example id: an id always lands in the same split, whatever
batch it is in and whatever else is in the batch.
"""

from __future__ import annotations

import hashlib
import numbers
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import orjson

from quality.filemode import distribution
from quality.filters.refusal import RefusalFilter
from quality.records import Example, Message
from quality.registry import counted_scores

MANIFEST_SCHEMA = "sieve.batch.manifest/1"
KINDS = ("sft", "preference")
SPLITS = ("train", "validation")
DUPLICATE_REASONS = ("duplicate_exact", "duplicate_near", "duplicate_semantic")
_COLUMNS = {"sft": ("id", "messages", "source", "overridden"),
            "preference": ("id", "prompt", "chosen", "rejected", "source", "overridden")}


def split_of(example_id: str, validation_ratio: float, salt: str = "sieve-split-v1") -> str:
    """``"validation"`` or ``"train"``, from a keyed hash of the id alone.

    blake2b of ``salt:id`` read as a number in [0, 1) below ``validation_ratio``
    means validation, so the split of an id never depends on what else is in a batch.
    """
    digest = hashlib.blake2b(f"{salt}:{example_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "big") / 2.0**64 < validation_ratio else "train"


def kind_of(example: Mapping[str, Any]) -> str | None:
    """``"sft"`` or ``"preference"`` for a canonical example, None if it is neither."""
    if isinstance(example.get("messages"), list) and example["messages"]:
        return "sft"
    if all(isinstance(example.get(k), list) for k in ("prompt", "chosen", "rejected")):
        return "preference"
    return None


def row_of(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The shard row of an accepted envelope: TRL's columns plus ``id``, ``source`` (``""`` when it had none) and
    ``overridden`` (whether an operator force-accepted it; who and why: the manifest's ``overrides.accepted``).

    Every row has the same columns, none of them null: ``datasets`` takes a JSON dataset's types from the first
    rows of its first file and casts every other file, validation included, to them, so a column absent there
    (an override further on) or null all through them (no source) fails the whole load.
    """
    ex = envelope["example"]
    if kind_of(ex) == "sft":
        row = {"id": envelope["id"], "messages": ex["messages"]}
    else:
        row = {"id": envelope["id"], "prompt": ex["prompt"], "chosen": ex["chosen"], "rejected": ex["rejected"]}
    return {**row, "source": envelope.get("source") or "", "overridden": bool(envelope.get("overridden"))}


def _texts(messages: Iterable[Mapping[str, Any]], *, skip_system: bool = False) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages if not (skip_system and m.get("role") == "system"))


def lengths_of(example: Mapping[str, Any]) -> dict[str, int]:
    """Characters of the prompt, the trained-on response and the whole example; number of turns."""
    if kind_of(example) == "sft":
        msgs = example["messages"]
        prompt, response, rest = _texts(msgs[:-1], skip_system=True), _texts(msgs[-1:]), ""
        turns = len(msgs)
    else:
        prompt, response, rest = _texts(example["prompt"], skip_system=True), _texts(example["chosen"]), \
            _texts(example["rejected"])
        turns = len(example["prompt"]) + 1
    return {"prompt_chars": len(prompt), "response_chars": len(response),
            "total_chars": len(prompt) + len(response) + len(rest), "turns": turns}


def _messages(items: Sequence[Mapping[str, Any]]) -> tuple[Message, ...]:
    return tuple(Message(str(m.get("role", "")), str(m.get("content", ""))) for m in items)


class RefusalCounter:
    """Says whether an accepted response looks like a refusal, with :class:`RefusalFilter`'s patterns.

    SFT examples are judged on their last assistant turn, pairs on their chosen side.
    """

    def __init__(self) -> None:
        self._filter = RefusalFilter(apply_to_pairs=True)

    def is_refusal(self, example_id: str, example: Mapping[str, Any]) -> bool:
        if kind_of(example) == "sft":
            ex = Example(example_id, "sft", "openai", _messages(example["messages"]))
        else:
            ex = Example(example_id, "preference", "preference", _messages(example["prompt"]),
                         _messages(example["chosen"]), _messages(example["rejected"]))
        return not self._filter.check(ex).keep

    def version(self) -> Mapping[str, Any]:
        return self._filter.version()


class _HashingWriter:
    """A file written once, hashed and counted on the way, fsynced on close."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fh, self.sha, self.bytes = path, open(path, "wb"), hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.sha.update(data)
        self.bytes += len(data)

    def close(self) -> tuple[str, int]:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return self.sha.hexdigest(), self.bytes


def file_sha256(path: Path) -> tuple[str, int]:
    """sha256 hex digest and size in bytes of a file."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _parquet_writer():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None

    def write(path: Path, rows: list[dict[str, Any]], kind: str) -> None:
        table = pa.Table.from_pylist([{c: r.get(c) for c in _COLUMNS[kind]} for r in rows])
        pq.write_table(table, path)
        fsync_file(path)

    return write


def _shards(rows: list[dict[str, Any]], max_rows: int) -> list[list[dict[str, Any]]]:
    return [rows[i:i + max_rows] for i in range(0, len(rows), max_rows)] or []


def write_shards(batch_dir: Path, rows_by_kind: Mapping[str, Mapping[str, list[dict[str, Any]]]], *,
                 shard_max_rows: int, parquet: bool) -> list[dict[str, Any]]:
    """Write every non-empty split of every kind as JSONL (and Parquet) shards; describe each file.

    Empty splits get no file, so a trainer's ``data_files`` never names an empty shard.
    """
    pq_write = _parquet_writer() if parquet else None
    files: list[dict[str, Any]] = []
    for kind in KINDS:
        for split in SPLITS:
            shards = _shards(rows_by_kind.get(kind, {}).get(split, []), shard_max_rows)
            for i, shard in enumerate(shards):
                stem = f"{kind}/{split}-{i:05d}-of-{len(shards):05d}"
                writer = _HashingWriter(batch_dir / f"{stem}.jsonl")
                for row in shard:
                    writer.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
                sha, size = writer.close()
                files.append({"path": f"{stem}.jsonl", "format": "json", "kind": kind, "split": split,
                              "rows": len(shard), "bytes": size, "sha256": sha})
                if pq_write is not None:
                    pq_write(batch_dir / f"{stem}.parquet", shard, kind)
                    sha, size = file_sha256(batch_dir / f"{stem}.parquet")
                    files.append({"path": f"{stem}.parquet", "format": "parquet", "kind": kind, "split": split,
                                  "rows": len(shard), "bytes": size, "sha256": sha})
    return files


def _shares(counter: Counter, total: int) -> dict[str, dict[str, float]]:
    return {k: {"count": n, "share": round(n / total, 6) if total else 0.0}
            for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))}


def _versions(envelopes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    seen: Counter = Counter()
    for env in envelopes:
        seen[orjson.dumps(env.get("versions") or {}, option=orjson.OPT_SORT_KEYS)] += 1
    return [{"versions": orjson.loads(k), "examples": n} for k, n in seen.most_common()]


def batch_statistics(envelopes: Sequence[Mapping[str, Any]], refusals: RefusalCounter) -> tuple[dict, dict]:
    """The manifest's statistics of the accepted examples, and the raw series the report plots.

    Returns:
        ``(stats, series)``: ``stats`` holds distributions, balance, the refusal share, the
        PII redactions (examples with any, findings by kind: counts, never a distribution)
        and the examples whose transcript-style prompt was split into turns, by convention;
        ``series`` holds every score and length value, by name.
    """
    scores: dict[str, list[float]] = {}
    lengths: dict[str, list[int]] = {}
    sources, categories, kinds = Counter(), Counter(), Counter()
    refused = 0
    content = Counter()
    pii, pii_examples, converted = Counter(), 0, Counter()
    for env in envelopes:
        ex = env["example"]
        kinds[kind_of(ex)] += 1
        redacted = 0
        for name, value in (env.get("scores") or {}).items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy scalars too
                scores.setdefault(name, []).append(float(value))
                if name.startswith("pii_"):  # also summed by kind, with the examples that had any
                    pii[name[4:]] += int(value)
                    redacted += int(value)
        pii_examples += redacted > 0
        for convention in set((env.get("converted") or {}).values()):
            converted[str(convention)] += 1
        for name, value in lengths_of(ex).items():
            lengths.setdefault(name, []).append(value)
        sources[env.get("source") or "unknown"] += 1
        category = (env.get("metadata") or {}).get("category")
        categories[str(category) if category not in (None, "") else "unknown"] += 1
        refused += refusals.is_refusal(env["id"], ex)
        content[hashlib.blake2b(orjson.dumps(ex, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()] += 1
    n = len(envelopes)
    counted = counted_scores()
    stats = {
        "scores": {k: distribution(v) for k, v in sorted(scores.items()) if k not in counted},
        "score_counts": {k: {"examples": sum(1 for x in v if x > 0), "total": round(sum(v), 6)}
                         for k, v in sorted(scores.items()) if k in counted},
        "lengths": {k: distribution(v) for k, v in lengths.items()},
        "balance": {"kind": _shares(kinds, n), "source": _shares(sources, n), "category": _shares(categories, n)},
        "refusals": {"count": refused, "share": round(refused / n, 6) if n else 0.0,
                     "judged_on": "last assistant turn (sft), chosen side (preference)",
                     "filter": dict(refusals.version())},
        "content_duplicates_in_batch": sum(c - 1 for c in content.values()),
        "pii_redactions": {"examples": pii_examples, "by_kind": dict(sorted(pii.items()))},
        "transcripts_converted": dict(sorted(converted.items())),
        "pipeline_versions": _versions(envelopes),
    }
    return stats, {"scores": {k: v for k, v in scores.items() if k not in counted}, "lengths": lengths}


def datasets_section(files: Sequence[Mapping[str, Any]], locate) -> dict[str, Any]:
    """Per kind and format, the ``data_files`` mapping a trainer passes to ``datasets.load_dataset``.

    Args:
        files: the file entries of the manifest.
        locate: maps a path relative to the batch directory to what a trainer opens
            (an absolute path or a URI).
    """
    out: dict[str, Any] = {}
    for f in files:
        if f.get("kind") not in KINDS:
            continue
        fmt = out.setdefault(f["kind"], {}).setdefault(f["format"], {})
        fmt.setdefault(f["split"], []).append(locate(f["path"]))
    return out


def load_snippet(datasets: Mapping[str, Any]) -> dict[str, str]:
    """Ready-to-paste Python that loads each kind of the batch with ``datasets``."""
    out = {}
    for kind, formats in datasets.items():
        data_files = formats["json"]
        out[kind] = ("from datasets import load_dataset\n"
                     f"{kind} = load_dataset(\"json\", data_files={data_files!r})")
    return out


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def verify_files(manifest: Mapping[str, Any], root: Path | None = None) -> list[str]:
    """Problems found checking every file of a manifest against its sha256 and size; empty if none.

    Args:
        manifest: a batch manifest.
        root: the batch directory; default: the absolute ``local_path`` of each file.
    """
    problems = []
    for f in manifest["files"]:
        path = Path(root, f["path"]) if root is not None else Path(f["local_path"])
        if not path.is_file():
            problems.append(f"{f['path']}: missing at {path}")
            continue
        sha, size = file_sha256(path)
        if sha != f["sha256"] or size != f["bytes"]:
            problems.append(f"{f['path']}: sha256 {sha} ({size} bytes), manifest says {f['sha256']} "
                            f"({f['bytes']} bytes)")
    return problems
