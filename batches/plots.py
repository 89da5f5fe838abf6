"""Plots and tables shared by the HTML reports (one batch: :mod:`batches.report`; one file-mode
run: :mod:`batches.run_report`).

Every figure is drawn with matplotlib's object-oriented API on the Agg renderer (no
pyplot, no display) and embedded as a PNG data URI, so a report is one self-contained
file. matplotlib is imported when a figure is drawn, never at import time. Names on
axes are never cut: a long one is wrapped over lines, so two sources that differ only
at the end still look different; bars carry their counts; histograms can overlay
groups (accepted against rejected) on shared bins and draw each score's cut.
"""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any, Mapping, Sequence

MAX_BARS = 15
#: Colours of the groups a histogram or a stacked bar can show (Paul Tol's bright scheme).
COLOURS = {"accepted": "#228833", "rejected": "#ee6677", "dead_letter": "#bbbbbb", "": "#4477aa",
           "sft": "#4477aa", "preference": "#aa3377"}
LABEL_WIDTH = 34
MAX_LABEL_LINES = 5  # past that a name keeps its first lines and its last (tables have it whole)


def require_matplotlib(what: str = "reports") -> None:
    """Raise ImportError with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{what} need matplotlib: pip install 'sieve[batches]' (or matplotlib)") from exc


def figure(width: float = 7.0, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def top(counts: Mapping[str, int], limit: int = MAX_BARS) -> list[tuple[str, int]]:
    """The ``limit`` largest counts, the rest summed into one ``(other N)`` entry."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(items) > limit:
        rest = sum(n for _, n in items[limit - 1:])
        items = items[:limit - 1] + [(f"(other {len(items) - limit + 1})", rest)]
    return items


def label(name: str, width: int = LABEL_WIDTH) -> str:
    """The whole name, wrapped over lines of at most ``width`` characters, preferably after a
    ``/``, ``:``, ``_``, ``-`` or space (never cut short)."""
    lines, line = [], ""
    for token in re.findall(r"[^/:_\- ]*[/:_\- ]?", name):
        while len(token) > width:  # a token longer than a line: cut it hard
            if line:
                lines.append(line)
                line = ""
            lines.append(token[:width])
            token = token[width:]
        if len(line) + len(token) > width and line:
            lines.append(line)
            line = ""
        line += token
    if line:
        lines.append(line)
    if len(lines) > MAX_LABEL_LINES:  # an absurdly long name: its start and its end, which tell names apart
        lines = lines[:MAX_LABEL_LINES - 2] + ["...", lines[-1]]
    return ("\n".join(lines) or name).replace("$", r"\$")  # a $ would start matplotlib's math mode


def _groups(values: Sequence[float] | Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """``{group: float64 array}`` of the non-empty groups (an ``array('d')`` is not copied)."""
    import numpy as np

    if isinstance(values, Mapping):
        return {g: np.asarray(vs, dtype=np.float64) for g, vs in values.items() if len(vs)}
    return {"": np.asarray(values, dtype=np.float64)} if len(values) else {}


def hist_grid(series: Mapping[str, Sequence[float] | Mapping[str, Sequence[float]]], title: str, xlabel: str,
              log_x: bool = False, thresholds: Mapping[str, float] | None = None, cols: int = 3):
    """One histogram per name. A name's values may be grouped (``{"accepted": [...], "rejected":
    [...]}``): the groups share bins and are drawn over each other. ``thresholds[name]`` is drawn as a
    dashed line with its value."""
    import numpy as np

    names = [n for n in series if _groups(series[n])]
    cols = max(1, min(cols, len(names)))
    rows = max(1, (len(names) + cols - 1) // cols)
    fig = figure(3.6 * cols, 2.8 * rows)
    fig.suptitle(title)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        groups = _groups(series[name])
        if log_x:
            groups = {g: np.maximum(vs, 1.0) for g, vs in groups.items()}
        every = np.concatenate(list(groups.values()))
        lo, hi = float(every.min()), float(every.max())
        if log_x and lo > 0 and hi / lo > 10:  # lengths span decades: log bins; a narrow range stays linear
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            bins = np.geomspace(lo, hi, 30)
        else:
            bins = np.histogram_bin_edges(every, bins=30)
        several = len(groups) > 1
        for group, values in groups.items():
            ax.hist(values, bins=bins, color=COLOURS.get(group, "#4477aa"), alpha=0.55 if several else 1.0,
                    label=f"{group} ({len(values)})" if group else None, histtype="stepfilled")
        t = (thresholds or {}).get(name)
        if t is not None:
            ax.axvline(t, color="#222222", linestyle="--", linewidth=1.2, label=f"cut {t:g}")
        if any(groups) or t is not None:
            ax.legend(fontsize=6)
        ax.set_title(f"{name} (n={len(every)})", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def bars(ax, counts: Mapping[str, int], title: str, color: str) -> None:
    """Horizontal bars, largest first, each with its count; names whole (wrapped)."""
    items = top(counts)
    ys = list(range(len(items)))[::-1]
    drawn = ax.barh(ys, [n for _, n in items], color=color)
    ax.bar_label(drawn, labels=[f"{n:,}" for _, n in items], fontsize=7, padding=2)
    ax.set_yticks(ys, [label(k) for k, _ in items], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.margins(x=0.15)


def stacked_bars(ax, rows: Mapping[str, Mapping[str, int]], groups: Sequence[str], title: str) -> None:
    """One horizontal bar per row (e.g. a source), stacked by group (e.g. decision), the total at its end."""
    totals = {k: sum(v.values()) for k, v in rows.items()}
    items = [k for k, _ in top(totals) if k in rows]
    if not items:
        ax.text(0.5, 0.5, f"{title}: nothing", ha="center", va="center")
        ax.set_axis_off()
        return
    ys = list(range(len(items)))[::-1]
    left = [0] * len(items)
    for group in groups:
        widths = [rows[k].get(group, 0) for k in items]
        if any(widths):
            drawn = ax.barh(ys, widths, left=left, color=COLOURS.get(group, "#4477aa"), label=group)
            ax.bar_label(drawn, labels=[f"{w:,}" if w else "" for w in widths], label_type="center", fontsize=6)
            left = [a + b for a, b in zip(left, widths)]
    for y, k in zip(ys, items):
        ax.text(totals[k], y, f" {totals[k]:,}", va="center", fontsize=7)
    ax.set_yticks(ys, [label(k) for k in items], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    ax.tick_params(axis="x", labelsize=7)
    ax.margins(x=0.12)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, cls: str | None = None) -> str:
    """An HTML table; every cell escaped."""
    esc = lambda v: html.escape("" if v is None else str(v))  # noqa: E731
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def figure_html(name: str, caption: str, fig) -> str:
    return (f'<figure id="{html.escape(name)}"><img alt="{html.escape(caption)}" src="{png(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;"
       "font-size:13px;text-align:left}td.n,th.n{text-align:right}figure{margin:1em 0}"
       "figcaption{font-size:13px;color:#555}code{font-size:12px}.warn{color:#a40}")
