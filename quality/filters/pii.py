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

By default each finding is replaced with a placeholder such as ``[EMAIL]`` (the
stage returns the rewritten example), with the counts as scores (``pii_email: 2``);
with ``policy="reject"`` the example is rejected with ``pii`` instead, and its rejection
envelope carries the redacted text too.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from quality.features import Features
from quality.reasons import Reason
from quality.records import Example, Message
from quality.registry import register
from quality.stage import KEEP, ScoreSpec, Stage, Verdict

POLICIES = ("redact", "reject")


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

# (kind, placeholder, pattern, validator); order matters: earlier kinds claim text first
DETECTORS: list[tuple[str, str, re.Pattern, Any]] = [
    ("secret", "[SECRET]", re.compile(rf"(?<![A-Za-z0-9_])(?:{_SECRET_SHAPES})"), None),
    # a key name inside an identifier counts: aws_secret_access_key = ... Every repetition before the value
    # is bounded: with an unbounded identifier scan, a long run like "a-a-a-..." took quadratic time
    # (8,000 characters: 3 s; a 1 MiB payload: hours, a stalled worker)
    ("secret", "[SECRET]", re.compile(
        r"(?i)(?:api[_-]?key|secret|access[_-]?token|auth[_-]?token|password|passwd)"
        r"[A-Za-z0-9_-]{0,64}[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
        r"(?P<value>(?=[A-Za-z0-9_\-+/=]{0,256}\d)(?=[A-Za-z0-9_\-+/=]{0,256}[A-Za-z])[A-Za-z0-9_\-+/=]{16,})"), None),
    ("email", "[EMAIL]", re.compile(
        r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
        r"[A-Za-z]{2,24}(?![\w-])"), None),
    ("credit_card", "[CREDIT_CARD]",
     re.compile(r"(?<![\d-])(?<!\d[.,])\d(?:[ -]?\d){12,18}(?![\d-])(?![.,]\d)"), _card_ok),
    ("ip_address", "[IP_ADDRESS]", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)"), _ipv4_ok),
    ("ip_address", "[IP_ADDRESS]", re.compile(
        r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"
        r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}(?![\w:])"), None),
    ("phone", "[PHONE]", re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w-])"
        r"|(?<![\w+])\+\d{1,3}(?:[\s.-]\(?\d{1,4}\)?){2,5}(?![\w-])"), _phone_ok),
]
KINDS = ("email", "phone", "ip_address", "credit_card", "secret")


def redact(text: str, kinds: Sequence[str] = KINDS) -> tuple[str, dict[str, int]]:
    """``text`` with each finding replaced by its placeholder, and counts by kind."""
    counts: dict[str, int] = {}
    if not text:
        return text, counts
    for kind, placeholder, pattern, valid in DETECTORS:
        if kind not in kinds:
            continue

        def sub(m: re.Match, kind=kind, placeholder=placeholder, valid=valid) -> str:
            if valid is not None and not valid(m):
                return m.group(0)
            counts[kind] = counts.get(kind, 0) + 1
            if "value" in m.re.groupindex:  # keep the "api_key = " part, redact the value
                whole, start = m.group(0), m.start("value") - m.start()
                return whole[:start] + placeholder + whole[start + len(m.group("value")):]
            return placeholder

        text = pattern.sub(sub, text)
    return text, counts


@dataclass(frozen=True)
class PiiSettings:
    """PII redaction (``[pipeline.pii]``): ``policy`` is ``redact`` or ``reject``."""

    enabled: bool = True
    policy: str = "redact"
    kinds: tuple[str, ...] = ("email", "phone", "ip_address", "credit_card", "secret")


@register(rank=10, section="pii", settings=PiiSettings,
          build=lambda s, _: PiiRedactor(policy=s.policy, kinds=s.kinds) if s.enabled else None)
class PiiRedactor(Stage):
    """Redacts (or, with ``policy="reject"``, rejects) personal data and secrets.

    Every text field is scanned: prompt turns, responses, both sides of a pair and the
    rejected side's prompt. Counts travel as ``pii_<kind>`` scores.

    Args:
        policy: ``redact`` (default) rewrites the example; ``reject`` rejects it with ``pii``.
        kinds: which detectors run, some of :data:`KINDS`.
    """

    name = "pii"
    reasons = frozenset({Reason.PII})
    scores = {f"pii_{kind}": ScoreSpec(f"how many {kind.replace('_', ' ')} values were redacted (or, with "
                                       "pii.policy = reject, found); absent when none", count=True)
              for kind in KINDS}

    def __init__(self, *, policy: str = "redact", kinds: Sequence[str] = KINDS) -> None:
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"pii policy must be one of {POLICIES}, got {policy!r}")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"pii kinds must be some of {KINDS}, got {list(kinds)!r}")
        self.policy = policy
        self.kinds = tuple(kinds)

    def _messages(self, msgs: tuple[Message, ...], counts: dict[str, int]) -> tuple[Message, ...]:
        out = []
        for m in msgs:
            text, c = redact(m.content, self.kinds)
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
            out.append(m if not c else Message(m.role, text))
        return tuple(out)

    def check(self, ex: Example) -> Verdict:
        counts: dict[str, int] = {}
        messages = self._messages(ex.messages, counts)
        chosen = self._messages(ex.chosen, counts)
        rejected = self._messages(ex.rejected, counts)
        rejected_prompt = None if ex.rejected_prompt is None else self._messages(ex.rejected_prompt, counts)
        if not counts:
            return KEEP
        scores = {f"pii_{k}": float(v) for k, v in sorted(counts.items())}
        # rejected or not, what goes on (to the envelope, and to decontamination) is redacted
        replacement = dataclasses.replace(ex, messages=messages, chosen=chosen, rejected=rejected,
                                          rejected_prompt=rejected_prompt, features=Features())
        if self.policy == "reject":
            return Verdict(Reason.PII, scores, detail=",".join(sorted(counts)), replacement=replacement)
        return Verdict(None, scores, detail="redacted " + ",".join(sorted(counts)), replacement=replacement)

    def version(self) -> Mapping[str, Any]:
        return {"policy": self.policy, "kinds": list(self.kinds)}
