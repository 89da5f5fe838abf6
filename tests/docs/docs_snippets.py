"""Every fenced code block of README.md and docs/*.md, found by reading the pages (no list to keep).

A block is a :class:`Snippet` (page, line of its opening fence, language, text); a shell block
is cut into :class:`Command` s (one per command line, backslash continuations joined, the
block's earlier ``export``/assignment lines kept as its environment). ``python -m
tests.docs.snippets`` prints the inventory: what the tests run, parse or allow-list.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The languages a block may name, and what the tests do with each. Anything else fails
#: (tests/docs/test_snippets_static.py), so a new kind of block gets a handler or ``text``.
LANGUAGES = {
    "python": "executed",
    "bash": "executed",
    "sh": "executed",
    "json": "parsed",
    "toml": "parsed",
    "yaml": "parsed",
    "promql": "parsed",
    "text": "not code (diagrams, trees, sample output)",
}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")


@dataclass(frozen=True)
class Snippet:
    """One fenced block: ``page`` relative to the repository root, ``line`` of its opening fence."""

    page: str
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def parse_page(text: str, page: str) -> list[Snippet]:
    """The fenced blocks of one Markdown page, in order (CommonMark fences, indented ones in lists too).

    Raises:
        ValueError: a fence is never closed (the rest of the page would be code).
    """
    out: list[Snippet] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"{page}:{i + 1}: the code fence {fence} is never closed")
        body = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1:j]]
        lang = m["info"].split()[0].lower() if m["info"].strip() else ""
        out.append(Snippet(page, i + 1, lang, "\n".join(body) + "\n"))
        i = j + 1
    return out


def snippets(root: Path = ROOT) -> list[Snippet]:
    """Every fenced block of every page, in page order."""
    return [s for p in pages(root) for s in parse_page(p.read_text(encoding="utf-8"), str(p.relative_to(root)))]


# ---------------------------------------------------------------- shell commands

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _word_end(text: str, i: int) -> int:
    """Index after the shell word starting at ``i`` (quotes and nested ``$( )`` kept inside it)."""
    depth, quote = 0, ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                i += 1
        elif c in "'\"":
            quote = c
        elif c == "\\":
            i += 1
        elif text.startswith("$(", i):
            depth += 1
            i += 1
        elif c == ")" and depth:
            depth -= 1
        elif c.isspace() and not depth:
            return i
        i += 1
    return i


def strip_comment(text: str) -> str:
    """The command without its trailing ``# comment`` (a ``#`` that starts a word, outside quotes)."""
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "#":
            return text[:i].rstrip()
        i = _word_end(text, i)
    return text.rstrip()


def split_assignments(text: str) -> tuple[list[str], str]:
    """``VAR=value`` words that prefix a command, and the rest of it."""
    words, rest = [], text.lstrip()
    while _ASSIGNMENT.match(rest):
        end = _word_end(rest, 0)
        words.append(rest[:end])
        rest = rest[end:].lstrip()
    return words, rest


@dataclass(frozen=True)
class Command:
    """One command of a shell block: ``text`` as written (comment removed), ``env`` the block's
    ``export``/assignment lines before it, ``line`` where it starts on the page."""

    snippet: Snippet
    line: int
    text: str
    env: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.snippet.page}:{self.line}"

    @property
    def words(self) -> list[str]:
        """The command's words after any ``VAR=value`` prefix, ``.venv/bin/`` dropped from the program."""
        _, rest = split_assignments(self.text)
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        if words:
            words[0] = re.sub(r"^(?:\./)?\.venv/bin/", "", words[0])
            if words[0] in ("python3", "python3.11"):
                words[0] = "python"
        return words

    @property
    def program(self) -> str:
        """What runs, for the allow-list and the handlers: ``sieve curate``, ``sieve batches cut``,
        ``python examples/trainer_consumer.py``, ``python -m pytest``, ``make demo``, ``docker build``..."""
        words = self.words
        if not words:
            return ""
        if words[0] == "sieve":
            sub = [w for w in _skip_global_options(words[1:])]
            return " ".join(["sieve", *sub[:2]] if sub[:1] == ["batches"] else ["sieve", *sub[:1]])
        if words[0] == "python":
            return " ".join(words[:3] if words[1:2] == ["-m"] else words[:2])
        return " ".join(words[:2])

    @property
    def is_help(self) -> bool:
        return "--help" in self.words or "-h" in self.words


def _skip_global_options(words: list[str]) -> list[str]:
    """``sieve --log-level DEBUG run --x`` -> ``run --x``: the subcommand and what follows."""
    out = list(words)
    while out and out[0].startswith("-"):
        out = out[2:] if "=" not in out[0] and out[0] in ("--log-level", "--config") else out[1:]
    return out


def is_environment_line(text: str) -> bool:
    """``export A=1 B=2`` or a bare ``A=1``: sets the shell's environment, runs nothing."""
    stripped = strip_comment(text)
    if stripped.startswith("export "):
        return True
    words, rest = split_assignments(stripped)
    return bool(words) and not rest


def commands(snippet: Snippet) -> list[Command]:
    """The commands of a shell block, in order, each with the environment lines before it."""
    out: list[Command] = []
    env: list[str] = []
    lines = snippet.text.split("\n")
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        text = strip_comment(text.strip())
        if not text:
            continue
        if is_environment_line(text):
            env.append(text)
            continue
        out.append(Command(snippet, snippet.line + 1 + start, text, tuple(env)))
    return out


def shell_commands(root: Path = ROOT) -> list[Command]:
    return [c for s in snippets(root) if s.lang in ("bash", "sh") for c in commands(s)]


def main() -> None:
    """Prints the inventory: every block, and each shell command with what the tests do with it."""
    from docs_allowlist import allow_listed  # noqa: PLC0415 (tests/docs on sys.path when run as a script)

    counts: dict[str, int] = {}
    for s in snippets():
        if s.lang in ("bash", "sh"):
            for c in commands(s):
                reason = allow_listed(c)
                what = f"allow-listed: {reason}" if reason else "executed"
                counts[what.split(":")[0]] = counts.get(what.split(":")[0], 0) + 1
                print(f"{c.id:34} {s.lang:6} {c.program:40} {what[:90]}")
        else:
            what = LANGUAGES.get(s.lang, "UNKNOWN LANGUAGE")
            counts[f"{s.lang or 'no language'} blocks"] = counts.get(f"{s.lang or 'no language'} blocks", 0) + 1
            print(f"{s.id:34} {s.lang or '-':6} {'':40} {what}")
    print(counts)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    main()
