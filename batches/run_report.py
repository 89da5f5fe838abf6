"""The run-level HTML report of file mode: ``OUT/report.html`` of ``sieve curate``.

One self-contained page (plots as PNG data URIs, no scripts) an operator reads after a
run: what was decided, by source and by input file; why examples were rejected, per
source (the reason x source table); the score distributions of each kind of example
(SFT, preference pairs), accepted against rejected, with the cut of each score drawn
on its histogram; lengths likewise; counted scores (PII redactions) as counts. It
shows aggregates only, never example content, and every name is escaped and whole.
Drawn from ``summary.json`` (:meth:`quality.filemode.Summary.to_dict`) and the raw
values of :meth:`quality.filemode.Summary.report_series`, with the batch report's
plots (:mod:`batches.plots`).
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from batches.plots import CSS, bars, figure, figure_html, hist_grid, require_matplotlib, stacked_bars, table, top

DECISIONS = ("accepted", "rejected", "dead_letter")
#: Sources shown in the reason x source table (the largest); summary.json has all of them.
MAX_SOURCE_ROWS = 300
KIND_NAMES = {"sft": "SFT examples", "preference": "preference pairs"}


def _pct(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.1f}%)" if total else f"{n:,}"


def _decisions_plot(summary: Mapping[str, Any]):
    by_file = {f: t["decisions"] for f, t in summary.get("by_input_file", {}).items()}
    rows = max(len(top({s: 1 for s in summary["by_source"]})), len(top({f: 1 for f in by_file})), 3)
    fig = figure(11.0, 0.45 * rows + 1.4)
    stacked_bars(fig.add_subplot(1, 2, 1), summary["by_source"], DECISIONS, "decisions by source")
    stacked_bars(fig.add_subplot(1, 2, 2), by_file, DECISIONS, "decisions by input file")
    return fig


def _reasons_plot(summary: Mapping[str, Any]):
    rejected = {k.split(":", 1)[1]: n for k, n in summary["reasons"].items() if k.startswith("rejected:")}
    dead = {k.split(":", 1)[1]: n for k, n in summary["reasons"].items() if k.startswith("dead_letter:")}
    fig = figure(11.0, 0.32 * max(len(top(rejected)), len(top(dead)), 3) + 1.4)
    for i, (counts, title, colour) in enumerate(((rejected, "rejections, by deciding reason", "#ee6677"),
                                                 (dead, "dead letters, by reason", "#888888"))):
        ax = fig.add_subplot(1, 2, i + 1)
        if counts:
            bars(ax, counts, title, colour)
        else:
            ax.text(0.5, 0.5, f"no {title.split(',')[0]}", ha="center", va="center")
            ax.set_axis_off()
    return fig


def _reason_source_table(summary: Mapping[str, Any]) -> str:
    by_source = summary.get("reasons_by_source", {})
    totals = Counter()
    for counts in by_source.values():
        totals.update(counts)
    columns = [k for k, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    rows = []
    ranked = sorted(summary["by_source"].items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    for source, decided in ranked[:MAX_SOURCE_ROWS]:
        counts = by_source.get(source, {})
        n = sum(decided.values())
        rows.append([source, n, _pct(decided.get("accepted", 0), n)] + [counts.get(c, "") for c in columns])
    more = (f"<p>{len(ranked) - MAX_SOURCE_ROWS:,} smaller sources more are in summary.json "
            "(<code>reasons_by_source</code>).</p>") if len(ranked) > MAX_SOURCE_ROWS else ""
    return table(rows, ["source", "inputs", "accepted", *columns], cls="reason-source") + more


def _file_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for path, t in summary.get("by_input_file", {}).items():
        reasons = ", ".join(f"{k} {n}" for k, n in sorted(t["reasons"].items(), key=lambda kv: -kv[1])[:5])
        rows.append([path, t["total"], *(_pct(t["decisions"].get(d, 0), t["total"]) for d in DECISIONS), reasons])
    return table(rows, ["input file", "lines", *DECISIONS, "top reasons"], cls="input-files")


def _distribution_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for kind, scores in summary.get("scores_by_kind", {}).items():
        for name, by_decision in scores.items():
            for decision, d in by_decision.items():
                if d:
                    rows.append([kind, name, decision, d["count"], d["min"], d["p10"], d["p50"], d["p90"], d["max"]])
    return table(rows, ["kind", "score", "decision", "count", "min", "p10", "p50", "p90", "max"], cls="scores")


def render_run_report(summary: Mapping[str, Any], series: Mapping[str, Mapping[str, Any]], *,
                      title: str = "Sieve curate run") -> str:
    """The report page of one file-mode run, as HTML text.

    Args:
        summary: what ``summary.json`` holds.
        series: :meth:`quality.filemode.Summary.report_series` of the same run.
    """
    require_matplotlib("file-mode reports")
    counted = set(summary.get("score_counts", {}))
    thresholds = summary.get("thresholds", {})
    total = summary["total"]
    plots = [("decisions", "Decisions by source and by input file: accepted, rejected and dead letters, with "
              "counts; the total at the end of each bar.", _decisions_plot(summary)),
             ("reasons", "Why inputs were rejected (the deciding reason) or dead-lettered, with counts.",
              _reasons_plot(summary))]
    for kind, scores in series.get("scores", {}).items():
        shown = {name: groups for name, groups in scores.items() if name not in counted}
        if shown:
            plots.append((f"scores-{kind}", f"Scores of the {KIND_NAMES.get(kind, kind)}, accepted against rejected "
                          "on shared bins; the dashed line is the cut the run applied to that score.",
                          hist_grid(shown, f"scores: {KIND_NAMES.get(kind, kind)}", "score",
                                    thresholds=thresholds)))
    for kind, lengths in series.get("lengths", {}).items():
        plots.append((f"lengths-{kind}", f"Lengths of the {KIND_NAMES.get(kind, kind)} in characters (log scale when "
                      "they span decades), accepted against rejected.",
                      hist_grid(lengths, f"lengths: {KIND_NAMES.get(kind, kind)}", "characters", log_x=True)))
    decisions = summary["decisions"]
    facts = [("inputs", ", ".join(summary.get("by_input_file", {})) or "-"),
             ("lines decided", f"{total:,}" + (f" (stopped at --limit {summary['limit']})" if "limit" in summary
                                                else "")),
             *((d, _pct(decisions.get(d, 0), total)) for d in DECISIONS),
             ("by kind", "; ".join(f"{k}: " + ", ".join(f"{d} {n:,}" for d, n in v.items())
                                   for k, v in summary.get("by_kind", {}).items())),
             ("cuts", ", ".join(f"{k} {v:g}" for k, v in thresholds.items()) or "none"),
             ("time", f"{summary['seconds']} s ({summary.get('examples_per_s')} inputs/s)"),
             ("sieve version", summary["versions"]["pipeline"])]
    warnings = "".join(f'<p class="warn">{html.escape(text)}</p>' for text in summary.get("unchecked", {}).values())
    counts = table([(name, c["examples"], f"{c['total']:g}") for name, c in sorted(summary["score_counts"].items())],
                   ["counted score", "examples with one", "total found"], cls="score-counts") \
        if summary.get("score_counts") else "<p>None found.</p>"
    head = html.escape(title)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{head}</title>"
            f"<style>{CSS}</style></head><body>\n<h1>{head}</h1>\n{table(facts, cls='facts')}\n{warnings}\n"
            + "\n".join(figure_html(name, caption, fig) for name, caption, fig in plots)
            + "\n<h2 id=\"reason-by-source\">Deciding reason by source</h2>\n" + _reason_source_table(summary)
            + "\n<h2 id=\"by-input-file\">By input file</h2>\n" + _file_table(summary)
            + "\n<h2 id=\"counted\">Counted scores (PII redactions)</h2>\n" + counts
            + "\n<h2 id=\"distributions\">Score distributions by kind and decision</h2>\n"
            + _distribution_table(summary)
            + "\n<p>Every number here is also in <a href=\"summary.json\">summary.json</a>; score names are explained "
              "in docs/scores.md and by <code>sieve score --help</code>.</p>\n</body></html>\n")


def write_run_report(path: Path, summary: Mapping[str, Any], series: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write :func:`render_run_report`'s page to ``path``; returns it."""
    Path(path).write_text(render_run_report(summary, series), encoding="utf-8")
    return Path(path)
