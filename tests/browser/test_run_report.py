"""OUT/report.html of a real `sieve curate` run, opened in a real headless chromium: the plots are
images the browser decoded, the tables hold what summary.json says, names are whole and escaped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
#: Seconds one `sieve curate` subprocess may take (no model stages).
CURATE_TIMEOUT = 300
#: Milliseconds a page may take in the browser.
PAGE_TIMEOUT_MS = 30_000
CHEAP = {"SIEVE_PIPELINE__SCORING__ENABLED": "false", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false"}
SOURCES = ("lab/eval-set-with-a-long-name:split/part-0001 <b>$x$</b>",
           "lab/eval-set-with-a-long-name:split/part-0002 <b>$x$</b>")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The MIT slice plus six of its gsm8k questions under two look-alike sources (with markup and a
    matplotlib math sign in their names), all in the benchmark file, and a row with e-mail addresses."""
    work = tmp_path_factory.mktemp("run-report")
    rows = [json.loads(line) for line in (DATA / "mit_sample.jsonl").read_text().splitlines()]
    gsm = [r for r in rows if r["id"].startswith("gsm8k")][:6]
    (work / "bench.jsonl").write_text("".join(json.dumps({"id": f"b{i}", "text": r["instruction"]}) + "\n"
                                              for i, r in enumerate(gsm)))
    extra = [{"id": f"e{i}", "source": SOURCES[i % 2], "instruction": r["instruction"], "output": r["output"] + "."}
             for i, r in enumerate(gsm)]
    extra.append({"id": "pii", "source": SOURCES[0], "instruction": "Whom do I e-mail about an invoice?",
                  "output": "Mail jane.roe@gmail.com, or accounts.team@gmail.com for a copy of the invoice."})
    (work / "extra.jsonl").write_text("".join(json.dumps(r) + "\n" for r in extra))
    cmd = [sys.executable, "-m", "streams.cli", "curate", str(DATA / "mit_sample.jsonl"), str(work / "extra.jsonl"),
           "--out", str(work / "out"), "--benchmarks", str(work / "bench.jsonl"), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **CHEAP},
                          timeout=CURATE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return work / "out"


def _table(page, cls: str) -> list[list[str]]:
    return page.eval_on_selector(f"table.{cls}", "t => [...t.rows].map(r => [...r.cells].map(c => c.textContent))")


def test_the_report_renders_with_its_plots_and_tables(browser, run):
    summary = json.loads((run / "summary.json").read_text())
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto((run / "report.html").as_uri(), timeout=PAGE_TIMEOUT_MS)
        assert page.title() == "Sieve curate run"
        figures = page.eval_on_selector_all("figure", "fs => fs.map(f => f.id)")
        assert figures == ["decisions", "reasons", "scores-preference", "scores-sft", "lengths-preference",
                           "lengths-sft"]
        images = page.eval_on_selector_all("figure img", "is => is.map(i => [i.complete, i.naturalWidth, "
                                                         "i.naturalHeight])")
        assert len(images) == len(figures)
        for complete, width, height in images:
            assert complete and width > 300 and height > 150  # decoded by the browser, a drawn figure
        # deciding reason x source: one row per source, the whole (escaped, not interpreted) name
        rows = _table(page, "reason-source")
        header, body = rows[0], {r[0]: r for r in rows[1:]}
        assert set(body) == set(summary["by_source"])
        col = header.index("rejected:contaminated")
        for source in SOURCES:
            assert body[source][col] == str(summary["reasons_by_source"][source]["rejected:contaminated"]) == "3"
        assert page.locator("table.reason-source b").count() == 0  # markup in a name stays text
        files = {r[0]: r for r in _table(page, "input-files")[1:]}
        assert set(files) == set(summary["by_input_file"])
        assert files[str(run.parent / "extra.jsonl")][1] == "7"
        counted = _table(page, "score-counts")
        assert counted[1] == ["pii_email", "1", "2"]
        facts = {r[0]: r[1] for r in _table(page, "facts")}
        assert facts["cuts"] == "contamination 0.8, near_jaccard 0.8"
        assert facts["accepted"].startswith(f"{summary['decisions']['accepted']} (")
        distributions = _table(page, "scores")
        assert ["sft", "contamination", "rejected"] in [r[:3] for r in distributions]
        assert page.locator("a[href='summary.json']").count() == 1
    finally:
        page.close()
