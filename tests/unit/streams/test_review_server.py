"""`sieve review`'s server over HTTP, without a browser: the token, the Host and Origin checks, CSRF,
escaping, and an override written to the overrides file (tests/browser drives it in chromium)."""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from quality.filemode import curate
from streams.review.files import FileSource, read_override_records
from streams.review.server import ReviewApp, check_bind, make_server, parse_tokens
from streams.review.store import ReviewStore

TOKEN = "ana:" + "s3cret-token-" + "x" * 12
HOSTILE = ('{"id": "<b>evil</b>", "source": "<img src=x onerror=alert(1)>", "instruction": '
           '"Explain what <script>alert(1)</script> does when a page includes it verbatim.", '
           '"output": "It runs the script: </div><script>document.title=1</script> so escape text."}')
ASSISTANT_FIRST = ('{"id": "assistant-first", "messages": [{"role": "assistant", "content": "Hello! Ask away."}, '
                   '{"role": "user", "content": "Explain tides."}, {"role": "assistant", "content": "The Moon."}]}')


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    from tests.conftest import _cheap_pipeline

    tmp = tmp_path_factory.mktemp("review")
    data = Path(__file__).resolve().parents[2] / "data" / "mit_sample.jsonl"
    (tmp / "hostile.jsonl").write_text(HOSTILE + "\n" + ASSISTANT_FIRST + "\n")
    curate(_cheap_pipeline(), [data, tmp / "hostile.jsonl"], tmp / "out")
    return tmp / "out"


@contextmanager
def serving(out_dir: Path, tokens=(), host="127.0.0.1"):
    store = ReviewStore(FileSource(out_dir))
    store.refresh(force=True)
    app = ReviewApp(store, tokens=parse_tokens(list(tokens)), who_default="tester")
    server = make_server(app, host, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], app
    finally:
        server.shutdown()
        server.server_close()


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    data = urllib.parse.urlencode(body).encode() if body is not None else None
    if data is not None:
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read().decode()


def test_a_non_loopback_bind_needs_a_token_and_tokens_are_long():
    with pytest.raises(ValueError, match="not a loopback address"):
        check_bind("0.0.0.0", {})
    check_bind("127.0.0.1", {})
    check_bind("0.0.0.0", parse_tokens([TOKEN]))
    with pytest.raises(ValueError, match="at least 16 characters"):
        parse_tokens(["ana:short"])
    assert parse_tokens([TOKEN]) == {TOKEN.split(":", 1)[1]: "ana"}


def test_without_the_token_every_page_is_refused(out_dir):
    with serving(out_dir, [TOKEN]) as (port, _):
        for path in ("/", "/list?decision=rejected", "/example?id=x", "/overrides", "/batches"):
            status, _, body = request(port, "GET", path)
            assert status == 401 and "gsm8k" not in body and "GPTeacher" not in body
        status, _, _ = request(port, "GET", "/", headers={"Authorization": "Bearer " + "y" * 25})
        assert status == 401
        status, _, _ = request(port, "POST", "/override", {"id": "a", "action": "force_reject", "note": "n"})
        assert status == 401
        status, _, body = request(port, "GET", "/", headers={"Authorization": "Bearer " + TOKEN.split(":", 1)[1]})
        assert status == 200 and "duplicate_exact" in body
        status, hdrs, _ = request(port, "POST", "/login", {"token": "wrong-" + "z" * 20})
        assert status == 401 and "Set-Cookie" not in hdrs
        status, hdrs, _ = request(port, "POST", "/login", {"token": TOKEN.split(":", 1)[1]})
        assert status == 303 and "HttpOnly" in hdrs["Set-Cookie"] and "SameSite=Strict" in hdrs["Set-Cookie"]
        cookie = hdrs["Set-Cookie"].split(";")[0]
        status, _, body = request(port, "GET", "/", headers={"Cookie": cookie})
        assert status == 200 and "Sieve review" in body


def test_loopback_without_a_token_refuses_other_host_names_and_cross_site_posts(out_dir):
    with serving(out_dir) as (port, app):
        status, _, _ = request(port, "GET", "/", headers={"Host": f"attacker.example:{port}"})
        assert status == 403  # DNS rebinding: a page of another name must not read this one
        dup = next(e for e in app.store.data["envelopes"] if e.get("reasons") == ["duplicate_exact"])
        form = {"id": dup["id"], "action": "force_accept", "note": "not a duplicate", "who": "tester",
                "csrf": app.process_csrf}
        status, _, _ = request(port, "POST", "/override", form, {"Origin": "http://attacker.example"})
        assert status == 403
        status, _, body = request(port, "POST", "/override", {**form, "csrf": "guessed"})
        assert status == 403 and "CSRF" in body
        assert read_override_records(out_dir / "overrides.jsonl") == []
        status, hdrs, _ = request(port, "POST", "/override", form, {"Origin": f"http://127.0.0.1:{port}"})
        assert status == 303 and hdrs["Location"].startswith("/example?id=")
        [rec] = read_override_records(out_dir / "overrides.jsonl")
        assert (rec["id"], rec["action"], rec["who"], rec["note"]) == (dup["id"], "force_accept", "tester",
                                                                       "not a duplicate")
        assert rec["decision_was"] == "rejected" and rec["reasons_was"] == ["duplicate_exact"]
        assert rec["example"] == dup["example"]
        status, _, body = request(port, "POST", "/override", {**form, "note": "  "})
        assert status == 400 and "note" in body
        status, _, body = request(port, "POST", "/override", {**form, "action": "force_reject"})
        assert status == 400  # it is rejected already: force_reject overrules an acceptance
    (out_dir / "overrides.jsonl").unlink()


def test_a_force_accept_a_chat_template_would_refuse_is_answered_400_and_not_recorded(out_dir):
    with serving(out_dir) as (port, app):
        (env,) = [e for e in app.store.data["envelopes"] if e["id"] == "assistant-first"]
        assert env["reasons"] == ["bad_turn_order"]
        form = {"id": env["id"], "action": "force_accept", "note": "reads fine", "who": "tester",
                "csrf": app.process_csrf}
        status, _, body = request(port, "POST", "/override", form)
        assert status == 400 and "cannot be force-accepted" in body and "starts with assistant" in body
    path = out_dir / "overrides.jsonl"
    recorded = read_override_records(path) if path.exists() else []
    path.unlink(missing_ok=True)
    assert recorded == []


def test_a_named_token_decides_who(out_dir):
    with serving(out_dir, [TOKEN]) as (port, app):
        acc = next(e for e in app.store.data["envelopes"] if e["decision"] == "accepted")
        auth = {"Authorization": "Bearer " + TOKEN.split(":", 1)[1]}
        status, _, _ = request(port, "POST", "/override", {"id": acc["id"], "action": "force_reject",
                                                           "note": "off topic", "who": "mallory"}, auth)
        assert status == 303
        [rec] = read_override_records(out_dir / "overrides.jsonl")
        assert rec["who"] == "ana"
    (out_dir / "overrides.jsonl").unlink()


def test_example_text_is_text_never_markup(out_dir):
    with serving(out_dir) as (port, _):
        for path in ("/list?decision=accepted&q=script", "/example?" + urllib.parse.urlencode({"id": "<b>evil</b>"}),
                     "/", "/list?source=" + urllib.parse.quote("<img src=x onerror=alert(1)>")):
            status, hdrs, body = request(port, "GET", path)
            assert status == 200, path
            assert "<script>alert" not in body and "<script>document" not in body and "<b>evil" not in body
            assert "<img src=x" not in body
            assert "script-src 'self'" in hdrs["Content-Security-Policy"]
        _, _, body = request(port, "GET", "/example?" + urllib.parse.urlencode({"id": "<b>evil</b>"}))
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "&lt;/div&gt;&lt;script&gt;" in body


def test_the_overrides_file_rejects_a_bad_line_but_tolerates_a_torn_tail(tmp_path):
    path = tmp_path / "overrides.jsonl"
    good = {"type": "override", "id": "a", "action": "force_reject", "note": "n", "who": "w", "at": 1.0}
    path.write_bytes(orjson.dumps(good) + b"\n" + b'{"type": "override", "id": "b", "act')
    assert [r["id"] for r in read_override_records(path)] == ["a"]
    path.write_bytes(orjson.dumps({**good, "note": ""}) + b"\n")
    with pytest.raises(ValueError, match="overrides.jsonl:1: not a valid override record"):
        read_override_records(path)


def test_a_bad_content_length_does_not_hang_a_request(out_dir):
    with serving(out_dir) as (port, app):
        for length in ("-5", "abc", str(10**9)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.putrequest("POST", "/override")
            conn.putheader("Host", f"127.0.0.1:{port}")
            conn.putheader("Content-Length", length)
            conn.endheaders()
            resp = conn.getresponse()
            assert resp.status == 413, length
            resp.read()
