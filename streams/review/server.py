"""The review page's HTTP server: the standard library's ``ThreadingHTTPServer``, server-rendered
pages, and the checks that keep it safe by default.

* **Bind.** Loopback (``127.0.0.1``) unless told otherwise; any other address needs a
  token (:func:`check_bind` refuses to start without one).
* **Token.** With tokens configured, every request but ``/static/`` and ``/healthz``
  needs one: ``Authorization: Bearer <token>`` (scripts) or the session cookie that
  ``/login`` sets after the token was typed in (HttpOnly, SameSite=Strict). Tokens are
  compared in constant time; a token named ``owner:secret`` makes ``owner`` the ``who``
  of every override made with it.
* **CSRF.** An override is a POST that must carry the page's CSRF token (per session,
  or per process on loopback without a token); a page on another site cannot read it
  (no CORS), and a POST whose ``Origin`` is not this server is refused. Without a token,
  the ``Host`` header must name the loopback address, which defeats DNS rebinding.
* **Content.** Every response sends a Content-Security-Policy that runs scripts from
  this origin only, ``nosniff``, ``Referrer-Policy: same-origin`` (``no-referrer``
  would make the browser send ``Origin: null`` with the page's own POSTs) and ``no-store``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping
from urllib.parse import parse_qs, urlencode, urlsplit

from quality.overrides import FORCE_ACCEPT, FORCE_REJECT, OverrideError, override_from_envelope
from streams.review import pages
from streams.review.assets import CSS, JS

log = logging.getLogger(__name__)

COOKIE = "sieve_review"
MIN_TOKEN_CHARS = 16
SESSION_S = 12 * 3600
MAX_BODY_BYTES = 64 * 1024
#: Seconds a failed login waits before it answers (slows guessing down).
LOGIN_FAIL_DELAY_S = 0.5
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_tokens(specs: list[str]) -> dict[str, str | None]:
    """``secret -> owner`` from specs ``owner:secret`` or ``secret``.

    Raises:
        ValueError: a token shorter than :data:`MIN_TOKEN_CHARS`, with how to make one.
    """
    out: dict[str, str | None] = {}
    for spec in specs:
        owner, _, secret = spec.rpartition(":")
        if len(secret) < MIN_TOKEN_CHARS:
            raise ValueError(f"a review token must be at least {MIN_TOKEN_CHARS} characters (got {len(secret)}); "
                             "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'")
        out[secret] = owner or None
    return out


def check_bind(host: str, tokens: Mapping[str, Any]) -> None:
    """Raises ValueError when ``host`` is not loopback and no token is configured."""
    if not tokens and not is_loopback(host):
        raise ValueError(f"--host {host} is not a loopback address: anyone who can reach it could read the examples "
                         "and override decisions. Set a token (--token or SIEVE_REVIEW_TOKEN) or bind 127.0.0.1")


@dataclass
class Identity:
    who_fixed: str | None   # the token's owner, when the token is named
    csrf: str | None        # None: authenticated by a header, which another site cannot send


class ReviewApp:
    """The pages and the rules: who may see them, who may post an override, and what is written.

    Args:
        store: a :class:`~streams.review.store.ReviewStore`.
        tokens: ``secret -> owner`` (empty: no token; then the server must bind loopback).
        who_default: prefilled ``who`` for unnamed tokens and loopback (the OS user).
    """

    def __init__(self, store: Any, *, tokens: Mapping[str, str | None], who_default: str) -> None:
        self.store, self.tokens, self.who_default = store, dict(tokens), who_default
        self.process_csrf = secrets.token_urlsafe(32)
        self.sessions: dict[str, tuple[str | None, str, float]] = {}  # sid -> (owner, csrf, expires)
        self.allowed_hosts: set[str] = set()
        self._lock = threading.Lock()

    def bind(self, host: str, port: int) -> None:
        names = {host, "127.0.0.1", "localhost", "[::1]"} if is_loopback(host) else {host}
        self.allowed_hosts = {f"{n}:{port}" for n in names}

    def ctx(self, ident: Identity) -> dict[str, Any]:
        return {"csrf": ident.csrf or "", "who_fixed": ident.who_fixed, "who_default": self.who_default,
                "mode": self.store.source.mode, "describe": self.store.source.describe()}

    # ------------------------------------------------------------------ authentication

    def _token_owner(self, token: str) -> tuple[bool, str | None]:
        found, owner = False, None
        for secret, name in self.tokens.items():  # compare against every token, in constant time each
            if hmac.compare_digest(secret.encode(), token.encode()):
                found, owner = True, name
        return found, owner

    def identify(self, headers: Mapping[str, str]) -> Identity | None:
        """Who makes the request, or None when it carries no valid token."""
        if not self.tokens:
            return Identity(None, self.process_csrf)
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            ok, owner = self._token_owner(auth[7:].strip())
            return Identity(owner, None) if ok else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("Cookie") or "")
        except Exception:  # noqa: BLE001 - a malformed cookie is no session
            return None
        sid = cookie[COOKIE].value if COOKIE in cookie else ""
        with self._lock:
            session = self.sessions.get(sid)
            if session is None or session[2] < time.time():
                self.sessions.pop(sid, None)
                return None
        return Identity(session[0], session[1])

    def login(self, token: str) -> str | None:
        ok, owner = self._token_owner(token)
        if not ok:
            time.sleep(LOGIN_FAIL_DELAY_S)
            return None
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self.sessions[sid] = (owner, secrets.token_urlsafe(32), time.time() + SESSION_S)
        return sid

    # ------------------------------------------------------------------ overrides

    def override(self, ident: Identity, form: Mapping[str, str]) -> tuple[int, str]:
        """Records an override from the page's form; returns (HTTP status, where it went or what was wrong)."""
        if ident.csrf is not None and not hmac.compare_digest(form.get("csrf", "").encode(), ident.csrf.encode()):
            return HTTPStatus.FORBIDDEN, "the form's CSRF token is missing or stale: reload the page and try again"
        ex_id, action = form.get("id", ""), form.get("action", "")
        who = ident.who_fixed or form.get("who", "").strip()
        envs = self.store.by_id(ex_id)
        wanted = {FORCE_ACCEPT: "rejected", FORCE_REJECT: "accepted"}.get(action)
        if wanted is None:
            return HTTPStatus.BAD_REQUEST, f"action must be {FORCE_ACCEPT} or {FORCE_REJECT}"
        env = next((e for e in envs if e.get("decision") == wanted), None)
        if env is None:
            article = "an" if wanted == "accepted" else "a"
            return HTTPStatus.BAD_REQUEST, (f"no {wanted} envelope with id {ex_id!r} among the loaded records: "
                                            f"{action} overrules {article} {wanted} decision")
        try:
            ov = override_from_envelope(env, action, form.get("note", "").strip(), who, time.time())
            record = ov.to_record()
            where = self.store.source.write_override(record)
        except OverrideError as exc:
            return HTTPStatus.BAD_REQUEST, str(exc)
        self.store.note_override(record)
        log.info("override %s of one id by %s recorded in %s", action, who[:80], where)
        return HTTPStatus.SEE_OTHER, where


class Handler(BaseHTTPRequestHandler):
    server_version = "sieve-review"
    app: ReviewApp  # set on the subclass made by make_server

    def log_message(self, fmt: str, *args: Any) -> None:  # method and path only, at DEBUG
        log.debug("%s %s", self.command, urlsplit(self.path).path)

    def _send(self, status: int, body: str | bytes, ctype: str = "text/html; charset=utf-8",
              extra: Mapping[str, str] | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        for k, v in {**HEADERS, "Content-Type": ctype, "Content-Length": str(len(data)), **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _redirect(self, location: str, extra: Mapping[str, str] | None = None) -> None:
        self._send(HTTPStatus.SEE_OTHER, "", extra={"Location": location, **(extra or {})})

    def _form(self) -> dict[str, str] | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if not 0 <= length <= MAX_BODY_BYTES:  # a negative length would read until the client hangs up
            return None
        body = self.rfile.read(length).decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        try:
            self._route(method)
        except Exception:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("review request %s %s failed", method, urlsplit(self.path).path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, pages.message_page("Error", "the server failed; see its log"))

    def _route(self, method: str) -> None:
        app = self.app
        parts = urlsplit(self.path)
        path, params = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        if path == "/healthz":
            return self._send(HTTPStatus.OK, "ok\n", "text/plain; charset=utf-8")
        if path == "/static/review.css":
            return self._send(HTTPStatus.OK, CSS, "text/css; charset=utf-8")
        if path == "/static/review.js":
            return self._send(HTTPStatus.OK, JS, "text/javascript; charset=utf-8")
        host = self.headers.get("Host") or ""
        if not app.tokens and host not in app.allowed_hosts:
            return self._send(HTTPStatus.FORBIDDEN, pages.message_page(
                "Forbidden", f"Host {host!r} is not this server's loopback address; open "
                             f"http://{sorted(app.allowed_hosts)[0]}/ (or set a token to serve other names)"))
        origin = self.headers.get("Origin")
        if method == "POST" and origin is not None and origin != f"http://{host}":
            return self._send(HTTPStatus.FORBIDDEN, pages.message_page("Forbidden", "a cross-site POST is refused"))
        if path == "/login":
            return self._login(method)
        ident = app.identify(self.headers)
        if ident is None:
            if method == "GET" and "Authorization" not in self.headers:
                return self._send(HTTPStatus.UNAUTHORIZED, pages.login_page())
            return self._send(HTTPStatus.UNAUTHORIZED, pages.message_page("Unauthorized", "a valid token is needed"),
                              extra={"WWW-Authenticate": 'Bearer realm="sieve review"'})
        app.store.refresh()
        ctx = app.ctx(ident)
        if method == "POST":
            return self._post(path, ident, ctx)
        routes = {"/": lambda: pages.overview(app.store, ctx),
                  "/list": lambda: pages.list_page(app.store, ctx, params),
                  "/example": lambda: pages.example_page(app.store, ctx, params.get("id", ""), params.get("done", "")),
                  "/batches": lambda: pages.batches_page(app.store, ctx),
                  "/batch": lambda: pages.batch_page(app.store, ctx, params.get("id", "")),
                  "/overrides": lambda: pages.overrides_page(app.store, ctx)}
        if path not in routes:
            return self._send(HTTPStatus.NOT_FOUND, pages.message_page("Not found", f"no page {path}", ctx))
        self._send(HTTPStatus.OK, routes[path]())

    def _login(self, method: str) -> None:
        if method == "GET" or not self.app.tokens:
            return self._redirect("/") if not self.app.tokens else self._send(HTTPStatus.OK, pages.login_page())
        form = self._form() or {}
        sid = self.app.login(form.get("token", ""))
        if sid is None:
            return self._send(HTTPStatus.UNAUTHORIZED, pages.login_page("That token is not valid."))
        self._redirect("/", {"Set-Cookie": f"{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/"})

    def _post(self, path: str, ident: Identity, ctx: Mapping[str, Any]) -> None:
        form = self._form()
        if form is None:
            return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, pages.message_page("Too large", "form too large"))
        if path == "/reload":
            if ident.csrf is not None and not hmac.compare_digest(form.get("csrf", "").encode(), ident.csrf.encode()):
                return self._send(HTTPStatus.FORBIDDEN, pages.message_page("Forbidden", "stale CSRF token", ctx))
            self.app.store.refresh(force=True)
            return self._redirect("/")
        if path != "/override":
            return self._send(HTTPStatus.NOT_FOUND, pages.message_page("Not found", f"no form {path}", ctx))
        status, text = self.app.override(ident, form)
        if status == HTTPStatus.SEE_OTHER:
            return self._redirect("/example?" + urlencode({"id": form.get("id", ""), "done": text}))
        self._send(status, pages.message_page("Override not recorded", text, ctx))


def make_server(app: ReviewApp, host: str, port: int) -> ThreadingHTTPServer:
    """A threading server for ``app`` on ``host:port`` (0 = a free port), not yet serving."""
    handler = type("ReviewHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    app.bind(host, server.server_address[1])
    return server
