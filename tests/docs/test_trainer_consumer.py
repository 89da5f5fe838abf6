"""examples/trainer_consumer.py drops what operators revoked, on the sandbox's real batches.

The sandbox's second batch revokes an id of the first (an operator's force-reject after the
close, through `sieve review` and `sieve curate --overrides`). The topic path is run by
tests/docs/test_stream_snippets.py (the README's trainer against a real batcher).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
from docs_sandbox import REVOKED_ID, ROOT

pytestmark = pytest.mark.docs


def _trainer():
    spec = importlib.util.spec_from_file_location("trainer_consumer", ROOT / "examples" / "trainer_consumer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


trainer = _trainer()


def manifest_of(batch) -> dict:
    return json.loads((batch / "manifest.json").read_text())


def ids_of(loaded: dict) -> list[str]:
    return [i for ds in loaded.values() for split in ds.values() for i in split["id"]]


def test_a_batch_loaded_from_its_manifest_loses_the_ids_a_later_manifest_revoked(sandbox, tmp_path):
    mixed = sandbox.batches["mixed"]
    manifest = manifest_of(mixed)
    revocations = trainer.Revocations()
    for later in trainer.later_manifests(mixed / "manifest.json", manifest):
        revocations.note(later)
    loaded = trainer.handle(manifest, cache_dir=str(tmp_path / "hf"), revocations=revocations)
    ids = ids_of(loaded)
    assert REVOKED_ID not in ids
    assert len(ids) == len(set(ids)) == manifest["counts"]["examples"] - 1


def test_a_follower_drops_a_revocation_from_a_batch_it_loaded_before(sandbox, tmp_path):
    first, second = manifest_of(sandbox.batches["mixed"]), manifest_of(sandbox.batches["pairs-only-revoking"])
    revocations, loaded_batches = trainer.Revocations(), {}
    trainer.handle(first, cache_dir=str(tmp_path / "hf"), revocations=revocations, loaded_batches=loaded_batches)
    assert REVOKED_ID in ids_of(loaded_batches[first["batch_id"]])  # nothing revoked it yet
    trainer.handle(second, cache_dir=str(tmp_path / "hf"), revocations=revocations, loaded_batches=loaded_batches)
    assert REVOKED_ID not in ids_of(loaded_batches[first["batch_id"]])
    assert len(ids_of(loaded_batches[first["batch_id"]])) == first["counts"]["examples"] - 1
    assert len(ids_of(loaded_batches[second["batch_id"]])) == second["counts"]["examples"]


def test_a_revocation_applies_to_the_batch_it_names_only(sandbox, tmp_path):
    """Revoked by (id, batch): the same id in another batch (two examples under one id) stays."""
    first = manifest_of(sandbox.batches["mixed"])
    elsewhere = dict(manifest_of(sandbox.batches["pairs-only-revoking"]))
    elsewhere["revoked"] = [{**r, "batch_id": "000099-00000000"} for r in elsewhere["revoked"]]
    revocations = trainer.Revocations()
    revocations.note(elsewhere)
    loaded = trainer.handle(first, cache_dir=str(tmp_path / "hf"), revocations=revocations)
    assert REVOKED_ID in ids_of(loaded) and len(ids_of(loaded)) == first["counts"]["examples"]


def test_an_unreadable_later_manifest_stops_the_load_rather_than_hide_a_revocation(sandbox, tmp_path):
    batches = tmp_path / "batches"
    shutil.copytree(sandbox.batches["mixed"].parent, batches, symlinks=True)
    second = batches / sandbox.batches["pairs-only-revoking"].name / "manifest.json"
    second.write_text(second.read_text()[:200])  # torn
    proc = subprocess.run([sys.executable, "examples/trainer_consumer.py", "--manifest",
                           str(batches / sandbox.batches["mixed"].name / "manifest.json"), "--root", str(batches),
                           "--cache-dir", str(tmp_path / "hf")], cwd=ROOT, env=sandbox.env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and f"cannot read {second}" in proc.stderr, proc.stderr[-2000:]
    assert "files verified" not in proc.stdout


def test_the_help_says_revoked_ids_are_dropped():
    proc = subprocess.run([sys.executable, "examples/trainer_consumer.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "revoked" in proc.stdout.lower() and "dropped" in proc.stdout, proc.stdout
