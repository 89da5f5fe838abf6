"""Server-rendered HTML of the review page. Every value that comes from data (example text,
ids, sources, notes, reasons, benchmark items) goes through :func:`h` (``html.escape`` with
quotes), and every URL is built with ``urlencode``: example text is what an adversary
controls, so it is only ever text on the page, never markup."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping
from urllib.parse import urlencode

from streams.review.store import SAMPLE_ROWS, example_text, sample

PAGE_ROWS = 50
SNIPPET_CHARS = 200


def h(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return h(path + ("?" + query if query else ""))


def when(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return ""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def layout(title: str, body: str, ctx: Mapping[str, Any]) -> str:
    nav = "".join(f'<a href="{url(p, **q)}">{h(t)}</a>' for t, p, q in (
        ("Overview", "/", {}), ("Rejected", "/list", {"decision": "rejected"}),
        ("Accepted", "/list", {"decision": "accepted"}), ("Dead letters", "/list", {"decision": "dead_letter"}),
        ("Batches", "/batches", {}), ("Overrides", "/overrides", {})))
    reload = (f'<form method="post" action="/reload"><input type="hidden" name="csrf" value="{h(ctx["csrf"])}">'
              '<button type="submit">Reload</button></form>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{h(title)} · sieve review</title>'
            '<link rel="stylesheet" href="/static/review.css"></head><body>'
            f'<header>{nav}{reload}<span class="src">{h(ctx["describe"])}</span></header>'
            f'<main><h1>{h(title)}</h1>{body}</main><script src="/static/review.js"></script></body></html>')


def badge(decision: Any) -> str:
    return f'<span class="badge {h(decision)}">{h(decision)}</span>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], attrs: str = "") -> str:
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def messages(items: Any) -> str:
    out = []
    for m in items or []:
        if isinstance(m, Mapping):
            role = str(m.get("role", ""))
            out.append(f'<div class="msg role-{h(role)}"><div class="role">{h(role)}</div>'
                       f'<div class="content">{h(m.get("content", ""))}</div></div>')
    return "".join(out)


def example_html(example: Any) -> str:
    """The canonical example as text: SFT turns, or a pair's prompt, chosen and rejected side by side."""
    if not isinstance(example, Mapping):
        return '<p class="warn">This envelope carries no example.</p>'
    if "messages" in example:
        return messages(example["messages"])
    return ("<h4>prompt</h4>" + messages(example.get("prompt")) + '<div class="side"><section><h4>chosen</h4>'
            + messages(example.get("chosen")) + "</section><section><h4>rejected</h4>"
            + messages(example.get("rejected")) + "</section></div>")


def overview(store: Any, ctx: Mapping[str, Any]) -> str:
    c = store.counts()
    d = store.data
    parts = [notices(d)]
    parts.append("<h2>Decisions</h2>" + table(("decision", "envelopes"), (
        (f'<a href="{url("/list", decision=k)}">{badge(k)}</a>', h(n)) for k, n in c["decision"].most_common())))
    parts.append("<h2>Reasons</h2>" + table(("reason", "envelopes"), (
        (f'<a href="{url("/list", reason=k)}">{h(k)}</a>', h(n)) for k, n in c["reason"].most_common()),
        'id="reasons"'))
    parts.append("<h2>Sources</h2>" + table(("source", "envelopes"), (
        (f'<a href="{url("/list", source=k)}">{h(k)}</a>', h(n)) for k, n in c["source"].most_common()),
        'id="sources"'))
    if d["batches"]:
        parts.append("<h2>Batches</h2>" + batches_table(store, c))
    summary = d.get("summary") or {}
    if summary.get("overrides"):
        parts.append("<h2>Overrides applied by the last <code>sieve curate</code></h2>" + table(
            ("", ""), ((h(k), h(v)) for k, v in summary["overrides"].items())))
    return layout("Sieve review", "".join(parts), ctx)


def notices(d: Mapping[str, Any]) -> str:
    out = []
    for decision, n in (d.get("truncated") or {}).items():
        out.append(f'<p class="warn">{h(n)} older {h(decision)} records are not loaded (the review keeps the '
                   "newest --max-records of each output).</p>")
    for err in d.get("override_errors") or []:
        out.append(f'<p class="warn">An override record is not valid and is ignored: {h(err)}</p>')
    return "".join(out)


def batches_table(store: Any, counts: Mapping[str, Any]) -> str:
    rows = []
    for batch_id, b in store.data["batches"].items():
        m = b["manifest"]
        rows.append((f'<a href="{url("/batch", id=batch_id)}">{h(batch_id)}</a>', h(m.get("trigger")),
                     h((m.get("counts") or {}).get("examples")), h(m.get("closed_at")),
                     f'<a href="{url("/list", batch=batch_id, decision="rejected")}">{h(counts["window"][batch_id])}'
                     "</a>", h(len(m.get("revoked") or []))))
    return table(("batch", "trigger", "examples", "closed at", "rejections in its window", "revoked"), rows,
                 'id="batches"')


def _options(name: str, label: str, current: str, values: Iterable[Any]) -> str:
    opts = ['<option value="">any</option>'] + [
        f'<option value="{h(v)}"{" selected" if str(v) == current else ""}>{h(v)}</option>' for v in values]
    return f'<label>{h(label)}<select name="{h(name)}">{"".join(opts)}</select></label>'


def filters(store: Any, p: Mapping[str, str]) -> str:
    c = store.counts()
    return ('<form class="filters" method="get" action="/list">'
            + _options("decision", "decision", p.get("decision", ""), ("accepted", "rejected", "dead_letter"))
            + _options("reason", "reason", p.get("reason", ""), sorted(c["reason"]))
            + _options("source", "source", p.get("source", ""), sorted(c["source"]))
            + _options("batch", "batch", p.get("batch", ""), list(store.data["batches"]))
            + f'<label>text or id<input name="q" value="{h(p.get("q", ""))}"></label>'
            + '<button type="submit">Filter</button></form>')


def snippet(env: Mapping[str, Any]) -> str:
    text = str(env.get("error") or "") if env.get("decision") == "dead_letter" else example_text(env.get("example"))
    return f'<div class="snippet">{h(text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else ""))}</div>'


def list_page(store: Any, ctx: Mapping[str, Any], p: Mapping[str, str]) -> str:
    try:
        offset = max(0, int(p.get("offset", "0") or 0))
    except ValueError:
        offset = 0
    keys = ("decision", "reason", "source", "batch", "q")
    hits, total = store.query(**{k: p.get(k, "") for k in keys}, offset=offset, limit=PAGE_ROWS)
    rows = [(f'<a href="{url("/example", id=e["id"])}">{h(e["id"])}</a>', badge(e.get("decision")),
             h(", ".join(e.get("reasons") or [])), h(e.get("source") or "unknown"),
             h(e.get("_batch") or e.get("_window") or ""), snippet(e)) for e in hits]
    body = notices(store.data) + filters(store, p)
    body += f'<p id="total">{h(total)} matching; showing {h(offset + 1 if hits else 0)}–{h(offset + len(hits))}</p>'
    body += table(("id", "decision", "reasons", "source", "batch (window)", "text"), rows, 'id="results"')
    nav = []
    current = {k: p.get(k, "") for k in keys}
    if offset > 0:
        nav.append(f'<a href="{url("/list", **current, offset=max(0, offset - PAGE_ROWS))}">previous</a>')
    if offset + PAGE_ROWS < total:
        nav.append(f'<a href="{url("/list", **current, offset=offset + PAGE_ROWS)}">next</a>')
    return layout("Envelopes", body + " ".join(nav), ctx)


def _kv(mapping: Any) -> str:
    if not isinstance(mapping, Mapping) or not mapping:
        return "<p>none</p>"
    return table(("", ""), ((h(k), h(v if not isinstance(v, float) else round(v, 4))) for k, v in mapping.items()))


def envelope_section(store: Any, env: Mapping[str, Any]) -> str:
    reasons = ", ".join(env.get("reasons") or []) or "none"
    head = (f'<p>{badge(env.get("decision"))} reasons: <b class="reasons">{h(reasons)}</b> · source '
            f'<b>{h(env.get("source") or "unknown")}</b>'
            + (f' · batch <a href="{url("/batch", id=env["_batch"])}">{h(env["_batch"])}</a>' if env.get("_batch")
               else "") + "</p>")
    if env.get("overridden"):
        o = env["overridden"]
        head += (f'<p class="ok overridden">Overridden ({h(o.get("action"))}) by {h(o.get("who"))} at '
                 f'{h(when(o.get("at")))}: “{h(o.get("note"))}”. The pipeline had decided {h(o.get("decision_was"))}'
                 f' ({h(", ".join(o.get("reasons_was") or []))}).</p>')
    main = f'<section id="example-text"><h3>This example</h3>{example_html(env.get("example"))}</section>'
    if env.get("decision") == "dead_letter":
        main = dead_letter_html(env)
    side = ""
    dup = store.first_copy(env)
    if dup is not None:
        reason, first, copies = dup
        inner = example_html(copies[0].get("example")) if copies else (
            f'<p class="warn">The first copy {h(first)} is not among the accepted records loaded.</p>')
        side = (f'<section id="first-copy"><h3>First copy ({h(reason)}): '
                f'<a href="{url("/example", id=first)}">{h(first)}</a></h3>{inner}</section>')
    bench = store.benchmark_item(env)
    if bench is not None:
        item_id, item = bench
        inner = (f'<p>benchmark <b>{h(item.benchmark)}</b></p><div class="text">{h(item.text)}</div>' if item else
                 f'<p class="warn">Item {h(item_id)} is not in the benchmark files given (--benchmarks).</p>')
        side = f'<section id="benchmark-item"><h3>Benchmark item {h(item_id)}</h3>{inner}</section>'
    facts = ("<h3>Scores</h3>" + _kv(env.get("scores")) + "<h3>Details</h3>" + _kv(env.get("details"))
             + "<h3>Origin</h3>" + _kv(env.get("origin")))
    return f'<article class="envelope">{head}<div class="side">{main}{side}</div>{facts}</article>'


def dead_letter_html(env: Mapping[str, Any]) -> str:
    raw = env.get("raw")
    if raw is None:
        why = f": {h(env['raw_omitted'])}" if env.get("raw_omitted") else ""
        sha = f" sha256 {h(env['raw_sha256'])}, {h(env.get('raw_bytes'))} bytes." if env.get("raw_sha256") else ""
        shown = f"<p>No raw payload kept{why}.{sha}</p>"
    elif env.get("raw_encoding") == "utf-8":
        shown = f'<div class="text raw">{h(raw)}</div>'
    else:
        shown = (f'<p>The raw payload is {h(env.get("raw_encoding"))} ({h(env.get("raw_bytes"))} bytes); '
                 "not decoded here.</p>")
    return f'<section id="dead-letter"><h3>Error</h3><div class="text">{h(env.get("error"))}</div>' \
           f"<h3>Raw payload, as the output holds it</h3>{shown}</section>"


def override_form(envs: list[Mapping[str, Any]], ctx: Mapping[str, Any], ex_id: str) -> str:
    actions = []
    if any(e.get("decision") == "rejected" and e.get("example") is not None for e in envs):
        actions.append(("force_accept", "force-accept (train on it)"))
    if any(e.get("decision") == "accepted" for e in envs):
        actions.append(("force_reject", "force-reject (keep it out of training)"))
    if not actions:
        return "<p>No override applies to this id (dead letters have no example to accept or reject).</p>"
    radios = "".join(f'<label><input type="radio" name="action" value="{h(a)}"{" checked" if i == 0 else ""}>'
                     f"{h(t)}</label> " for i, (a, t) in enumerate(actions))
    who = (f'<p>as <b id="who">{h(ctx["who_fixed"])}</b> (the token\'s owner)</p>' if ctx.get("who_fixed") else
           f'<label>who <input name="who" required maxlength="200" value="{h(ctx.get("who_default", ""))}"></label>')
    where = ("appended to overrides.jsonl; the next <code>sieve curate</code> applies it" if ctx["mode"] == "file"
             else "published on the control topic; <code>sieve batcher</code> applies it")
    return (f'<form id="override-form" method="post" action="/override" data-confirm="yes"><h2>Overrule</h2>'
            f'<input type="hidden" name="csrf" value="{h(ctx["csrf"])}"><input type="hidden" name="id" '
            f'value="{h(ex_id)}">{radios}{who}<label>note (why; required)<textarea name="note" required '
            f'maxlength="2000"></textarea></label><p>The override is {where}.</p>'
            '<button type="submit">Record override</button></form>')


def example_page(store: Any, ctx: Mapping[str, Any], ex_id: str, done: str = "") -> str:
    envs = store.by_id(ex_id)
    if not envs:
        return layout("Not found", f"<p>No envelope with id <b>{h(ex_id)}</b> among the loaded records.</p>", ctx)
    body = f'<p class="ok" id="done">Override recorded: {h(done)}</p>' if done else ""
    if len(envs) > 1:
        body += f'<p class="warn">{h(len(envs))} envelopes carry this id (ids are not unique).</p>'
    body += "".join(envelope_section(store, e) for e in envs)
    history = store.overrides_for(ex_id)
    if history:
        body += "<h2>Overrides recorded for this id</h2>" + overrides_table(history)
    body += override_form(envs, ctx, ex_id)
    return layout(f"Example {ex_id}", body, ctx)


def overrides_table(records: Iterable[Mapping[str, Any]]) -> str:
    rows = [(h(when(r.get("at"))), h(r.get("who")), h(r.get("action")),
             f'<a href="{url("/example", id=r.get("id"))}">{h(r.get("id"))}</a>', h(r.get("note")),
             h(r.get("decision_was")), h(", ".join(r.get("reasons_was") or []))) for r in records]
    return table(("at (UTC)", "who", "action", "id", "note", "decision was", "reasons were"), rows,
                 'id="overrides"')


def overrides_page(store: Any, ctx: Mapping[str, Any]) -> str:
    d = store.data
    where = ("overrides.jsonl in the output directory, applied by the next <code>sieve curate</code> run"
             if ctx["mode"] == "file" else "the control topic, applied by <code>sieve batcher</code>")
    body = notices(d) + f"<p>The audit log: every override recorded in {where}, oldest first; the last one " \
                        "for an id stands.</p>" + overrides_table(d["overrides"])
    return layout("Overrides", body, ctx)


def batches_page(store: Any, ctx: Mapping[str, Any]) -> str:
    if not store.data["batches"]:
        hint = ("pass --batches DIR (the --batches directory of the curate run)" if ctx["mode"] == "file"
                else "no manifest on the batches topic yet")
        return layout("Batches", f"<p>No batches: {h(hint)}.</p>", ctx)
    return layout("Batches", batches_table(store, store.counts()), ctx)


def batch_page(store: Any, ctx: Mapping[str, Any], batch_id: str) -> str:
    b = store.batch(batch_id)
    if b is None:
        return layout("Not found", f"<p>No batch {h(batch_id)} is loaded.</p>", ctx)
    m = b["manifest"]
    body = _kv({"trigger": m.get("trigger"), "examples": (m.get("counts") or {}).get("examples"),
                "opened at": m.get("opened_at"), "closed at": m.get("closed_at"),
                "directory": (m.get("location") or {}).get("dir")})
    body += (f'<p><a href="{url("/list", batch=batch_id, decision="rejected")}">rejections in its window</a> · '
             f'<a href="{url("/list", batch=batch_id, decision="accepted")}">its accepted examples</a></p>')
    if m.get("revoked"):
        body += "<h2>Revoked by operators (drop these ids from earlier batches)</h2>" + overrides_table(m["revoked"])
    if not b["rows"]:
        body += '<p class="warn">Its shard files are not readable from here (pass --batches DIR).</p>'
    rows = sample(b["rows"], SAMPLE_ROWS)
    body += f'<h2>Accepted sample ({h(len(rows))} of {h(len(b["rows"]))} rows, chosen by id hash)</h2>'
    for r in rows:
        mark = ' <span class="badge ok">overridden</span>' if r.get("overridden") else ""
        body += (f'<article class="sample-row"><h4><a href="{url("/example", id=r.get("id"))}">{h(r.get("id"))}</a> '
                 f'· {h(r.get("source") or "unknown")} · {h(r.get("_split"))}{mark}</h4>{example_html(r)}</article>')
    return layout(f"Batch {batch_id}", body, ctx)


def login_page(error: str = "") -> str:
    err = f'<p class="warn">{h(error)}</p>' if error else ""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sieve review: token</title>'
            '<link rel="stylesheet" href="/static/review.css"></head><body><main><h1>Sieve review</h1>'
            f'{err}<form method="post" action="/login"><label>token <input type="password" name="token" '
            'autocomplete="off" required></label> <button type="submit">Enter</button></form></main></body></html>')


def message_page(title: str, text: str, ctx: Mapping[str, Any] | None = None) -> str:
    body = f'<p class="warn" id="message">{h(text)}</p>'
    if ctx is None:
        return f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{h(title)}</title></head>' \
               f"<body><h1>{h(title)}</h1>{body}</body></html>"
    return layout(title, body, ctx)
