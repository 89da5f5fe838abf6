"""Real outputs for the documentation's snippets to run against.

The ``sandbox`` is laid out like a user's checkout: its working directory holds links to the
repository's files (``examples/``, ``docker/``, ``.venv`` -> this interpreter's environment...)
and the files the pages name (``data.jsonl``, ``more.jsonl.gz``, ``../shared/data/benchmarks/``),
and real `sieve curate --batches` runs fill it before any snippet runs:

* ``out/`` and ``sieve-batches/000001-*``: tests/data/mit_sample.jsonl with the model stages on,
  a batch of SFT examples and preference pairs, train and validation rows;
* an operator's force-reject of one id of that batch (``sieve review out/ --force-reject``), then
  ``sieve-batches/000002-*``: the pairs of more.jsonl.gz, a batch of pairs only whose manifest
  revokes that id;
* ``variants/no-validation/``: the same input with ``batches.validation_ratio = 0``, a batch
  without validation rows;
* ``variants/sft-only/``: the SFT rows alone, a batch without pairs.

Each batch is checked to have the shape it stands for, so a change upstream cannot quietly
turn the four into one. The snippets' placeholder batch, ``sieve-batches/000001-ab12cd34``,
is replaced with each of them in turn.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
#: The batch directory the pages name; each real batch takes its place in turn.
PLACEHOLDER_BATCH = "sieve-batches/000001-ab12cd34"
#: Seconds one `sieve curate` of the fixture may take (the model loads once, on a busy 2-core machine).
CURATE_TIMEOUT = 600.0
#: The id an operator force-rejects after its batch closed (an accepted SFT example of mit_sample).
REVOKED_ID = "gpteacher_codegen-3681"


@dataclass
class Sandbox:
    """Where the snippets run: ``root`` is the working directory, ``env`` their environment."""

    root: Path
    env: dict[str, str]
    batches: dict[str, Path] = field(default_factory=dict)  # shape -> batch directory

    def run(self, args: list[str], *, env: dict[str, str] | None = None, timeout: float = CURATE_TIMEOUT,
            ) -> subprocess.CompletedProcess:
        """``args`` run in the sandbox; fails the test with the output unless it exits 0."""
        proc = subprocess.run(args, cwd=self.root, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                     f"{proc.stderr[-3000:]}"
        return proc

    def sieve(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", "streams.cli", *args], env=env)


def snippet_env(root: Path, cache: Path) -> dict[str, str]:
    """The environment of every snippet: this checkout's code and interpreter first on the paths,
    no SIEVE_* of the caller, the datasets cache in the sandbox, no network for models, the
    metrics on a free port, and the model stages off (tests/models covers them; the fixture's
    first batch is made with them on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")}
    venv_bin = str(Path(sys.executable).parent)
    env.update({
        "PATH": os.pathsep.join([venv_bin, env.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_DATASETS_CACHE": str(cache / "datasets"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1",
        "SIEVE_METRICS__PORT": "0",
        "SIEVE_PIPELINE__SCORING__ENABLED": "false", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false",
    })
    return env


def _link_checkout(root: Path) -> None:
    """Every top-level entry of the repository, linked, as a user's checkout has them; ``.venv`` is
    the environment of this interpreter (the snippets say ``.venv/bin/sieve``)."""
    skip = {".git", ".venv", "out", "batches", "sieve-batches", "data.jsonl", "more.jsonl.gz", "scores.jsonl"}
    for entry in ROOT.iterdir():
        if entry.name not in skip and not entry.name.startswith((".pytest", ".ruff", ".hypothesis")):
            (root / entry.name).symlink_to(entry)
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)


def _inputs(root: Path) -> None:
    """``data.jsonl`` (mit_sample), ``more.jsonl.gz`` (hh pairs), ``data-sft.jsonl`` (its SFT rows) and a
    benchmark in ``../shared/data/benchmarks/`` holding one prompt of data.jsonl, so decontamination bites."""
    rows = (DATA / "mit_sample.jsonl").read_text(encoding="utf-8").splitlines()
    (root / "data.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "data-sft.jsonl").write_text("\n".join(r for r in rows if '"chosen"' not in r) + "\n", encoding="utf-8")
    with gzip.open(root / "more.jsonl.gz", "wb") as fh:
        fh.write((DATA / "hh_pair_structure.jsonl").read_bytes())
    gsm8k = next(json.loads(r) for r in rows if "grade-school-math" in r)
    bench = root.parent / "shared" / "data" / "benchmarks"
    bench.mkdir(parents=True)
    (bench / "docs_bench.jsonl").write_text(json.dumps({"id": "docs_bench/1", "benchmark": "docs_bench",
                                                        "text": gsm8k["instruction"]}) + "\n", encoding="utf-8")


def _manifest(batch_dir: Path) -> dict:
    return json.loads((batch_dir / "manifest.json").read_text())


def _shape(manifest: dict) -> dict[str, set[str]]:
    return {kind: set(formats["json"]) for kind, formats in manifest["datasets"].items()}


def _only_batch(batches_dir: Path, seq: int) -> Path:
    (found,) = [p for p in batches_dir.iterdir() if p.name.startswith(f"{seq:06d}-")]
    return found


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory) -> Sandbox:
    base = tmp_path_factory.mktemp("docs")
    root = base / "work" / "sieve"
    root.mkdir(parents=True)
    _link_checkout(root)
    _inputs(root)
    box = Sandbox(root, snippet_env(root, base / "cache"))
    models_on = {"SIEVE_PIPELINE__SCORING__ENABLED": "true", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "true"}

    box.sieve("curate", "data.jsonl", "--out", "out/", "--batches", "sieve-batches/", "--no-progress", env=models_on)
    mixed = _only_batch(root / "sieve-batches", 1)
    assert _shape(_manifest(mixed)) == {"sft": {"train", "validation"}, "preference": {"train", "validation"}}, \
        f"mit_sample no longer makes a batch of both kinds with both splits: {_shape(_manifest(mixed))}"
    assert REVOKED_ID in {json.loads(r)["id"] for r in (mixed / "sft" / "train-00000-of-00001.jsonl").open()}

    box.sieve("review", "out/", "--force-reject", REVOKED_ID, "--note", "docs test: a leak found after the close",
              "--who", "docs-test")
    box.sieve("curate", "more.jsonl.gz", "--out", "out-pairs/", "--overrides", "out/overrides.jsonl",
              "--batches", "sieve-batches/", "--no-progress")
    revoking = _only_batch(root / "sieve-batches", 2)
    m = _manifest(revoking)
    assert set(_shape(m)) == {"preference"}, f"more.jsonl.gz no longer makes a batch of pairs only: {_shape(m)}"
    assert [(r["id"], r["batch_id"]) for r in m["revoked"]] == [(REVOKED_ID, mixed.name)], m["revoked"]

    no_val = root / "variants" / "no-validation"
    box.sieve("curate", "data.jsonl", "--out", str(no_val / "out"), "--batches", str(no_val / "batches"),
              "--no-progress", env={"SIEVE_BATCHES__VALIDATION_RATIO": "0"})
    no_val_batch = _only_batch(no_val / "batches", 1)
    assert _shape(_manifest(no_val_batch)) == {"sft": {"train"}, "preference": {"train"}}

    sft_only = root / "variants" / "sft-only"
    box.sieve("curate", "data-sft.jsonl", "--out", str(sft_only / "out"), "--batches", str(sft_only / "batches"),
              "--no-progress")
    sft_only_batch = _only_batch(sft_only / "batches", 1)
    assert _shape(_manifest(sft_only_batch)) == {"sft": {"train", "validation"}}

    shutil.copytree(root / "sieve-batches", root / "batches", symlinks=True)  # the README's `--batches batches/`
    box.batches = {"mixed": mixed, "pairs-only-revoking": revoking, "no-validation": no_val_batch,
                   "sft-only": sft_only_batch}
    return box


#: The shapes a snippet naming the placeholder batch is run on, in order.
BATCH_SHAPES = ("mixed", "pairs-only-revoking", "no-validation", "sft-only")

