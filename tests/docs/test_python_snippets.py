"""Every ```python block of README.md and docs/ runs, against real outputs, with this interpreter.

The Python blocks of one page run in order in one interpreter, as a reader pastes them (a later
block may use what an earlier one defined). The script is the page with everything but those
blocks blanked, so a traceback's line number is the page's. A page whose blocks name the
placeholder batch runs once per batch shape of the sandbox (tests/docs/docs_sandbox.py): with and
without pairs, with and without validation rows, with a revocation (so the TRL block of
docs/batches.md trains and evaluates on each). A block that adds a new
file to the tree (first line ``# path/to/file.py  (new file ...``) is checked by its own test
here, which applies it to a copy of the tree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docs_allowlist import allow_listed
from docs_sandbox import BATCH_SHAPES, PLACEHOLDER_BATCH, ROOT, Sandbox
from docs_snippets import Snippet, snippets

pytestmark = pytest.mark.docs

#: Seconds a page's Python may take (imports of datasets and torch, on a busy 2-core machine).
PAGE_TIMEOUT = 300.0
_NEW_FILE = re.compile(r"^# (?P<path>[\w/]+\.py)\s+\(new file")


def new_file(snippet: Snippet) -> str | None:
    """The path a block adds to the tree, when it is a new file rather than code to run."""
    m = _NEW_FILE.match(snippet.text)
    return m["path"] if m else None


def python_pages() -> dict[str, list[Snippet]]:
    """Page -> its Python blocks that run (not allow-listed, not new files)."""
    out: dict[str, list[Snippet]] = {}
    for s in snippets():
        if s.lang == "python" and not allow_listed(s) and not new_file(s):
            out.setdefault(s.page, []).append(s)
    return out


def page_runs() -> list[tuple[str, str | None]]:
    runs = []
    for page, blocks in python_pages().items():
        named = any(PLACEHOLDER_BATCH in b.text for b in blocks)
        runs += [(page, shape) for shape in BATCH_SHAPES] if named else [(page, None)]
    return runs


def page_script(page: str, blocks: list[Snippet]) -> str:
    """The page with only its Python blocks left, each at its own lines."""
    lines = [""] * (len((ROOT / page).read_text(encoding="utf-8").split("\n")) + 1)
    for b in blocks:
        for k, text in enumerate(b.text.rstrip("\n").split("\n")):
            lines[b.line + 1 + k] = text  # the opening fence is on page line b.line; the code starts below
    return "\n".join(lines[1:]) + "\n"


def run_python(sandbox: Sandbox, name: str, code: str, *, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    script = sandbox.root.parent / "scripts" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(code, encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], cwd=cwd or sandbox.root, env={**sandbox.env, **(env or {})},
                          capture_output=True, text=True, timeout=PAGE_TIMEOUT)


@pytest.mark.parametrize(("page", "shape"), page_runs(), ids=[f"{p}-{s}" if s else p for p, s in page_runs()])
def test_python_blocks_of_a_page_run(sandbox, page, shape):
    code = page_script(page, python_pages()[page])
    if shape:
        code = code.replace(PLACEHOLDER_BATCH, str(sandbox.batches[shape].relative_to(sandbox.root)))
    proc = run_python(sandbox, f"{page.replace('/', '_')}.{shape or 'page'}.py", code)
    assert proc.returncode == 0, (f"a Python block of {page} failed (line numbers are the page's"
                                  f"{', batch ' + shape if shape else ''}):\n{proc.stderr[-4000:]}")
    if page == "docs/batches.md":  # TRL trained on each kind with train rows, evaluated where it has validation
        manifest = json.loads((sandbox.batches[shape] / "manifest.json").read_text())
        for kind, splits in manifest["counts"]["by_kind"].items():
            for split, what in (("train", "train loss"), ("validation", "eval loss")):
                assert (f"{kind} {what} " in proc.stdout) == bool(splits[split]), (kind, what, proc.stdout[-3000:])


def test_the_batches_page_loads_each_shape_as_its_manifest_says(sandbox):
    """The loading block is not only silent: what it printed matches each manifest's counts."""
    (block,) = [b for b in python_pages()["docs/batches.md"] if 'manifest["revoked"]' in b.text]
    for shape in BATCH_SHAPES:
        batch = sandbox.batches[shape]
        code = block.text.replace(PLACEHOLDER_BATCH, str(batch.relative_to(sandbox.root)))
        proc = run_python(sandbox, f"batches_load.{shape}.py", code)
        assert proc.returncode == 0, proc.stderr[-3000:]
        manifest = json.loads((batch / "manifest.json").read_text())
        expected = {kind: {split: n for split, n in splits.items() if n}
                    for kind, splits in manifest["counts"]["by_kind"].items() if any(splits.values())}
        assert repr(expected) in proc.stdout, (shape, proc.stdout)
        for entry in manifest["revoked"]:
            assert f"drop ['{entry['id']}'] from batch {entry['batch_id']}" in proc.stdout, proc.stdout


@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_the_load_snippets_a_manifest_carries_run(sandbox, shape):
    """``manifest["load"]``: ready-to-paste Python in every manifest, so it is documentation too."""
    manifest = json.loads((sandbox.batches[shape] / "manifest.json").read_text())
    assert set(manifest["load"]) == set(manifest["datasets"])
    for kind, code in manifest["load"].items():
        counts = {split: n for split, n in manifest["counts"]["by_kind"][kind].items() if n}
        check = f"\nassert {{s: d.num_rows for s, d in {kind}.items()}} == {counts!r}, {kind}\n"
        proc = run_python(sandbox, f"manifest_load.{shape}.{kind}.py", code + check)
        assert proc.returncode == 0, f"{shape} {kind}:\n{code}\n{proc.stderr[-3000:]}"


def test_every_new_file_block_has_a_test_that_applies_it():
    handled = {"quality/filters/shout.py"}
    found = {new_file(s) for s in snippets() if s.lang == "python" and new_file(s)}
    assert found <= handled, f"new-file blocks without a test that applies them: {sorted(found - handled)}"
    assert handled <= found, f"tests for new-file blocks the docs no longer have: {sorted(handled - found)}"


def test_the_architecture_pages_filter_is_two_files(sandbox, tmp_path):
    """docs/architecture.md: its ``shout`` block plus the reason line, written into a copy of the tree,
    give a stage that the registry finds, that loads its setting from the file and the environment,
    runs between ``length`` and ``encoding``, and rejects shouting."""
    (block,) = [s for s in snippets() if s.lang == "python" and new_file(s) == "quality/filters/shout.py"]
    prose = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    reason_line = re.search(r"the code `(SHOUTING = \"shouting\")`", prose)
    assert reason_line, "docs/architecture.md no longer names the reason code the shout block needs"
    env_var = re.search(r"loaded from\s+`(SIEVE_[A-Z_]+)`", prose)
    assert env_var, "docs/architecture.md no longer names the variable that sets the shout filter's setting"

    tree = tmp_path / "tree"
    for package in ("quality", "models", "batches", "streams"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / block.text.split()[1]).write_text(block.text, encoding="utf-8")
    reasons = tree / "quality" / "reasons.py"
    text = reasons.read_text(encoding="utf-8")
    assert "class Reason(StrEnum):\n" in text
    text = text.replace("class Reason(StrEnum):\n", f"class Reason(StrEnum):\n    {reason_line[1]}\n", 1)
    text = text.replace("DESCRIPTIONS: dict[Reason, str] = {",
                        "DESCRIPTIONS: dict[Reason, str] = {\n    Reason.SHOUTING: \"Mostly capitals.\",", 1)
    reasons.write_text(text, encoding="utf-8")
    (tmp_path / "sieve.toml").write_text("[pipeline.shout]\nmax_caps_share = 0.7\n", encoding="utf-8")
    check = f"""
import os
from quality.records import RawRecord
from streams.assemble import build_pipeline
from streams.config import load_settings

settings = load_settings("{tmp_path / 'sieve.toml'}")
assert settings.pipeline.shout.max_caps_share == 0.7, settings.pipeline.shout
os.environ[{env_var[1]!r}] = "0.6"
settings = load_settings("{tmp_path / 'sieve.toml'}")
assert settings.pipeline.shout.max_caps_share == 0.6, "{env_var[1]} did not set pipeline.shout.max_caps_share"
pipeline = build_pipeline(settings.pipeline)
names = [s.name for s in pipeline.stages]
assert names[names.index("length") + 1] == "shout" and names[names.index("shout") + 1] == "encoding", names
shout, calm = pipeline.process([
    RawRecord(b'{{"instruction": "Say it", "output": "I AM SHOUTING NOW"}}', {{"file": "x", "line": 1}}),
    RawRecord(b'{{"instruction": "Say it", "output": "I am speaking calmly now."}}', {{"file": "x", "line": 2}})])
assert shout.reasons == ["shouting"], shout.reasons
assert calm.decision == "accepted", calm.reasons
print("shout ok")
"""
    env = {**sandbox.env, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=PAGE_TIMEOUT)
    assert proc.returncode == 0 and "shout ok" in proc.stdout, proc.stderr[-4000:]
