"""Repetition: degenerate loops in the response (a line, sentence, paragraph, list item or
phrase restated over and over), told apart from structure that repeats by design.

Like every heuristic filter (this folder), a :class:`~quality.stage.Stage` whose
``check`` returns a reason or keeps the example; bounds are keyword arguments validated
in ``__init__``. The response is first cut into units (lines by kind, list items by
list, paragraphs, sentences) by :mod:`quality.filters.repetition_units`; the rules here
count restatements of those units.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from quality.filters.common import FilterSettings, fraction, judged_responses
from quality.filters.repetition_units import (SONG_LABEL, VERSE_PROMPT, Line, Unit, classify_lines,
                                              looks_like_verse, paragraph_units, prose_units, sentence_units,
                                              unit_key)
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import KEEP, Stage, Verdict


def _verse_restated_frac(lines: list[Line]) -> float:
    """Share of verse restating earlier lines. A chorus restates lines by design: under a
    chorus label, a line's first four copies are free (a chorus sung ten times is not)."""
    counts: Counter = Counter()
    restated = total = 0
    for ln in lines:
        if ln.kind in ("text", "item"):
            total += len(ln.content)
            if ln.words >= 3:
                counts[ln.key] += 1
                if counts[ln.key] > (4 if ln.chorus else 1):
                    restated += len(ln.content)
    return restated / max(total, 1)


def _restatements(units: list[Unit]) -> tuple[Counter, Counter, int]:
    """Occurrences of each unit of 3 words or more, the characters restating each, and all characters."""
    counts: Counter = Counter()
    restated_by: Counter = Counter()
    total = 0
    for key, words, chars in units:
        total += chars
        if words >= 3:
            counts[key] += 1
            if counts[key] > 1:
                restated_by[key] += chars
    return counts, restated_by, total


def _longest_unit_run(units: list[Unit], min_words: int, min_repeats: int) -> int:
    """The longest run of one unit repeated back to back, if it is a loop: ``min_repeats``
    copies of a unit of ``min_words`` words or more, or one copy more of a shorter one
    (3 words at least: "I hope this helps! I hope this helps! ...")."""
    best = run = 0
    previous = None
    for key, words, _ in units:
        run = run + 1 if key == previous and words >= 3 else 1
        previous = key
        if run >= (min_repeats if words >= min_words else min_repeats + 1):
            best = max(best, run)
    return best


def _variants(units: list[tuple[str, int, int]], min_words: int) -> tuple[int, int]:
    """The largest group of long sentences that differ from one another in one word at most,
    as (sentences, characters); exact copies alone are not a group (see ``sentence_repeated``)."""
    by_len: dict[int, list[tuple[list[str], int]]] = {}
    for key, words, chars in units:
        if words >= min_words:
            toks = key.split()
            by_len.setdefault(len(toks), []).append((toks, chars))
    best = (0, 0)
    for group in by_len.values():
        if len(group) < 4 or len(group) <= best[0] or len({" ".join(t) for t, _ in group}) < 2:
            continue
        for i in range(len(group[0][0])):
            masked: dict[str, list[tuple[list[str], int]]] = {}
            for toks, chars in group:
                masked.setdefault(" ".join(toks[:i] + toks[i + 1:]), []).append((toks, chars))
            for members in masked.values():
                if len(members) > best[0] and len({tuple(t) for t, _ in members}) >= 2:
                    best = (len(members), sum(c for _, c in members))
    return best


def _phrase_loop(tokens: list[str]) -> int | None:
    """Fewest distinct words in a window of 40 or 80 words (all of a line of 20 to 40), when a
    quarter or fewer: a phrase repeated without sentence breaks ("the masked singer, the
    mandalorian, ..."). Natural prose keeps more distinct: at the least 15 of 40 and 26 of
    80 on the dev data."""
    fewest = None
    if len(tokens) < 20:
        return None
    for size in (min(40, len(tokens)), 80):
        if len(tokens) < size:
            break
        for start in [*range(0, len(tokens) - size + 1, size // 4), len(tokens) - size]:
            window = tokens[start:start + size]
            distinct = len(set(window))
            if distinct <= size // 4 and (fewest is None or distinct < fewest) and not all(
                    t.isdigit() for t in window):
                fewest = distinct
    return fewest


@register(rank=50, section="filters", settings=FilterSettings,
          build=lambda s, _: RepetitionFilter(min_repeats=s.repetition_min_repeats,
                                              max_restated_frac=s.repetition_max_restated_frac))
class RepetitionFilter(Stage):
    """Rejects degenerate loops: a line, sentence, paragraph or list item restated over and over.

    What repeats by design passes: a chorus, code and table rows, list items that share a
    template around distinct values, the restated phrases of a worked solution. The rules
    count restatements of whole units, not shared n-grams, and each kind of line has its
    own rule (the detail of a rejection names the rule that fired):

    * ``line_run``: the same line ``min_repeats`` times in a row (code lines:
      ``code_min_run``; lines of fewer than 3 words, e.g. ASCII art: ``symbol_min_run``);
      ``line_share``: one line making up half of 10 lines or more;
    * ``list_item_restated``: a list whose items of 3 words or more restate earlier items of
      the same list at least twice and for at least ``max_list_restated_frac`` of its items;
    * ``sentence_run``: the same sentence of ``min_sentence_words`` words or more
      ``min_repeats`` times in a row; ``sentence_repeated``: such a sentence ``min_repeats``
      times anywhere, its copies making up ``min_loop_frac`` of the text (or twice as many
      copies anywhere);
    * ``restated_frac`` / ``paragraph_restated_frac``: sentences or paragraphs that restate
      earlier ones make up more than ``max_restated_frac`` of the response (a paragraph or
      the whole answer restated once);
    * ``sentence_variants``: 4 or more sentences of 10 words or more that differ in one word;
    * ``phrase_loop``: a phrase repeated without sentence breaks: a window of 40 or 80 words
      with a quarter or fewer distinct.

    Verse (the prompt asks for a song, poem, rap, tune...; the response has verse/chorus
    labels; or eight short lines, most without a full stop) restates its chorus by design:
    there only ``verse_max_restated_frac`` of the lines restated, or the line rules, reject,
    and a labelled chorus line's first four copies are free. Code (fenced, indented, or
    lines that parse as code) and table or markup rows count only in the line rules and as
    whole blocks of 3 lines or more. A list item restating an item of another list (the
    same exercise under "Monday:" and "Wednesday:") is structure.
    Measured on the development data in docs/eval_heuristics.md (bench/eval_heuristics.py).
    """

    name = "repetition"
    reasons = frozenset({Reason.REPETITIVE})

    def __init__(self, *, min_repeats: int = 3, min_sentence_words: int = 5, min_loop_frac: float = 0.15,
                 max_restated_frac: float = 0.3, verse_max_restated_frac: float = 0.5,
                 max_list_restated_frac: float = 0.2, code_min_run: int = 5, symbol_min_run: int = 20) -> None:
        super().__init__()
        for name, value, least in (("min_repeats", min_repeats, 2), ("min_sentence_words", min_sentence_words, 1),
                                   ("code_min_run", code_min_run, 2), ("symbol_min_run", symbol_min_run, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        for name, value in (("min_loop_frac", min_loop_frac), ("max_restated_frac", max_restated_frac),
                            ("verse_max_restated_frac", verse_max_restated_frac),
                            ("max_list_restated_frac", max_list_restated_frac)):
            fraction(name, value)
        self.min_repeats = min_repeats
        self.min_sentence_words = min_sentence_words
        self.min_loop_frac = min_loop_frac
        self.max_restated_frac = max_restated_frac
        self.verse_max_restated_frac = verse_max_restated_frac
        self.max_list_restated_frac = max_list_restated_frac
        self.code_min_run = code_min_run
        self.symbol_min_run = symbol_min_run

    def check(self, ex: Example) -> Verdict:
        for text in judged_responses(ex):
            detail = self._why(text, ex.prompt_text)
            if detail:
                return Verdict(Reason.REPETITIVE, detail=detail)
        return KEEP

    def _why(self, text: str, prompt: str = "") -> str | None:
        lines = classify_lines(text)
        if not lines:
            return None
        return (self._line_loop(lines) or self._list_loop(lines) or self._sentence_loop(lines, prompt)
                or self._phrase_loop(lines))

    def _line_loop(self, lines: list[Line]) -> str | None:
        start = 0
        for i in range(1, len(lines) + 1):
            if i < len(lines) and lines[i].key == lines[start].key:
                continue
            ln, run = lines[start], i - start
            if run >= (self.symbol_min_run if ln.words < 3 else self.code_min_run if ln.kind == "code"
                       else self.min_repeats):
                return f"line_run={run}x"
            start = i
        count = max(Counter(ln.key for ln in lines if len(ln.key) >= 4).values(), default=0)
        if count >= 10 and count * 2 >= len(lines):
            return f"line_share={count}/{len(lines)}"
        return None

    def _sentence_loop(self, lines: list[Line], prompt: str) -> str | None:
        counts, restated_by, _ = _restatements(prose_units(lines))
        blocks, total = paragraph_units(lines)  # shares are of the whole response
        _, block_restated, _ = _restatements(blocks)
        if (restated_by or block_restated) and (
                VERSE_PROMPT.search(prompt) or looks_like_verse(lines)
                or any(ln.kind == "heading" and SONG_LABEL.match(ln.content) for ln in lines)):
            frac = _verse_restated_frac(lines)
            return f"restated_frac={frac:.2f}" if frac >= self.verse_max_restated_frac else None
        run = _longest_unit_run(sentence_units(lines), self.min_sentence_words, self.min_repeats)
        if run:
            return f"sentence_run={run}x"
        for key, chars in restated_by.items():
            n = counts[key]
            if n >= self.min_repeats and unit_key(key)[1] >= self.min_sentence_words and (
                    chars >= self.min_loop_frac * total or n >= 2 * self.min_repeats):
                return f"sentence_repeated={n}x"
        frac = sum(restated_by.values()) / max(total, 1)
        if frac > self.max_restated_frac:
            return f"restated_frac={frac:.2f}"
        frac = sum(block_restated.values()) / max(total, 1)
        if frac > self.max_restated_frac:
            return f"paragraph_restated_frac={frac:.2f}"
        group, chars = _variants(sentence_units(lines, ("text",)), 10)
        if group >= 4 and chars >= 2 * self.min_loop_frac * total:
            return f"sentence_variants={group}"
        return None

    def _phrase_loop(self, lines: list[Line]) -> str | None:
        for ln in lines:
            if ln.kind in ("text", "item", "heading") and ln.key.count(" ") >= 19:
                distinct = _phrase_loop([t for t in ln.key.split() if t.strip("_")])
                if distinct is not None:
                    return f"phrase_loop={distinct}_distinct_words"
        return None

    def _list_loop(self, lines: list[Line]) -> str | None:
        lists: dict[int, list[Line]] = {}
        for ln in lines:
            if ln.kind == "item":
                lists.setdefault(ln.list_id, []).append(ln)
        for items in lists.values():
            seen: set[str] = set()
            restated = 0
            for item in items:
                if item.words >= 3:
                    restated += item.key in seen
                    seen.add(item.key)
            if restated >= 2 and restated >= self.max_list_restated_frac * len(items):
                return f"list_item_restated={restated}/{len(items)}"
        return None

    def version(self) -> Mapping[str, Any]:
        return {"min_repeats": self.min_repeats, "max_restated_frac": self.max_restated_frac,
                "verse_max_restated_frac": self.verse_max_restated_frac,
                "min_sentence_words": self.min_sentence_words, "min_loop_frac": self.min_loop_frac,
                "max_list_restated_frac": self.max_list_restated_frac, "code_min_run": self.code_min_run,
                "symbol_min_run": self.symbol_min_run}


# What a canned answer says about itself. A roleplay (see below) may be an AI character
