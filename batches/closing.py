"""Writing one closed batch: its shards, ``report.html`` and ``manifest.json`` (see ``docs/batches.md``).

:class:`batches.assembler.BatchAssembler` keeps the open batch and the state that makes a
close durable; this module turns the open batch into the files of ``<dir>/<batch id>/``,
written into a temporary directory the assembler then renames into place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from batches.manifest import (KINDS, MANIFEST_SCHEMA, SPLITS, batch_statistics, datasets_section, file_sha256,
                              fsync_file, kind_of, load_snippet, manifest_bytes, row_of, split_of, write_shards)
from batches.state import iso, write_atomic
from quality import __version__

if TYPE_CHECKING:
    from batches.assembler import BatchAssembler


def _locate(root: Path, uri_prefix: str | None, batch_id: str) -> tuple[Callable[[str], str], Callable[[str], str]]:
    local = lambda rel: str(root / batch_id / rel)  # noqa: E731
    if uri_prefix:
        return local, lambda rel: f"{uri_prefix}/{batch_id}/{rel}"
    return local, lambda rel: (root / batch_id / rel).as_uri()


def write_batch(asm: BatchAssembler, tmp: Path, batch_id: str, seq: int, trigger: str,
                now: float) -> dict[str, Any]:
    """Writes the open batch of ``asm`` into ``tmp``: shards, report and manifest; returns the manifest."""
    rows: dict[str, dict[str, list]] = {}
    for env in asm._open:
        split = split_of(env["id"], asm.validation_ratio, asm.split_salt)
        rows.setdefault(kind_of(env["example"]), {}).setdefault(split, []).append(row_of(env))
    files = write_shards(tmp, rows, shard_max_rows=asm.shard_max_rows, parquet=asm.parquet)
    local, uri = _locate(asm.root, asm.uri_prefix, batch_id)
    trainer_location = uri if asm.uri_prefix else local
    stats, series = batch_statistics(asm._open, asm._refusals)
    datasets = datasets_section(files, trainer_location)
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA, "batch_id": batch_id, "seq": seq, "trigger": trigger,
        "opened_at": iso(asm.opened_at), "closed_at": iso(now), "closed_at_unix": now,
        "age_at_close_s": round(asm.age_s(now), 3),
        "location": {"dir": str(asm.root / batch_id), "uri": uri("").rstrip("/") + "/",
                     "manifest": "manifest.json"},
        "counts": {"examples": len(asm._open),
                   "by_kind": {k: {s: len(rows.get(k, {}).get(s, [])) for s in SPLITS} for k in KINDS},
                   "by_split": {s: sum(len(v.get(s, [])) for v in rows.values()) for s in ("train", "validation")}},
        "split": {"method": "blake2b-64(salt:id) / 2**64 < validation_ratio",
                  "validation_ratio": asm.validation_ratio, "salt": asm.split_salt},
        "files": files, "datasets": datasets, "load": load_snippet(datasets),
        "stats": {"scores": stats["scores"], "score_counts": stats["score_counts"], "lengths": stats["lengths"],
                  "content_duplicates_in_batch": stats["content_duplicates_in_batch"],
                  "pii_redactions": stats["pii_redactions"],
                  "transcripts_converted": stats["transcripts_converted"]},
        "balance": stats["balance"], "refusals": stats["refusals"],
        "window": asm.window.to_dict(now),
        "versions": {"sieve": __version__, "pipeline": stats["pipeline_versions"]},
        "report": None,
    }
    fields = asm.overrides.manifest_fields(asm._open, asm.last_seq)
    manifest["counts"]["overridden"] = fields.pop("overridden")
    manifest.update(fields)  # "revoked" (ids trainers drop from earlier batches) and "overrides"
    if asm.report:
        from batches.report import write_report
        write_report(tmp / "report.html", manifest, series, asm.window.timeline_rows())
        fsync_file(tmp / "report.html")
        sha, size = file_sha256(tmp / "report.html")
        files.append({"path": "report.html", "format": "html", "kind": "report", "split": None, "rows": None,
                      "bytes": size, "sha256": sha})
        manifest["report"] = {"path": "report.html", "uri": uri("report.html"), "local_path": local("report.html")}
    for f in files:
        f["local_path"], f["uri"] = local(f["path"]), uri(f["path"])
    write_atomic(tmp / "manifest.json", manifest_bytes(manifest))
    return manifest
