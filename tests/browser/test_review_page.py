"""`sieve review` in a real headless chromium over the outputs of a real `sieve curate` run: pages
render, filters by reason, source and batch show what the files hold, a duplicate sits beside its
first copy, a contaminated example beside its benchmark item, `<script>` in an example stays text,
an override posted through the page lands in overrides.jsonl and the next `sieve curate` applies
it, and a server that needs a token refuses a request without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "mit_sample.jsonl"
#: Seconds one `sieve curate` subprocess may take (no model stages).
CURATE_TIMEOUT = 300
#: Milliseconds a page or element may take in the browser.
PAGE_TIMEOUT_MS = 30_000
CHEAP = {"SIEVE_PIPELINE__SCORING__ENABLED": "false", "SIEVE_PIPELINE__SEMANTIC_DEDUP__ENABLED": "false",
         "SIEVE_BATCHES__REPORT": "false"}
HOSTILE = {"id": "hostile-1", "source": "red-team", "instruction": "What does <script>alert(1)</script> do in a page?",
           "output": "It runs: </div><script>document.title='pwned'</script><img src=x onerror=alert(2)> so escape."}
TOKEN = "operator:" + "review-token-for-tests-0123"


def run_curate(work: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "streams.cli", "curate", str(DATA), str(work / "hostile.jsonl"), "--out",
           str(work / "out"), "--benchmarks", str(work / "bench.jsonl"), "--batches", str(work / "batches"),
           "--batch-size-examples", "20", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **CHEAP},
                          timeout=CURATE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done


def envelopes(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Real rows (the MIT slice, with its two exact duplicates), a hostile row, and a benchmark file
    holding one gsm8k question of the slice, so that row is contaminated."""
    work = tmp_path_factory.mktemp("review")
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    gsm = next(r for r in rows if r["id"].startswith("gsm8k"))
    (work / "bench.jsonl").write_text(json.dumps({"id": "gsm8k_test-77", "benchmark": "gsm8k_test",
                                                  "text": gsm["instruction"]}) + "\n")
    (work / "hostile.jsonl").write_text(json.dumps(HOSTILE) + "\n")
    run_curate(work)
    return work


@pytest.fixture
def page(browser):
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(PAGE_TIMEOUT_MS)
    pg.dialogs = []

    def on_dialog(dialog):
        pg.dialogs.append(dialog.message)
        dialog.accept()  # the override form's confirm(); an alert() here would mean injected script ran

    pg.on("dialog", on_dialog)
    yield pg
    context.close()


def column(pg, n: int) -> list[str]:
    return pg.locator(f"#results tbody tr td:nth-child({n})").all_inner_texts()


def test_pages_render_and_filters_show_what_the_outputs_hold(work, page, review_process):
    out = work / "out"
    rejected = envelopes(out / "rejected.jsonl")
    accepted = envelopes(out / "accepted.jsonl")
    server = review_process([str(out), "--batches", str(work / "batches"), "--benchmarks", str(work / "bench.jsonl")])
    resp = page.goto(server.url)
    assert resp.status == 200
    assert page.inner_text("h1") == "Sieve review"
    reasons = page.locator("#reasons").inner_text()
    assert "duplicate_exact" in reasons and "contaminated" in reasons

    page.goto(server.url + "list?decision=rejected")
    page.select_option("select[name=reason]", "duplicate_exact")  # the script submits the form on change
    page.wait_for_url("**reason=duplicate_exact**")
    expected = sorted(e["id"] for e in rejected if "duplicate_exact" in e["reasons"])
    assert len(expected) == 2 and sorted(column(page, 1)) == expected
    assert set(column(page, 3)) == {"duplicate_exact"}

    source = Counter(e.get("source") for e in accepted + rejected).most_common(1)[0][0]
    page.goto(server.url + "list")
    page.select_option("select[name=source]", source)
    page.wait_for_url("**source=**")
    n = sum(e.get("source") == source for e in accepted + rejected)
    assert page.inner_text("#total").startswith(f"{n} matching")
    assert set(column(page, 4)) == {source}

    manifests = sorted((work / "batches").glob("*/manifest.json"))
    first = json.loads(manifests[0].read_text())
    shard_ids = [json.loads(line)["id"] for f in first["files"] if f["format"] == "json"
                 for line in Path(f["local_path"]).read_text().splitlines()]
    page.goto(server.url + "list?decision=accepted")
    page.select_option("select[name=batch]", first["batch_id"])
    page.wait_for_url("**batch=**")
    assert sorted(column(page, 1)) == sorted(shard_ids)

    page.goto(server.url + "batches")
    page.click(f"text={first['batch_id']}")
    sample_ids = page.locator("article.sample-row h4 a").all_inner_texts()
    assert sample_ids and set(sample_ids) <= set(shard_ids)


def test_a_duplicate_beside_its_first_copy_and_a_contaminated_example_beside_its_item(work, page, review_process):
    out = work / "out"
    rejected = envelopes(out / "rejected.jsonl")
    server = review_process([str(out), "--benchmarks", str(work / "bench.jsonl")])
    dup = next(e for e in rejected if e["reasons"] == ["duplicate_exact"])
    first_id = dup["details"]["exact_dedup"]
    first = next(e for e in envelopes(out / "accepted.jsonl") if e["id"] == first_id)
    page.goto(server.url + "list?reason=duplicate_exact")
    page.click(f"#results a:text-is('{dup['id']}')")
    assert first_id in page.inner_text("#first-copy h3")
    first_text = first["example"]["messages"][-1]["content"]
    dup_text = dup["example"]["messages"][-1]["content"]
    assert first_text.split("\n")[0] in page.inner_text("#first-copy")
    assert dup_text.split("\n")[0] in page.inner_text("#example-text")

    cont = next(e for e in rejected if e["reasons"] == ["contaminated"])
    page.goto(server.url + "list?reason=contaminated")
    page.click(f"#results a:text-is('{cont['id']}')")
    item = json.loads((work / "bench.jsonl").read_text())
    assert "gsm8k_test-77" in page.inner_text("#benchmark-item h3")
    assert page.inner_text("#benchmark-item .text") == item["text"]


def test_script_in_an_example_is_shown_as_text(work, page, review_process):
    server = review_process([str(work / "out")])
    page.goto(server.url + "example?id=hostile-1")
    text = page.inner_text("#example-text")
    assert "<script>alert(1)</script>" in text and "<script>document.title='pwned'</script>" in text
    assert page.title() != "pwned" and page.dialogs == []
    assert page.locator("#example-text script, #example-text img").count() == 0
    page.goto(server.url + "list?q=script")
    assert page.dialogs == [] and page.title() != "pwned"


def override_through_the_form(page, url: str, ex_id: str, action: str, note: str) -> None:
    page.goto(url + "example?id=" + ex_id)
    page.check(f"input[value={action}]")
    page.fill("input[name=who]", "ana")
    page.fill("textarea[name=note]", note)
    page.click("#override-form button")
    page.wait_for_selector("#done")


def test_an_override_round_trips_through_the_page_and_the_next_curate(work, page, review_process):
    out = work / "out"
    dup = next(e for e in envelopes(out / "rejected.jsonl") if e["reasons"] == ["duplicate_exact"])
    victim = next(e for e in envelopes(out / "accepted.jsonl") if e["id"].startswith("gpteacher_roleplay"))
    server = review_process([str(out), "--batches", str(work / "batches")])
    override_through_the_form(page, server.url, dup["id"], "force_accept", "whitespace differs: keep both")
    assert page.dialogs and "force_accept" in page.dialogs[-1]
    override_through_the_form(page, server.url, victim["id"], "force_reject", "roleplay of a real person")
    records = envelopes(out / "overrides.jsonl")
    assert [(r["id"], r["action"], r["who"]) for r in records] == [(dup["id"], "force_accept", "ana"),
                                                                     (victim["id"], "force_reject", "ana")]
    page.goto(server.url + "overrides")
    assert "roleplay of a real person" in page.inner_text("#overrides")

    done = run_curate(work)  # the next run applies overrides.jsonl by default, and says so
    assert "applying 2 override(s)" in done.stderr
    now_accepted = {e["id"]: e for e in envelopes(out / "accepted.jsonl")}
    now_rejected = {e["id"]: e for e in envelopes(out / "rejected.jsonl")}
    o = now_accepted[dup["id"]]["overridden"]
    assert (o["who"], o["note"], o["decision_was"], o["reasons_was"]) == (
        "ana", "whitespace differs: keep both", "rejected", ["duplicate_exact"])
    assert now_rejected[victim["id"]]["reasons"] == ["operator_rejected"]
    assert now_rejected[victim["id"]]["overridden"]["decision_was"] == "accepted"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overrides"]["applied"] == {"force_accept": 1, "force_reject": 1}
    # the batches of the second run: the force-accepted copy is batched, marked; the rejected id is revoked
    last = json.loads(sorted((work / "batches").glob("*/manifest.json"))[-1].read_text())
    assert [r["id"] for r in last["revoked"]] == [victim["id"]]
    assert [a["id"] for a in last["overrides"]["accepted"]] == [dup["id"]]
    page.goto(server.url + "example?id=" + victim["id"])  # the page reloads the outputs that changed
    assert "roleplay of a real person" in page.inner_text("p.overridden")


def test_a_token_is_required_off_loopback_and_refused_without_it(work, page, review_process):
    bad = subprocess.run([sys.executable, "-m", "streams.cli", "review", str(work / "out"), "--host", "0.0.0.0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=CURATE_TIMEOUT,
                         env={k: v for k, v in os.environ.items() if k != "SIEVE_REVIEW_TOKEN"})
    assert bad.returncode == 2 and "not a loopback address" in bad.stderr
    server = review_process([str(work / "out"), "--host", "0.0.0.0"], env={"SIEVE_REVIEW_TOKEN": TOKEN})
    url = server.url.replace("0.0.0.0", "127.0.0.1")
    resp = page.goto(url + "list?decision=rejected")
    assert resp.status == 401 and page.locator("#results").count() == 0
    assert page.request.get(url + "example?id=hostile-1").status == 401
    page.fill("input[name=token]", "not-the-token-at-all-000")
    page.click("button[type=submit]")
    assert page.locator("input[name=token]").count() == 1 and page.locator("#results").count() == 0
    page.fill("input[name=token]", TOKEN.split(":", 1)[1])
    page.click("button[type=submit]")
    page.wait_for_selector("#reasons")
    page.goto(url + "example?id=hostile-1")
    assert page.inner_text("#who") == "operator"  # a named token decides who overrides
