"""Summaries of file mode: what ``summary.json`` says, and the values the run report draws.

:class:`Summary` counts decisions by deciding reason and by every reason carried, by
kind of example, source and input file (and the deciding reason by source), and keeps
every score and length value by kind and decision: distributions in ``summary.json``
(:meth:`Summary.to_dict`), histograms in ``report.html`` (:meth:`Summary.report_series`).
Scores that count things (``ScoreSpec.count``: PII redactions) are summed, not
distributed; ``pii_redactions`` sums the ``pii_<kind>`` counts of every output by kind, dead
letters' included.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from quality.envelope import Decision, safe_text
from quality.pipeline import Pipeline
from quality.stage import unmet_needs_message

#: ``kind`` of a decision whose input could not be parsed (it has no example).
UNPARSED = "unparsed"


def _table(factory=Counter) -> defaultdict:
    return defaultdict(factory)


@dataclass
class Summary:
    """Counts and distributions gathered while decisions are written; :meth:`to_dict` is ``summary.json``.

    Scores are kept by kind of example (``sft``, ``preference``) and decision, so a quality
    threshold is read off SFT examples only (pairs are not gated on quality unless
    ``scoring.apply_quality_to_pairs``). ``series`` gives the raw values to the HTML report.
    """

    decisions: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    reasons_carried: Counter = field(default_factory=Counter)
    by_source: dict[str, Counter] = field(default_factory=_table)
    reasons_by_source: dict[str, Counter] = field(default_factory=_table)
    by_kind: dict[str, Counter] = field(default_factory=_table)
    by_file: dict[str, dict[str, Counter]] = field(default_factory=lambda: _table(lambda: _table()))
    # (kind, decision, score name) -> values; lengths likewise, by (kind, decision, length name)
    values: dict[tuple[str, str, str], array] = field(default_factory=lambda: _table(lambda: array("d")))
    lengths: dict[tuple[str, str, str], array] = field(default_factory=lambda: _table(lambda: array("d")))
    other: Counter = field(default_factory=Counter)

    def add(self, d: Decision) -> None:
        self.decisions[d.decision] += 1
        for r in d.reasons:  # every reason carried: contaminated is recorded whatever decided the example
            self.reasons_carried[f"{d.decision}:{r}"] += 1
        source = safe_text(d.example.source) if d.example is not None and d.example.source else "unknown"
        kind = d.example.kind if d.example is not None else UNPARSED
        self.by_source[source][d.decision] += 1
        self.by_kind[kind][d.decision] += 1
        where = self.by_file[str(d.origin.get("file", "?"))] if "file" in d.origin else None
        if where is not None:
            where["decisions"][d.decision] += 1
        for r in d.reasons[:1]:  # the reason that decided; score mode may list several
            key = f"{d.decision}:{r}"
            self.reasons[key] += 1
            self.reasons_by_source[source][key] += 1
            if where is not None:
                where["reasons"][key] += 1
        for name, value in d.scores.items():
            self.values[(kind, d.decision, name)].append(float(value))
        if d.example is not None:
            self.lengths[(kind, d.decision, "prompt_chars")].append(len(d.example.prompt_text))
            self.lengths[(kind, d.decision, "response_chars")].append(len(d.example.response_text))

    def series(self, name: str, kind: str | None = None, decision: str | None = None) -> list[float]:
        """Every value of score ``name`` (of one kind and/or decision, or all of them)."""
        return [v for (k, dec, n), vs in self.values.items()
                if n == name and kind in (None, k) and decision in (None, dec) for v in vs]

    def report_series(self) -> dict[str, dict[str, dict[str, dict[str, array]]]]:
        """What the run report draws: ``{"scores"|"lengths": {kind: {name: {decision: values}}}}``
        (the values as kept, not copied: a run of millions of lines has millions of them)."""
        out: dict[str, dict] = {"scores": {}, "lengths": {}}
        for part, table in (("scores", self.values), ("lengths", self.lengths)):
            for (kind, decision, name), vs in sorted(table.items()):
                out[part].setdefault(kind, {}).setdefault(name, {})[decision] = vs
        return out

    def score_names(self) -> list[str]:
        return sorted({n for _, _, n in self.values})

    def to_dict(self, pipeline: Pipeline, seconds: float) -> dict[str, Any]:
        total = sum(self.decisions.values())
        specs = pipeline.score_specs()
        counted = [n for n in self.score_names() if n in specs and specs[n].count]
        plotted = [n for n in self.score_names() if n not in counted]
        by_kind: dict[str, dict[str, Any]] = {}
        for kind in sorted({k for k, _, _ in self.values}):
            for name in plotted:
                row = {"all": distribution(self.series(name, kind))}
                for decision in sorted({dec for k, dec, n in self.values if k == kind and n == name}):
                    row[decision] = distribution(self.series(name, kind, decision))
                if row["all"] is not None:
                    by_kind.setdefault(kind, {})[name] = row
        counts = {}
        for name in counted:
            xs = self.series(name)
            counts[name] = {"examples": sum(1 for x in xs if x > 0), "total": round(sum(xs), 6)}
        return {
            "total": total,
            "decisions": dict(self.decisions),
            "reasons": dict(sorted(self.reasons.items())),
            "by_kind": {k: dict(v) for k, v in sorted(self.by_kind.items())},
            "reasons_carried": dict(sorted(self.reasons_carried.items())),
            "by_source": {k: dict(v) for k, v in sorted(self.by_source.items())},
            "reasons_by_source": {k: dict(sorted(v.items())) for k, v in sorted(self.reasons_by_source.items())},
            "by_input_file": {f: {"total": sum(t["decisions"].values()), "decisions": dict(t["decisions"]),
                                  "reasons": dict(sorted(t["reasons"].items()))} for f, t in self.by_file.items()},
            "scores": {n: distribution(self.series(n)) for n in plotted},
            "scores_by_kind": by_kind,
            "score_counts": counts,
            # PII findings redacted in every output, dead letters included (their pii_* scores), by kind
            "pii_redactions": {n[4:]: int(sum(self.series(n))) for n in self.score_names() if n.startswith("pii_")},
            "thresholds": pipeline.thresholds(),
            **({"unchecked": {s: unmet_needs_message(st, m) for s, m in pipeline.unmet.items()
                              for st in pipeline.stages if st.name == s}} if pipeline.unmet else {}),
            "stages": pipeline.stats(),
            "seconds": round(seconds, 3),
            "examples_per_s": round(total / seconds, 1) if seconds > 0 else None,
            "versions": pipeline.versions(),
            **({"overrides": pipeline.overrides.report()} if pipeline.overrides is not None else {}),
            **dict(self.other),
        }


def distribution(values: Sequence[float]) -> dict[str, float] | None:
    """count, mean, min, p10, p50, p90 and max of the values (None when there are none)."""
    if not values:
        return None
    xs = sorted(float(v) for v in values)
    n = len(xs)

    def q(p: float) -> float:
        return round(xs[min(n - 1, int(p * (n - 1) + 0.5))], 6)

    return {"count": n, "mean": round(sum(xs) / n, 6), "min": xs[0], "p10": q(0.1), "p50": q(0.5),
            "p90": q(0.9), "max": xs[-1]}

