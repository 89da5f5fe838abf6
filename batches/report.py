"""The HTML report of one fine-tuning batch: one self-contained page a person opens in a browser.

The page embeds its plots as PNG data URIs (no other files, no scripts):
score histograms, length histograms, source and category mix, rejection reasons
over the batch's window (totals and, when the window spans several minutes, over
time) and duplicate rates; counted scores (PII redactions by kind) are a table of
counts, not histograms, and so are the transcripts split into turns. It shows aggregates
only, never example content. The plot helpers are shared with the file-mode run report
(:mod:`batches.plots`).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Sequence

from batches.plots import CSS, bars, figure, figure_html, hist_grid, table, top


def require_matplotlib() -> None:
    """Raise ImportError with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("batch reports need matplotlib: pip install 'sieve[batches]' (or matplotlib), "
                          "or turn reports off with batches.report = false") from exc


def _mix_plot(balance: Mapping[str, Mapping[str, Mapping[str, float]]]):
    sources = {k: v["count"] for k, v in balance["source"].items()}
    categories = {k: v["count"] for k, v in balance["category"].items()}
    fig = figure(9.0, 0.35 * max(len(top(sources)), len(top(categories)), 3) + 1.2)
    bars(fig.add_subplot(1, 2, 1), sources, "examples by source", "#228833")
    bars(fig.add_subplot(1, 2, 2), categories, "examples by category (metadata.category)", "#ccbb44")
    return fig


def _reasons_plot(window: Mapping[str, Any], timeline: Sequence[tuple[float, str, int]]):
    reasons = window.get("reasons") or {}
    bins = sorted({t for t, _, _ in timeline})
    over_time = len(bins) >= 3
    fig = figure(9.0 if over_time else 6.0, 0.3 * max(len(top(reasons)), 3) + 1.4)
    ax = fig.add_subplot(1, 2 if over_time else 1, 1)
    if reasons:
        bars(ax, reasons, "rejections by reason in the batch window", "#ee6677")
    else:
        ax.text(0.5, 0.5, "no rejections in this window", ha="center", va="center")
        ax.set_axis_off()
    if over_time:
        from datetime import datetime, timezone

        ax2 = fig.add_subplot(1, 2, 2)
        shown = [r for r, _ in top(reasons, 8) if not r.startswith("(other")]
        index = {t: i for i, t in enumerate(bins)}
        stacks = {r: [0] * len(bins) for r in shown}
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
    fig = figure(6.0, 2.6)
    ax = fig.add_subplot(1, 1, 1)
    names = list(rates)
    ax.bar(names, [100 * rates[n] for n in names], color="#aa3377")
    for i, n in enumerate(names):
        ax.text(i, 100 * rates[n], f"{100 * rates[n]:.2f}%", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("% of decisions in window", fontsize=8)
    ax.set_title("duplicate rates", fontsize=9)
    ax.tick_params(labelsize=7)
    return fig


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
        plots.append(("scores", "Score histograms of the accepted examples (counted scores, such as PII "
                      "redactions, are in the table above).", hist_grid(series["scores"], "scores", "score")))
    if any(series.get("lengths", {}).values()):
        lengths = {k: v for k, v in series["lengths"].items() if k != "turns"}
        plots.append(("lengths", "Length histograms in characters (log scale when they span decades): prompt, "
                      "trained-on response, whole example.", hist_grid(lengths, "lengths", "characters", log_x=True)))
    plots.append(("mix", "Source and category mix of the batch.", _mix_plot(manifest["balance"])))
    plots.append(("reasons", "Why examples were rejected while this batch was open.",
                  _reasons_plot(manifest["window"], timeline)))
    plots.append(("duplicates", "Share of the window's decisions rejected as exact, near or semantic duplicates; "
                  "accepted ids delivered again; repeated content inside the batch.",
                  _duplicates_plot(manifest["window"], manifest["stats"]["content_duplicates_in_batch"],
                                   manifest["counts"]["examples"])))
    counts, window, refusals = manifest["counts"], manifest["window"], manifest["refusals"]
    summary = table([
        ("batch id", manifest["batch_id"]), ("closed by", manifest["trigger"]),
        ("opened / closed", f"{manifest['opened_at']} / {manifest['closed_at']}"),
        ("examples", counts["examples"]),
        ("train / validation", f"{counts['by_split']['train']} / {counts['by_split']['validation']} "
                               f"(validation ratio {manifest['split']['validation_ratio']})"),
        ("by kind", ", ".join(f"{k}: {v['train']} + {v['validation']}" for k, v in counts["by_kind"].items())),
        ("refusal share", f"{100 * refusals['share']:.2f}% ({refusals['count']})"),
        ("transcripts split into turns", ", ".join(f"{k}: {n}" for k, n in
                                                   (manifest["stats"].get("transcripts_converted") or {}).items())
         or "none"),
        ("window", f"{window['start']} to {window['end']}; decisions {window['decisions']}"),
        *[(f"{name} (counted)", f"{c['total']:g} in {c['examples']} example(s)")
          for name, c in sorted((manifest["stats"].get("score_counts") or {}).items())],
        ("sieve version", manifest["versions"]["sieve"]),
    ])
    files = table([(f["path"], f["rows"], f["bytes"], f["sha256"]) for f in manifest["files"]],
                   ("file", "rows", "bytes", "sha256"))
    figures = [figure_html(name, caption, fig) for name, caption, fig in plots]
    title = html.escape(f"Sieve batch {manifest['batch_id']}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{CSS}</style></head><body>\n<h1>{title}</h1>\n{summary}\n"
            + "\n".join(figures)
            + f"\n<h2>Files</h2>\n<p>Checksums of every file are in <a href=\"manifest.json\">manifest.json</a>."
              f"</p>\n{files}\n</body></html>\n")


def write_report(path: Path, manifest: Mapping[str, Any], series: Mapping[str, Mapping[str, Sequence[float]]],
                 timeline: Sequence[tuple[float, str, int]] = ()) -> None:
    """Write :func:`render_report`'s page to ``path``."""
    Path(path).write_text(render_report(manifest, series, timeline), encoding="utf-8")
