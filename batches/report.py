"""The HTML report of one fine-tuning batch: one self-contained page a person opens in a browser.

The page embeds its plots as PNG data URIs (no other files, no scripts):
score histograms, length histograms, source and category mix, rejection reasons
over the batch's window (totals and, when the window spans several minutes, over
time) and duplicate rates; PII redactions and transcripts split into turns as counts in the
summary table. It shows aggregates only, never example content.
matplotlib is imported when a report is drawn, never at import time, and only
through its object-oriented API with the Agg renderer (no pyplot, no display).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

MAX_BARS = 15


def require_matplotlib() -> None:
    """Raise ImportError with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("batch reports need matplotlib: pip install 'sieve[batches]' (or matplotlib), "
                          "or turn reports off with batches.report = false") from exc


def _figure(width: float = 7.0, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _top(counts: Mapping[str, int], limit: int = MAX_BARS) -> list[tuple[str, int]]:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(items) > limit:
        rest = sum(n for _, n in items[limit - 1:])
        items = items[:limit - 1] + [(f"(other {len(items) - limit + 1})", rest)]
    return items


def _hist_grid(series: Mapping[str, Sequence[float]], title: str, xlabel: str, log_x: bool = False):
    names = [n for n in series if series[n]]
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig = _figure(3.4 * cols, 2.6 * rows)
    fig.suptitle(title)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = [max(1.0, float(v)) for v in series[name]] if log_x else [float(v) for v in series[name]]
        lo, hi = (min(values), max(values)) if values else (0, 0)
        if log_x and lo > 0 and hi / lo > 10:  # lengths span decades: log bins; a narrow range stays linear
            import numpy as np
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.hist(values, bins=np.geomspace(lo, hi, 30), color="#4477aa")
        else:
            ax.hist(values, bins=30, color="#4477aa")
        ax.set_title(f"{name} (n={len(values)})", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def _bars(ax, counts: Mapping[str, int], title: str, color: str) -> None:
    items = _top(counts)
    labels = [k if len(k) <= 40 else k[:37] + "..." for k, _ in items]
    ax.barh(range(len(items))[::-1], [n for _, n in items], color=color)
    ax.set_yticks(range(len(items))[::-1], labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)


def _mix_plot(balance: Mapping[str, Mapping[str, Mapping[str, float]]]):
    sources = {k: v["count"] for k, v in balance["source"].items()}
    categories = {k: v["count"] for k, v in balance["category"].items()}
    fig = _figure(9.0, 0.35 * max(len(_top(sources)), len(_top(categories)), 3) + 1.2)
    _bars(fig.add_subplot(1, 2, 1), sources, "examples by source", "#228833")
    _bars(fig.add_subplot(1, 2, 2), categories, "examples by category (metadata.category)", "#ccbb44")
    return fig


def _reasons_plot(window: Mapping[str, Any], timeline: Sequence[tuple[float, str, int]]):
    reasons = window.get("reasons") or {}
    bins = sorted({t for t, _, _ in timeline})
    over_time = len(bins) >= 3
    fig = _figure(9.0 if over_time else 6.0, 0.3 * max(len(_top(reasons)), 3) + 1.4)
    ax = fig.add_subplot(1, 2 if over_time else 1, 1)
    if reasons:
        _bars(ax, reasons, "rejections by reason in the batch window", "#ee6677")
    else:
        ax.text(0.5, 0.5, "no rejections in this window", ha="center", va="center")
        ax.set_axis_off()
    if over_time:
        from datetime import datetime, timezone

        ax2 = fig.add_subplot(1, 2, 2)
        top = [r for r, _ in _top(reasons, 8) if not r.startswith("(other")]
        index = {t: i for i, t in enumerate(bins)}
        stacks = {r: [0] * len(bins) for r in top}
        for t, r, n in timeline:
            if r in stacks:
                stacks[r][index[t]] += n
        xs = [datetime.fromtimestamp(t, timezone.utc) for t in bins]
        ax2.stackplot(xs, list(stacks.values()), labels=list(stacks))
        ax2.set_title("rejections per minute (UTC)", fontsize=9)
        ax2.legend(fontsize=6, loc="upper left")
        ax2.tick_params(labelsize=7)
        ax2.tick_params(axis="x", labelrotation=30)
    return fig


def _duplicates_plot(window: Mapping[str, Any], content_dups: int, examples: int):
    rates = dict(window.get("duplicate_rates") or {})
    rates["repeated content\n(% of batch)"] = content_dups / examples if examples else 0.0
    fig = _figure(6.0, 2.6)
    ax = fig.add_subplot(1, 1, 1)
    names = list(rates)
    ax.bar(names, [100 * rates[n] for n in names], color="#aa3377")
    for i, n in enumerate(names):
        ax.text(i, 100 * rates[n], f"{100 * rates[n]:.2f}%", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("% of decisions in window", fontsize=8)
    ax.set_title("duplicate rates", fontsize=9)
    ax.tick_params(labelsize=7)
    return fig


def _pii_line(pii: Mapping[str, Any] | None) -> str:
    """PII findings redacted in the batch's examples, as counts by kind."""
    if not pii or not pii.get("by_kind"):
        return "none"
    kinds = ", ".join(f"{k}: {n}" for k, n in pii["by_kind"].items())
    return f"{kinds} (in {pii['examples']} example{'s' if pii['examples'] != 1 else ''})"


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    esc = lambda v: html.escape("" if v is None else str(v))  # noqa: E731
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;"
        "font-size:13px;text-align:left}figure{margin:1em 0}figcaption{font-size:13px;color:#555}"
        "code{font-size:12px}")


def render_report(manifest: Mapping[str, Any], series: Mapping[str, Mapping[str, Sequence[float]]],
                  timeline: Sequence[tuple[float, str, int]] = ()) -> str:
    """The report page of a batch, as HTML text.

    Args:
        manifest: the batch manifest (files, counts, balance, window, versions).
        series: ``{"scores": {name: values}, "lengths": {name: values}}`` of the batch's examples.
        timeline: ``(bin start unix time, reason, count)`` of rejections in the window.
    """
    require_matplotlib()
    plots: list[tuple[str, str, Any]] = []
    if any(series.get("scores", {}).values()):
        plots.append(("scores", "Score histograms of the accepted examples.",
                      _hist_grid(series["scores"], "scores", "score")))
    if any(series.get("lengths", {}).values()):
        lengths = {k: v for k, v in series["lengths"].items() if k != "turns"}
        plots.append(("lengths", "Length histograms in characters (log scale when they span decades): prompt, "
                      "trained-on response, whole example.", _hist_grid(lengths, "lengths", "characters", log_x=True)))
    plots.append(("mix", "Source and category mix of the batch.", _mix_plot(manifest["balance"])))
    plots.append(("reasons", "Why examples were rejected while this batch was open.",
                  _reasons_plot(manifest["window"], timeline)))
    plots.append(("duplicates", "Share of the window's decisions rejected as exact, near or semantic duplicates; "
                  "accepted ids delivered again; repeated content inside the batch.",
                  _duplicates_plot(manifest["window"], manifest["stats"]["content_duplicates_in_batch"],
                                   manifest["counts"]["examples"])))
    counts, window, refusals = manifest["counts"], manifest["window"], manifest["refusals"]
    summary = _table([
        ("batch id", manifest["batch_id"]), ("closed by", manifest["trigger"]),
        ("opened / closed", f"{manifest['opened_at']} / {manifest['closed_at']}"),
        ("examples", counts["examples"]),
        ("train / validation", f"{counts['by_split']['train']} / {counts['by_split']['validation']} "
                               f"(validation ratio {manifest['split']['validation_ratio']})"),
        ("by kind", ", ".join(f"{k}: {v['train']} + {v['validation']}" for k, v in counts["by_kind"].items())),
        ("refusal share", f"{100 * refusals['share']:.2f}% ({refusals['count']})"),
        ("PII redacted", _pii_line(manifest["stats"].get("pii_redactions"))),
        ("transcripts split into turns", ", ".join(f"{k}: {n}" for k, n in
                                                   (manifest["stats"].get("transcripts_converted") or {}).items())
         or "none"),
        ("window", f"{window['start']} to {window['end']}; decisions {window['decisions']}"),
        ("sieve version", manifest["versions"]["sieve"]),
    ])
    files = _table([(f["path"], f["rows"], f["bytes"], f["sha256"]) for f in manifest["files"]],
                   ("file", "rows", "bytes", "sha256"))
    figures = []
    for name, caption, fig in plots:
        figures.append(f'<figure id="{name}"><img alt="{html.escape(caption)}" src="{_png(fig)}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    title = html.escape(f"Sieve batch {manifest['batch_id']}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>{title}</h1>\n{summary}\n"
            + "\n".join(figures)
            + f"\n<h2>Files</h2>\n<p>Checksums of every file are in <a href=\"manifest.json\">manifest.json</a>."
              f"</p>\n{files}\n</body></html>\n")


def write_report(path: Path, manifest: Mapping[str, Any], series: Mapping[str, Mapping[str, Sequence[float]]],
                 timeline: Sequence[tuple[float, str, int]] = ()) -> None:
    """Write :func:`render_report`'s page to ``path``."""
    Path(path).write_text(render_report(manifest, series, timeline), encoding="utf-8")
