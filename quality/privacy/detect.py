"""PII: find e-mail addresses, phone numbers, IP addresses, card numbers and secrets.

Detection is regular expressions plus validators, not a model: it runs offline, in
tens of microseconds per example, and decides the same way everywhere. (Presidio
needs a spaCy model download and is two orders of magnitude slower; scrubadub's
detectors are regexes like these.) Validators keep precision up on fine-tuning
text, which is full of numbers: card numbers must pass the Luhn check and start
with a card-network digit, IPv4 octets must be <= 255, phone numbers need the
separators or ``+`` prefix of a written phone number (a bare run of digits in a
maths answer is not one), and secrets must have a known token shape (AWS, GitHub,
OpenAI, Slack, Stripe, Google keys, JWTs, private-key blocks) or follow a
``key``/``secret``/``token``/``password`` assignment.

A finding that an :class:`~quality.privacy.allow.Allowlist` allows (reserved and
documentation values such as ``192.0.2.1`` or ``john@example.com``, public DNS resolvers,
the user's own values) is left as it is and counted as kept. A finding right after a
backslash escape (``\\n``, ``\\t``, ``\\u00e9``: JSON text, a ``repr``, a C string) is
found as if the escape were the character it stands for: dead letters carry raw JSON.

Every pattern runs in time linear in the text: each repetition that precedes what
must follow it is bounded (``bench/bench_poison.py``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from quality.privacy.allow import RESERVED, Allowlist

KINDS = ("email", "phone", "ip_address", "credit_card", "secret")


def luhn_ok(digits: str) -> bool:
    """True if the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_ok(m: re.Match) -> bool:
    digits = re.sub(r"\D", "", m.group(0))
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits)


_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|version|release|python|node|java|ubuntu|build|\brev)\.?\s*$")


def _ipv4_ok(m: re.Match) -> bool:
    """Four octets in range, not zero-padded, and not a version ("version 1.2.3.4", "v1.2.3.4")."""
    parts = m.group(0).split(".")
    if not all(int(p) <= 255 and (p == "0" or not p.startswith("0")) for p in parts):
        return False
    return not _VERSION_BEFORE.search(m.string[max(0, m.start() - 12):m.start()])


def _phone_ok(m: re.Match) -> bool:
    return 8 <= sum(c.isdigit() for c in m.group(0)) <= 15


def _after(chars: str, *, escapes: bool, escape_letters: bool = False) -> str:
    """A left boundary: not after one of ``chars``; with ``escapes``, also right after a backslash
    escape (``\\n``...).

    ``escape_letters``: the pattern may start with a letter, so it must not start on the letter
    of an escape (``n`` of ``\\n``), and ``\\uXXXX`` counts as an escape too.
    """
    if not escapes:
        return rf"(?<![{chars}])"
    if escape_letters:
        return rf"(?:(?<=\\[nrtbfv])|(?<=\\u[0-9A-Fa-f]{{4}})|(?<![\\{chars}]))"
    return rf"(?:(?<=\\[nrtbfv])|(?<![{chars}]))"


_SECRET_SHAPES = "|".join([
    r"AKIA[0-9A-Z]{16}",                                  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{36,}",                        # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{40,}",
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",              # OpenAI / Anthropic style keys
    r"xox[abposr]-[A-Za-z0-9-]{10,}",                     # Slack
    r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",       # Stripe
    r"AIza[0-9A-Za-z_-]{35}",                             # Google API key
    r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",  # JWT
    r"-----BEGIN [A-Z ]{0,32}PRIVATE KEY-----(?:(?!-----)[\s\S]){0,16384}-----END [A-Z ]{0,32}PRIVATE KEY-----",
])


def _detectors(escapes: bool) -> list[tuple[str, str, re.Pattern, Any]]:
    """(kind, placeholder, pattern, validator); order matters: earlier kinds claim text first.

    ``escapes``: the left boundaries also accept a backslash escape. The escape-aware patterns
    cost about twice as much (the engine cannot skip ahead to a first character), so they run
    only on text that holds a backslash; on any other text both sets find the same.
    """
    word, email = _after("A-Za-z0-9_", escapes=escapes), _after(r"\w.+-", escapes=escapes, escape_letters=True)
    ipv4, ipv6, phone = (_after(c, escapes=escapes) for c in (r"\w.", r"\w:", r"\w+"))
    return [
        ("secret", "[SECRET]", re.compile(rf"{word}(?:{_SECRET_SHAPES})"), None),
        # a key name inside an identifier counts: aws_secret_access_key = ... Every repetition before the value
        # is bounded: with an unbounded identifier scan, a long run like "a-a-a-..." took quadratic time
        # (8,000 characters: 3 s; a 1 MiB payload: hours, a stalled worker)
        ("secret", "[SECRET]", re.compile(
            r"(?i)(?:api[_-]?key|secret|access[_-]?token|auth[_-]?token|password|passwd)"
            r"[A-Za-z0-9_-]{0,64}[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
            r"(?P<value>(?=[A-Za-z0-9_\-+/=]{0,256}\d)(?=[A-Za-z0-9_\-+/=]{0,256}[A-Za-z])[A-Za-z0-9_\-+/=]{16,})"),
         None),
        ("email", "[EMAIL]", re.compile(
            rf"{email}[A-Za-z0-9][A-Za-z0-9._%+-]{{0,63}}@"
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"), None),
        ("credit_card", "[CREDIT_CARD]",
         re.compile(r"(?<![\d-])(?<!\d[.,])\d(?:[ -]?\d){12,18}(?![\d-])(?![.,]\d)"), _card_ok),
        ("ip_address", "[IP_ADDRESS]",
         re.compile(rf"{ipv4}(?:\d{{1,3}}\.){{3}}\d{{1,3}}(?![\w.]*\d)"), _ipv4_ok),
        ("ip_address", "[IP_ADDRESS]", re.compile(
            rf"{ipv6}(?:[0-9A-Fa-f]{{1,4}}:){{7}}[0-9A-Fa-f]{{1,4}}(?![\w:])"
            rf"|{ipv6}(?:[0-9A-Fa-f]{{1,4}}:){{1,6}}:(?:[0-9A-Fa-f]{{1,4}}:){{0,5}}[0-9A-Fa-f]{{1,4}}(?![\w:])"),
         None),
        ("phone", "[PHONE]", re.compile(
            rf"{phone}(?:\+\d{{1,3}}[\s.-]?)?(?:\(\d{{2,4}}\)\s?|\d{{3}}[\s.-])\d{{3}}[\s.-]\d{{4}}(?![\w-])"
            rf"|{phone}\+\d{{1,3}}(?:[\s.-]\(?\d{{1,4}}\)?){{2,5}}(?![\w-])"), _phone_ok),
    ]


DETECTORS = _detectors(escapes=False)
#: The same detectors, whose left boundaries also accept a backslash escape: for text with a backslash.
ESCAPE_AWARE_DETECTORS = _detectors(escapes=True)


class Redactor:
    """Replaces what the detectors of ``kinds`` find with placeholders, except what ``allow`` allows.

    Args:
        kinds: which detectors run, some of :data:`KINDS`.
        allow: values left alone (default: the reserved and documentation values,
            :data:`~quality.privacy.allow.RESERVED`); ``None`` redacts every finding.

    Raises:
        ValueError: an unknown kind, or none.
    """

    def __init__(self, kinds: Sequence[str] = KINDS, allow: Allowlist | None = RESERVED) -> None:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"pii kinds must be some of {KINDS}, got {list(kinds)!r}")
        self.kinds = tuple(kinds)
        self.allow = allow
        self._detectors = [d for d in DETECTORS if d[0] in self.kinds]
        self._escape_aware = [d for d in ESCAPE_AWARE_DETECTORS if d[0] in self.kinds]

    def redact(self, text: str) -> tuple[str, dict[str, int], dict[str, int]]:
        """``text`` with each finding replaced; counts of redacted and of allowed (kept) findings by kind."""
        counts: dict[str, int] = {}
        kept: dict[str, int] = {}
        if not text:
            return text, counts, kept
        for kind, placeholder, pattern, valid in self._escape_aware if "\\" in text else self._detectors:
            text = pattern.sub(self._substitute(kind, placeholder, valid, counts, kept), text)
        return text, counts, kept

    def _substitute(self, kind: str, placeholder: str, valid, counts: dict[str, int],
                    kept: dict[str, int]) -> Callable[[re.Match], str]:
        def sub(m: re.Match) -> str:
            if valid is not None and not valid(m):
                return m.group(0)
            keyed = "value" in m.re.groupindex  # keep the "api_key = " part, redact the value
            value = m.group("value") if keyed else m.group(0)
            if self.allow is not None and self.allow.allows(kind, value):
                kept[kind] = kept.get(kind, 0) + 1
                return m.group(0)
            counts[kind] = counts.get(kind, 0) + 1
            if keyed:
                whole, start = m.group(0), m.start("value") - m.start()
                return whole[:start] + placeholder + whole[start + len(value):]
            return placeholder
        return sub

    def redact_value(self, value: Any, counts: dict[str, int], kept: dict[str, int]) -> Any:
        """``value`` (JSON-like: strings, lists, dicts) with every string in it redacted; keys too."""
        if isinstance(value, str):
            out, c, k = self.redact(value)
            _add(counts, c)
            _add(kept, k)
            return out
        if isinstance(value, list):
            return [self.redact_value(v, counts, kept) for v in value]
        if isinstance(value, dict):
            return {self.redact_value(k, counts, kept) if isinstance(k, str) else k: self.redact_value(v, counts, kept)
                    for k, v in value.items()}
        return value


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


_DEFAULT = Redactor()
#: Redacts every finding, reserved values too: both sides of a decontamination comparison.
STRICT = Redactor(allow=None)


def redact(text: str, kinds: Sequence[str] = KINDS) -> tuple[str, dict[str, int]]:
    """``text`` with each finding replaced by its placeholder (reserved values kept), and counts by kind."""
    redactor = _DEFAULT if tuple(kinds) == KINDS else Redactor(kinds)
    out, counts, _ = redactor.redact(text)
    return out, counts
