"""Text normalization applied to every field before any check.

Unicode NFC; exotic spaces (NBSP, ideographic, thin...) become plain spaces; BOM,
zero-width space and word joiner go (ZWJ/ZWNJ stay); ``\\r\\n`` and ``\\r`` become ``\\n``; trailing
spaces on each line go; runs of more than two blank lines collapse; blank lines at the ends and trailing
whitespace are trimmed, and so is the first line's indentation unless later lines are
indented too (code completions such as HumanEval bodies start indented and need it). Control characters
other than tab and newline are kept so the encoding filter can see them.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

from quality.records import Example, Message

_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
# ZWJ/ZWNJ (U+200D, U+200C) stay: emoji sequences and Persian or Indic spelling need them
_INVISIBLE = re.compile("[\u200b\u2060\ufeff]")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")
_INDENTED_LATER = re.compile(r"\n[ \t]+\S")
# starts only where a run of spaces begins: without the lookbehind a long run of tabs not
# followed by a newline was rescanned from every position (50,000 tabs: 9 s)
_TRAILING = re.compile(r"(?<![ \t])[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    if text.isascii():
        out = text
    else:
        out = unicodedata.normalize("NFC", text)
        out = _SPACES.sub(" ", out)
        out = _INVISIBLE.sub("", out)
    if "\r" in out:
        out = out.replace("\r\n", "\n").replace("\r", "\n")
    out = _TRAILING.sub("\n", out)
    out = _BLANK_RUNS.sub("\n\n", out)
    out = _LEADING_BLANK_LINES.sub("", out).rstrip()
    # keep the first line's indentation only in indented (code-like) text: "    return x\n    ..."
    if out[:1] in (" ", "\t") and not _INDENTED_LATER.search(out):
        out = out.lstrip()
    return out


def _messages(msgs: tuple[Message, ...]) -> tuple[Message, ...]:
    return tuple(Message(m.role, normalize_text(m.content)) for m in msgs)


def normalize_example(ex: Example) -> Example:
    """The same example with every text field normalized."""
    return dataclasses.replace(
        ex,
        messages=_messages(ex.messages),
        chosen=_messages(ex.chosen),
        rejected=_messages(ex.rejected),
        rejected_prompt=None if ex.rejected_prompt is None else _messages(ex.rejected_prompt),
    )


def content_key_text(text: str) -> str:
    """Case- and whitespace-folded text for exact-duplicate keys."""
    return " ".join(text.casefold().split())
