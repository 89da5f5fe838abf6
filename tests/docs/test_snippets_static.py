"""The blocks that are data, not programs: parsed by what reads them in Sieve, and the rules of the hunt.

* every fenced block names a language the tests handle (``text`` for diagrams and trees), and
  every allow-list entry still matches something (tests/docs/allowlist.py);
* ```json: parsed; an envelope's fields are fields real envelopes have (from the sandbox's
  `sieve curate` outputs), an override record passes the core's own parser;
* ```toml: parsed and loaded through ``streams.config.load_settings``, so a documented setting
  that does not exist fails;
* ```yaml: parsed;
* ```promql, and the queries of docs/metrics.md's table: every ``sieve_`` series is in the
  generated catalog, and ``promtool check rules`` parses each query.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from docs_allowlist import ALLOWED, allow_listed
from docs_sandbox import ROOT
from docs_snippets import LANGUAGES, Snippet, commands, pages, parse_page, shell_commands, snippets

pytestmark = pytest.mark.docs


def blocks(lang: str) -> list[Snippet]:
    return [s for s in snippets() if s.lang == lang]


def ids(items: list[Snippet]) -> list[str]:
    return [s.id for s in items]


def test_every_block_names_a_language_the_tests_handle():
    unknown = [f"{s.id} ({s.lang or 'no language'})" for s in snippets() if s.lang not in LANGUAGES]
    assert not unknown, ("fenced blocks whose language the docs tests do not handle; name one of "
                         f"{', '.join(LANGUAGES)} (text for diagrams and trees): {unknown}")


def test_every_allow_list_entry_still_matches_something():
    items = [*shell_commands(), *blocks("python")]
    for entry in ALLOWED:
        hits = [i for i in items if allow_listed(i) == entry.reason and
                entry.matches(i.snippet.page if hasattr(i, "snippet") else i.page,
                              " ".join(i.words) if hasattr(i, "snippet") else i.text)]
        assert hits, f"stale allow-list entry (nothing on {entry.page} matches {entry.pattern!r}): remove it"


def test_the_hunt_covers_every_page_and_the_pages_hold_runnable_code():
    """Guards the discovery itself: README and every docs page are read, and the blocks found include
    the ones this task was about (a regression here would make every other test vacuous)."""
    pages = {s.page for s in snippets()}
    assert "README.md" in pages and "docs/batches.md" in pages
    assert len(shell_commands()) >= 20 and len(blocks("python")) >= 3 and blocks("json") and blocks("toml")


def test_discovery_finds_indented_fences_and_refuses_an_unclosed_one():
    page = "intro\n\n* a list item:\n\n  ```bash\n  sieve curate a.jsonl \\\n      --out out/   # why\n  ```\n\n" \
           "````text\n```python\nnot code\n```\n````\n"
    found = parse_page(page, "x.md")
    assert [(s.line, s.lang) for s in found] == [(5, "bash"), (10, "text")]
    (cmd,) = commands(found[0])
    assert cmd.text == "sieve curate a.jsonl --out out/" and cmd.line == 6 and cmd.program == "sieve curate"
    with pytest.raises(ValueError, match="x.md:1: the code fence"):
        parse_page("```bash\nsieve run\n", "x.md")


def test_shell_commands_keep_their_exports_and_name_their_program():
    (block,) = parse_page("```bash\nexport A=1 B=2\nTOKEN=x:$(python -c 'print(1)') \\\n  .venv/bin/sieve review out/"
                          " --host 0.0.0.0\n.venv/bin/sieve --log-level DEBUG run  # more\n"
                          "python examples/trainer_consumer.py --help\n```\n", "x.md")
    review, run, trainer = commands(block)
    assert review.env == ("export A=1 B=2",) and review.program == "sieve review"
    assert run.program == "sieve run" and run.text == ".venv/bin/sieve --log-level DEBUG run"
    assert trainer.program == "python examples/trainer_consumer.py" and trainer.is_help


# ---------------------------------------------------------------------------------------------- json


def real_envelope_fields(sandbox) -> set[str]:
    fields: set[str] = set()
    for name in ("accepted.jsonl", "rejected.jsonl", "dead_letter.jsonl"):
        for line in (sandbox.root / "out" / name).read_text().splitlines():
            fields |= set(json.loads(line))
    return fields


DATA_BLOCKS = [s for s in snippets() if s.lang in ("json", "toml", "yaml")]


@pytest.mark.parametrize("snippet", DATA_BLOCKS, ids=ids(DATA_BLOCKS))
def test_data_block_is_what_sieve_reads_or_writes(sandbox, snippet, tmp_path):
    if snippet.lang == "json":
        check_json(sandbox, snippet)
    elif snippet.lang == "toml":
        check_toml(snippet, tmp_path)
    else:
        yaml.safe_load(snippet.text)


def check_json(sandbox, snippet: Snippet) -> None:
    try:
        obj = json.loads(snippet.text)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{snippet.id}: not JSON ({exc}); show a real record, not one with ... in it", pytrace=False)
    if isinstance(obj, dict) and obj.get("type") == "override":
        from quality.overrides import parse_override

        parse_override(obj)  # raises OverrideError naming the field
    elif isinstance(obj, dict) and "decision" in obj:
        unknown = set(obj) - real_envelope_fields(sandbox)
        assert not unknown, f"{snippet.id}: envelope fields no real envelope has: {sorted(unknown)}"
        assert obj["decision"] in ("accepted", "rejected", "dead_letter")
        from quality.reasons import Reason

        assert set(obj["reasons"]) <= {r.value for r in Reason}, obj["reasons"]


def check_toml(snippet: Snippet, tmp_path) -> None:
    """Parsed, then loaded as the settings file: an unknown key or a bad value raises, naming it."""
    from streams.config import load_settings

    tomllib.loads(snippet.text)
    path = tmp_path / "sieve.toml"
    path.write_text(snippet.text, encoding="utf-8")
    load_settings(path)


def test_a_documented_setting_that_does_not_exist_fails(tmp_path):
    with pytest.raises(ValueError, match="ivf_lists"):
        check_toml(Snippet("x.md", 1, "toml", "[pipeline.semantic_dedup]\nivf_lists = 4096\n"), tmp_path)


# ---------------------------------------------------------------------------------------------- promql


def catalog() -> set[str]:
    """The series of docs/metrics.md's generated table, with the names a histogram exports."""
    names = set()
    for name, kind in re.findall(r"^\| `(sieve_\w+)` \| (\w+) \|", (ROOT / "docs" / "metrics.md").read_text(), re.M):
        names |= {name} | ({f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else set())
    return names


def metrics_page_queries() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    table = text[text.index("## Useful queries"):]
    return [(what, q) for what, q in re.findall(r"^\| ([^|]+?) \| `(.+)` \|$", table, re.M)]


def promql_queries() -> list[tuple[str, str]]:
    return [*((s.id, s.text.strip()) for s in blocks("promql")),
            *((f"docs/metrics.md: {what}", q) for what, q in metrics_page_queries())]


def unknown_series(query: str, known: set[str]) -> set[str]:
    return {name for name in re.findall(r"\bsieve_\w+", query) if name not in known}


def promtool_check(queries: list[tuple[str, str]], tmp_path) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Prometheus server (Debian: apt-get install prometheus)",
                    pytrace=False)
    rules = [{"record": f"docs:query_{i}", "expr": q} for i, (_, q) in enumerate(queries)]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "docs", "rules": rules}]}))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.prometheus
def test_promql_in_the_docs_names_real_series_and_parses(tmp_path):
    queries = promql_queries()
    assert len(queries) >= 10, "docs/metrics.md's query table was not found"
    known = catalog()
    for where, query in queries:
        assert not unknown_series(query, known), f"{where}: series not in docs/metrics.md: " \
                                                 f"{sorted(unknown_series(query, known))}"
    proc = promtool_check(queries, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.prometheus
def test_the_promql_check_catches_a_wrong_name_and_a_syntax_error(tmp_path):
    known = catalog()
    assert unknown_series("sum(rate(sieve_examples_totl[5m]))", known) == {"sieve_examples_totl"}
    assert not unknown_series("histogram_quantile(0.5, sum by (le) (rate(sieve_score_bucket[5m])))", known)
    assert promtool_check([("bad", "sum(rate(sieve_examples_total[5m])")], tmp_path).returncode != 0


# ---------------------------------------------------------------------------------------------- links


def relative_links(page: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every Markdown link to a file of the repository (not http, not an anchor alone)."""
    out = []
    for n, line in enumerate(page.read_text(encoding="utf-8").split("\n"), start=1):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if not re.match(r"^(https?:|mailto:|#)", target):
                out.append((n, target.split("#")[0]))
    return out


@pytest.mark.parametrize("page", pages(), ids=[str(p.relative_to(ROOT)) for p in pages()])
def test_every_relative_link_of_a_page_leads_to_a_file(page):
    broken = [f"{page.relative_to(ROOT)}:{n}: {target}" for n, target in relative_links(page)
              if not (page.parent / target).exists()]
    assert not broken, f"links to nothing: {broken}"
