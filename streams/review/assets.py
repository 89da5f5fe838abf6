"""The review page's stylesheet and script, served from ``/static/`` (the Content-Security-Policy
allows scripts and styles from the page's own origin only: no inline script runs, even one
that slipped past escaping)."""

CSS = """\
body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#23313f;color:#fff;padding:.5rem 1rem;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;font-weight:600}
header .src{font-size:.8rem;opacity:.8;margin-left:auto}
header form{margin:0}
main{padding:1rem;max-width:1400px}
table{border-collapse:collapse;margin:.5rem 0 1rem;background:#fff}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
.snippet{max-width:60ch;white-space:pre-wrap;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 .4rem;border-radius:.3rem;font-size:.8rem;background:#ddd}
.accepted{background:#cfe9d2}.rejected{background:#f6d2cf}.dead_letter{background:#e2d6f3}
.side{display:flex;gap:1rem;flex-wrap:wrap}.side>section{flex:1 1 30rem;min-width:20rem}
.msg{border-left:4px solid #aaa;background:#fff;margin:.3rem 0;padding:.3rem .6rem}
.msg .role{font-size:.75rem;color:#555;text-transform:uppercase}
.msg .content,.text{white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:.85rem}
.role-user{border-color:#4a78c2}.role-assistant{border-color:#3b9c4f}.role-system{border-color:#999}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.4rem .6rem;margin:.5rem 0}
.ok{background:#d8f0dc;border:1px solid #7cc38a;padding:.4rem .6rem;margin:.5rem 0}
form.filters{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end;margin:.5rem 0}
form.filters label{display:flex;flex-direction:column;font-size:.8rem}
textarea{width:100%;min-height:4rem}
"""

JS = """\
// Filters apply as soon as a choice changes; the override form asks before it writes.
document.querySelectorAll('form.filters select').forEach(function (s) {
  s.addEventListener('change', function () { s.form.submit(); });
});
var ov = document.getElementById('override-form');
if (ov) {
  ov.addEventListener('submit', function (e) {
    var action = ov.querySelector('[name=action]:checked');
    if (ov.dataset.confirm === 'yes' && !window.confirm('Record ' + (action ? action.value : 'this override') +
        ' for this id? It is kept in the audit log.')) { e.preventDefault(); }
  });
}
"""
