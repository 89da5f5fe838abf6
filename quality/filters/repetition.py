"""Heuristic filters: the cheap checks that run before anything costly.

Each filter is a :class:`~quality.stage.Stage` whose ``check`` returns a reason or
keeps the example. Bounds are keyword arguments validated in ``__init__``; the
defaults are chosen to keep real instruction data (short but correct answers such as
"4" or "No" pass) and drop what is broken.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping

from quality.reasons import Reason
from quality.records import Example
from quality.stage import KEEP, Stage, Verdict

_WORD = re.compile(r"\w+", re.UNICODE)


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _fraction(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def _responses(ex: Example) -> list[str]:
    """The text whose quality these filters judge: the response, or a pair's chosen side.

    A pair's rejected side is meant to be worse (a degenerate or repetitive answer makes
    a useful pair), so only its emptiness matters, and :class:`quality.pairs.PairStructureFilter`
    checks that (``pair_empty_side``).
    """
    return [ex.response_text]


class EmptyFilter(Stage):
    """Rejects examples whose prompt or response is empty after normalization."""

    name = "empty"
    reasons = frozenset({Reason.EMPTY_PROMPT, Reason.EMPTY_RESPONSE})

    def check(self, ex: Example) -> Verdict:
        if not ex.prompt_text.strip():
            return Verdict(Reason.EMPTY_PROMPT)
        if any(not text.strip() for text in _responses(ex)):
            return Verdict(Reason.EMPTY_RESPONSE)
        return KEEP


class LengthFilter(Stage):
    """Rejects responses that are too short and examples that are too long.

    Args:
        min_response_chars: shortest acceptable response (each side of a pair).
        min_total_words: fewest words in prompt and response together.
        max_total_chars: longest acceptable example, all turns together.
    """

    name = "length"
    reasons = frozenset({Reason.TOO_SHORT, Reason.TOO_LONG})

    def __init__(self, *, min_response_chars: int = 1, min_total_words: int = 3,
                 max_total_chars: int = 60_000) -> None:
        super().__init__()
        _positive("min_response_chars", min_response_chars, allow_zero=True)
        _positive("min_total_words", min_total_words, allow_zero=True)
        _positive("max_total_chars", max_total_chars)
        if max_total_chars <= min_response_chars:
            raise ValueError(f"max_total_chars ({max_total_chars}) must exceed min_response_chars ({min_response_chars})")
        self.min_response_chars = min_response_chars
        self.min_total_words = min_total_words
        self.max_total_chars = max_total_chars

    def check(self, ex: Example) -> Verdict:
        total_chars = sum(len(t) for t in ex.texts())
        if total_chars > self.max_total_chars:
            return Verdict(Reason.TOO_LONG, detail=f"{total_chars} chars")
        responses = _responses(ex)
        if min(len(t) for t in responses) < self.min_response_chars:
            return Verdict(Reason.TOO_SHORT)
        words = len(_WORD.findall(ex.prompt_text)) + len(_WORD.findall(responses[0]))
        if words < self.min_total_words:
            return Verdict(Reason.TOO_SHORT, detail=f"{words} words")
        return KEEP

    def version(self) -> Mapping[str, Any]:
        return {"min_response_chars": self.min_response_chars, "min_total_words": self.min_total_words,
                "max_total_chars": self.max_total_chars}


def _dup_fractions(items: list[str]) -> tuple[float, float]:
    """Share of items, and of their characters, that repeat an earlier item."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    total_chars = sum(len(i) for i in items) or 1
    return dup_items / max(len(items), 1), dup_chars / total_chars


def _top_ngram_char_frac(words: list[str], n: int) -> float:
    ngrams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not ngrams:
        return 0.0
    gram, count = Counter(ngrams).most_common(1)[0]
    return len(gram) * count / max(sum(len(w) for w in words), 1)


def _dup_ngram_char_frac(words: list[str], n: int) -> float:
    """Gopher's share of characters inside n-grams that occur more than once."""
    if len(words) < n:
        return 0.0
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if counts[tuple(words[i:i + n])] > 1:
            for j in range(i, i + n):
                covered[j] = True
    total = sum(len(w) for w in words) or 1
    return sum(len(w) for w, c in zip(words, covered) if c) / total


class RepetitionFilter(Stage):
    """Gopher-style repetition rules (Rae et al. 2021, as in datatrove's GopherRepetitionFilter).

    Lines shorter than ``min_line_chars`` (braces, blank lines) are ignored so that code
    passes. The top-n-gram rules apply from ``min_words`` words: below 100 they flagged
    worked GSM8K solutions, small programs and classification lists (reviewed on the dev
    data), where repeating a phrase is the right answer's shape. The duplicated-n-gram
    rules (loops) apply from ``dup_ngram_min_words``. Measured on the dev instruction sets:
    at most 0.5% of any source rejected, 88% of injected repetition loops caught.
    """

    name = "repetition"
    reasons = frozenset({Reason.REPETITIVE})

    def __init__(self, *, dup_line_frac: float = 0.3, dup_line_char_frac: float = 0.2,
                 top_ngram_char_frac: Mapping[int, float] | None = None,
                 dup_ngram_char_frac: Mapping[int, float] | None = None,
                 min_words: int = 100, dup_ngram_min_words: int = 40, min_line_chars: int = 8) -> None:
        super().__init__()
        _fraction("dup_line_frac", dup_line_frac)
        _fraction("dup_line_char_frac", dup_line_char_frac)
        self.dup_line_frac = dup_line_frac
        self.dup_line_char_frac = dup_line_char_frac
        # Gopher's web-document limits (0.20/0.18/0.16, 0.15..0.10) reject 5-20% of real
        # instruction responses, which are short and list-like; these looser limits keep
        # >99.5% of them (see the class docstring for the measured figures).
        self.top_ngram = dict(top_ngram_char_frac or {2: 0.40, 3: 0.35, 4: 0.30})
        self.dup_ngram = dict(dup_ngram_char_frac or {5: 0.60, 8: 0.55, 10: 0.50})
        for n, frac in {**self.top_ngram, **self.dup_ngram}.items():
            _fraction(f"n-gram fraction for n={n}", frac)
        self.min_words = min_words
        self.dup_ngram_min_words = dup_ngram_min_words
        self.min_line_chars = min_line_chars

    def check(self, ex: Example) -> Verdict:
        for text in _responses(ex):
            detail = self._why(text)
            if detail:
                return Verdict(Reason.REPETITIVE, detail=detail)
        return KEEP

    def _why(self, text: str) -> str | None:
        lines = [ln.strip() for ln in text.split("\n")]
        lines = [ln for ln in lines if len(ln) >= self.min_line_chars]
        if len(lines) >= 3:
            frac, char_frac = _dup_fractions(lines)
            if frac > self.dup_line_frac:
                return f"dup_line_frac={frac:.2f}"
            if char_frac > self.dup_line_char_frac:
                return f"dup_line_char_frac={char_frac:.2f}"
        words = _WORD.findall(text.lower())
        if len(words) >= self.min_words:
            for n, limit in self.top_ngram.items():
                frac = _top_ngram_char_frac(words, n)
                if frac > limit:
                    return f"top_{n}gram_char_frac={frac:.2f}"
        if len(words) >= self.dup_ngram_min_words:
            for n, limit in self.dup_ngram.items():
                frac = _dup_ngram_char_frac(words, n)
                if frac > limit:
                    return f"dup_{n}gram_char_frac={frac:.2f}"
        return None

    def version(self) -> Mapping[str, Any]:
        return {"dup_line_frac": self.dup_line_frac, "dup_line_char_frac": self.dup_line_char_frac,
                "top_ngram": {str(k): v for k, v in self.top_ngram.items()},
                "dup_ngram": {str(k): v for k, v in self.dup_ngram.items()}, "min_words": self.min_words,
                "dup_ngram_min_words": self.dup_ngram_min_words}


# Disclaimers that mark a canned answer wherever they appear.
_DISCLAIMERS = [
    r"\bas an ai language model\b",
    r"\bas an? (?:ai|artificial intelligence|ai assistant|ai model|language model|large language model)\s*,?\s*i\b",
    r"\bi(?:'m| am) (?:just |only )?an ai(?: language model| assistant| model)?(?:,| and\b| so\b| developed\b"
    r"| created\b| trained\b)",
    r"\bmy (?:training data|knowledge) (?:cut-?off|only goes up)", r"\bas of my (?:last )?knowledge cut-?off",
]
# Refusals: only when they open the response (quoted dialogue later in a story is not one).
_REFUSAL_OPENINGS = [
    r"i(?:'m| am) (?:so |very |really )?sorry,? (?:but )?(?:as an ai(?: language model)?,? )?"
    r"i (?:can(?:no|')t|am unable|am not able|won't|will not)",
    r"i(?:'m| am) (?:so |very |really )?sorry,? (?:but )?i(?:'m| am) (?:unable|not able)",
    r"i apologi[sz]e,? (?:but )?i (?:can(?:no|')t|am unable|am not able|won't)",
    r"i(?:'m| am) (?:unable|not able) to (?:help|assist|provide|fulfil|comply|answer|generate|create|do)",
    r"i can(?:no|')t (?:help|assist|provide|fulfil|comply|answer) (?:you )?with (?:that|this)",
    r"i (?:can(?:no|')t|won't|will not) (?:fulfil|comply with) (?:that|this|your)",
    r"sorry,? (?:but )?i (?:can(?:no|')t|am unable to) (?:help|assist|do) (?:with )?(?:that|this)",
]


class RefusalFilter(Stage):
    """Rejects canned refusals and AI disclaimers in the trained-on response.

    Args:
        apply_to_pairs: also check the chosen side of preference pairs. Off by default:
            in harmlessness data a refusal is often the preferred answer.
        opening_chars: how far into the response a refusal opening is looked for.
    """

    name = "refusal"
    reasons = frozenset({Reason.REFUSAL})

    def __init__(self, *, apply_to_pairs: bool = False, opening_chars: int = 160) -> None:
        super().__init__()
        _positive("opening_chars", opening_chars)
        self.apply_to_pairs = apply_to_pairs
        self.opening_chars = opening_chars
        self._anywhere = re.compile("|".join(_DISCLAIMERS))
        self._opening = re.compile(r"^\W{0,3}(?:" + "|".join(_REFUSAL_OPENINGS) + ")")

    def check(self, ex: Example) -> Verdict:
        if ex.kind == "preference" and not self.apply_to_pairs:
            return KEEP
        text = ex.response_text.lower().replace("\u2019", "'")
        match = self._anywhere.search(text) or self._opening.search(text[: self.opening_chars])
        if match:
            return Verdict(Reason.REFUSAL, detail=match.group(0)[:60])
        return KEEP

    def version(self) -> Mapping[str, Any]:
        return {"apply_to_pairs": self.apply_to_pairs, "opening_chars": self.opening_chars}


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class EncodingFilter(Stage):
    """Rejects text with control characters, U+FFFD or mojibake (ftfy's badness check)."""

    name = "encoding"
    reasons = frozenset({Reason.BAD_ENCODING})

    def __init__(self) -> None:
        super().__init__()
        from ftfy.badness import is_bad  # a well-kept mojibake detector; pure Python

        self._is_bad = is_bad

    def check(self, ex: Example) -> Verdict:
        for text in ex.texts():
            if _CONTROL.search(text):
                return Verdict(Reason.BAD_ENCODING, detail="control character")
            if "\ufffd" in text:
                return Verdict(Reason.BAD_ENCODING, detail="U+FFFD replacement character")
            if not text.isascii() and self._is_bad(text):
                return Verdict(Reason.BAD_ENCODING, detail="mojibake")
        return KEEP
