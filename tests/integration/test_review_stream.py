"""`sieve review --kafka` against a real broker and a real `sieve batcher`: the page lists what the
output topics hold (read_committed: an aborted transaction's envelope is not shown), and overrides
made through the page and through the CLI travel on the control topic to the batcher, whose next
manifest revokes, removes and adds exactly those ids."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.parse
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from test_batcher import BatcherProcess, produce, read_announcements, real_envelopes

from streams.config import load_settings
from streams.review.server import ReviewApp, make_server
from streams.review.store import ReviewStore
from streams.review.topics import KafkaSource

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: Seconds to wait for announcements, the CLI and the page's reads.
RECV_TIMEOUT = 90.0


def env_for(bootstrap: str, base: str, batches: Path) -> dict[str, str]:
    return {"SIEVE_KAFKA__BROKERS": bootstrap, "SIEVE_KAFKA__ACCEPTED_TOPIC": f"{base}.accepted",
            "SIEVE_KAFKA__REJECTED_TOPIC": f"{base}.rejected", "SIEVE_KAFKA__DEAD_LETTER_TOPIC": f"{base}.dead-letter",
            "SIEVE_KAFKA__BATCHES_TOPIC": f"{base}.batches", "SIEVE_KAFKA__CONTROL_TOPIC": f"{base}.control",
            "SIEVE_KAFKA__RAW_TOPIC": f"{base}.raw", "SIEVE_KAFKA__GROUP_ID": f"{base}-group",
            "SIEVE_KAFKA__PARTITIONS": "1", "SIEVE_BATCHES__DIR": str(batches), "SIEVE_BATCHES__MAX_EXAMPLES": "20",
            "SIEVE_BATCHES__MAX_AGE_S": "0", "SIEVE_BATCHES__REPORT": "false", "SIEVE_METRICS__PORT": "0"}


def produce_aborted(bootstrap: str, topic: str, env: dict) -> None:
    """One envelope written in a Kafka transaction that is then aborted (a decider that died mid-batch)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"review-it-{uuid.uuid4().hex}")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, key=env["id"].encode(), value=orjson.dumps(env))
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()


def get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=RECV_TIMEOUT)
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 200, body
    return body


def post(port: int, path: str, form: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=RECV_TIMEOUT)
    conn.request("POST", path, body=urllib.parse.urlencode(form).encode(),
                 headers={"Host": f"127.0.0.1:{port}", "Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def listed_ids(html: str) -> list[str]:
    import re

    return re.findall(r'<tr><td><a href="/example\?id=([^"]+)">', html)


def test_overrides_from_the_page_reach_the_batcher_through_the_control_topic(kafka, tmp_path, cheap_pipeline):
    base = f"sieve-it-{uuid.uuid4().hex}"
    env = env_for(kafka.bootstrap, base, tmp_path / "batches")
    accepted, rejected = real_envelopes(cheap_pipeline())
    dup = next(e for e in rejected if e["reasons"] == ["duplicate_exact"])
    batcher = BatcherProcess(env, tmp_path / "batcher.log")
    server = None
    try:
        batcher.wait_ready()
        produce(kafka.bootstrap, f"{base}.accepted", accepted[:30])
        produce(kafka.bootstrap, f"{base}.rejected", rejected)
        produce_aborted(kafka.bootstrap, f"{base}.rejected", {**dup, "id": "aborted-envelope"})
        [first] = read_announcements(kafka.bootstrap, f"{base}.batches", 1)
        in_closed, in_open = accepted[0]["id"], accepted[25]["id"]

        settings = load_settings(None, overrides={k.removeprefix("SIEVE_").lower().replace("__", "."): v
                                                  for k, v in env.items()})
        store = ReviewStore(KafkaSource(settings, max_records=1000))
        store.refresh(force=True)
        app = ReviewApp(store, tokens={}, who_default="tester")
        server = make_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]

        shown = listed_ids(get(port, "/list?decision=rejected"))
        assert sorted(shown) == sorted(e["id"] for e in rejected)  # not the aborted one: read_committed
        batch_page = get(port, "/batch?id=" + first["batch_id"])
        assert in_closed in batch_page

        assert post(port, "/override", {"id": in_closed, "action": "force_reject", "note": "names a real customer",
                                        "who": "ana", "csrf": app.process_csrf}) == 303
        assert post(port, "/override", {"id": dup["id"], "action": "force_accept", "note": "not a duplicate",
                                        "who": "ana", "csrf": app.process_csrf}) == 303
        cli = subprocess.run([sys.executable, "-m", "streams.cli", "review", "--kafka", "--force-reject", in_open,
                              "--note", "off-topic for this model", "--who", "bo"], cwd=ROOT, capture_output=True,
                             text=True, timeout=RECV_TIMEOUT,
                             env={k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")} | env)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["written_to"].startswith(f"{base}.control")

        cut = subprocess.run([sys.executable, "-m", "streams.cli", "batches", "cut", "--wait", "60"], cwd=ROOT,
                             capture_output=True, text=True, timeout=RECV_TIMEOUT,
                             env={k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")} | env)
        assert cut.returncode == 0, cut.stderr + batcher.log()[-3000:]
        manifests = read_announcements(kafka.bootstrap, f"{base}.batches", 2)
        second = manifests[-1]
        assert second["trigger"] == "request"
        assert [(r["id"], r["batch_id"], r["who"]) for r in second["revoked"]] == [
            (in_closed, first["batch_id"], "ana")]
        assert [r["id"] for r in second["overrides"]["removed_from_open"]] == [in_open]
        assert [(r["id"], r["who"]) for r in second["overrides"]["accepted"]] == [(dup["id"], "ana")]
        assert second["counts"]["overridden"] == 1
        rows = {json.loads(line)["id"]: json.loads(line) for f in second["files"] if f["format"] == "json"
                for line in Path(f["local_path"]).read_text().splitlines()}
        assert in_open not in rows and rows[dup["id"]]["overridden"] is True
        assert [i for i, r in rows.items() if r["overridden"]] == [dup["id"]]
        assert sorted(rows) == sorted([e["id"] for e in accepted[20:30] if e["id"] != in_open] + [dup["id"]])

        assert post(port, "/reload", {"csrf": app.process_csrf}) == 303
        audit = get(port, "/overrides")
        for text in ("names a real customer", "not a duplicate", "off-topic for this model"):
            assert text in audit
        assert "names a real customer" in get(port, "/batch?id=" + second["batch_id"])  # its revoked list
        assert batcher.terminate() == 0, batcher.log()[-3000:]
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
            store.source.close()
        batcher.kill()
