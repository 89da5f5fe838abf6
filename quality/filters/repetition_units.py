"""The units the repetition rules count: lines by kind, list items by list, paragraphs, sentences.

Loops are rejected, structure is not. An answer's shape often repeats by design (a
chorus, table rows, code, a list whose items share a template, a worked solution that
restates each step), so :class:`~quality.filters.repetition.RepetitionFilter` counts
restatements of whole units (lines, sentences, list items, paragraphs) rather than shared
n-grams, and judges each kind of line by its own rule: code and table rows only by long
runs of identical lines. This module turns a response into those units; the rules are
in :mod:`quality.filters.repetition`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quality.filters.common import WORD

_FENCE = re.compile(r"^(?:```|~~~)")
_BULLET = re.compile(r"^(?:[-*+\u2022\u2023\u25e6\u25aa\u2043]\s+(?=\S)|[-\u2022](?=[^\W\d_]))")  # "- x", "-x"
_NUMBERED = re.compile(r"^(?:(\d{1,3})[.)]|\((\d{1,3})\)|\[(\d{1,3})\]|\(?[a-zA-Z]\))\s+(?=\S)")
SONG_LABEL = re.compile(r"^[\[(*#\s]*(?:verse|chorus|pre-?chorus|post-?chorus|bridge|refrain|hook|outro|intro|coda"
                        r"|stanza|interlude|breakdown)\b[^\n]{0,16}$", re.IGNORECASE)
_CHORUS_LABEL = re.compile(r"^[\[(*#\s]*(?:pre-?|post-?)?(?:chorus|refrain|hook)\b", re.IGNORECASE)
_HEADING = re.compile(r"^(?:#{1,6}\s|\*\*[^*]{1,80}\*\*:?$|=+$|-{3,}$)")
_MARKUP = re.compile(r"^</?[a-zA-Z][\w:-]*(?:\s[^>]*)?/?>")
_TAG = re.compile(r"<[^>]*>")
# Code: a lowercase keyword opening the line, a statement or block ending, an assignment
# or a call; prose lines open with a capital and end with a full stop.
_CODE = re.compile(
    r"^(?:(?:def|class|return|import|from|if|elif|else|for|foreach|while|do|try|except|catch|finally|with|"
    r"function|fn|func|const|let|var|val|public|private|protected|static|void|int|float|double|char|bool|"
    r"string|auto|package|using|namespace|struct|enum|impl|pub|match|switch|case|default|break|continue|pass|"
    r"raise|throw|yield|async|await|lambda|print|printf|println|echo|end|begin|then|fi|done|select|insert|"
    r"update|delete|create|extends|#include|#define|#!|SELECT|INSERT|UPDATE|DELETE|CREATE|FROM|WHERE)\b"
    r"|.*[{}]$|.*[()\[\]=].*;$|[A-Za-z_$][\w.$\[\]'\"]*\s*(?:[-+*/%&|^]|<<|>>|//|\*\*)?=(?!=)"
    r"|[A-Za-z_$][\w.$]*\(.*\)[;,]?$|(?://|/\*|\*/|--\s|<!--))")
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[\u3002\uff01\uff1f])")
_MAY_END_SENTENCE = re.compile(r"[.!?]\s|[\u3002\uff01\uff1f].")
VERSE_PROMPT = re.compile(r"\b(?:songs?|lyrics?|poems?|poetry|raps?|verses?|chorus|jingles?|anthems?|hymns?|"
                          r"ballads?|lullaby|rhymes?|chants?|sonnets?|limericks?|haikus?|odes?|carols?|"
                          r"serenades?|ditty|cheers?|couplets?|stanzas?|(?<!fine-)(?<!fine )tunes?|sing|singalong|"
                          r"shanty|psalms?|refrain|nursery)\b", re.IGNORECASE)


def _is_table_row(line: str) -> bool:
    return (line.startswith("|") or line.count("|") >= 2 or line.count("\t") >= 2
            or (line.count("&") >= 2 and line.endswith("\\\\")))


def unit_key(text: str) -> tuple[str, int]:
    """A unit's comparison key (case and punctuation folded) and its count of words with
    letters (Chinese, Japanese and Korean text has no spaces: two characters count as a word)."""
    words = WORD.findall(text.lower())
    count = len(words) - sum(map(str.isdigit, words))
    if not text.isascii():
        count += len(_CJK.findall(text)) // 2
    return " ".join(words), count


Unit = tuple[str, int, int]  # (key, words with letters, characters)


def _units(text: str) -> list[Unit]:
    """The sentences of a line of prose (or of a list item), as units."""
    parts = _SENTENCE_END.split(text) if _MAY_END_SENTENCE.search(text) else [text]
    return [(*unit_key(part), len(part)) for part in parts if part]


@dataclass(slots=True)
class Line:
    kind: str  # code, table, markup, heading, item, text
    key: str  # what identical lines share: the folded content (an item's without its marker)
    words: int  # words with letters
    content: str  # the text, an item's without its marker
    block: int  # paragraph (blank lines and headings start one; a heading heads the next)
    list_id: int = -1
    sentences: list[Unit] | None = None  # prose and list items only
    chorus: bool = False  # under a "Chorus:" / "[Refrain]" label: restated by design


def _prose_line(kind: str, content: str, block: int, list_id: int = -1, chorus: bool = False) -> Line:
    sentences = _units(content)
    key = " ".join(k for k, _, _ in sentences)
    return Line(kind, key or content, sum(w for _, w, _ in sentences), content, block, list_id, sentences, chorus)


def classify_lines(text: str) -> list[Line]:
    """Non-blank lines, each with its kind, paragraph and (list items) list.

    Items belong to one list while their numbering goes on, or while nothing but items
    comes between them; a heading ends a list (the same items under "Monday:" and
    "Wednesday:" are two lists), and so does the parent's next item a sub-list.
    """
    out: list[Line] = []
    in_fence = chorus = False
    block, list_id = 0, 0
    open_lists: list[list[int | None]] = []  # [indent, list id, last number], outermost first
    for line in text.split("\n"):
        s = line.strip()
        if not s:
            if out and out[-1].block == block and out[-1].kind != "heading":
                block += 1
            continue
        if _FENCE.match(s):
            in_fence = not in_fence
            continue
        if in_fence:
            out.append(Line("code", s, unit_key(s)[1], s, block))
            continue
        marker = _BULLET.match(s) or _NUMBERED.match(s)
        if marker:
            number = next((int(g) for g in marker.groups() if g), None) if marker.re is _NUMBERED else None
            indent = len(line) - len(line.lstrip())
            while open_lists and open_lists[-1][0] > indent:  # a sub-list ends with its parent's next item
                open_lists.pop()
            top = open_lists[-1] if open_lists and open_lists[-1][0] == indent else None
            continues = top is not None and number is not None and top[2] is not None and number == top[2] + 1
            if top is None or not (continues or out[-1].kind == "item"):
                list_id += 1
                top = [indent, list_id, None]
                open_lists = [x for x in open_lists if x[0] < indent] + [top]
            top[2] = number
            out.append(_prose_line("item", s[marker.end():], block, top[1], chorus))  # type: ignore[arg-type]
            continue
        if _is_table_row(s):
            kind = "table"
        elif _MARKUP.match(s):
            kind = "markup"
        elif line[:1] == "\t" or line[:4] == "    " or _CODE.match(s):
            kind = "code"
        elif _HEADING.match(s) or SONG_LABEL.match(s) or (s[-1] == ":" and len(s) <= 60):
            kind = "heading"
            open_lists = []
            chorus = bool(_CHORUS_LABEL.match(s))
            if out and out[-1].block == block:
                block += 1
        else:
            out.append(_prose_line("text", s, block, chorus=chorus))
            continue
        key, words = unit_key(_TAG.sub(" ", s) if kind == "markup" else s)  # "<td>Yes</td>" is one word
        out.append(Line(kind, key if kind == "heading" and key else s, words, s, block))
    code = sum(1 for ln in out if ln.kind == "code")
    if code and code * 2 >= len(out):  # mostly code: its short prose-looking lines are code too
        for ln in out:
            if ln.kind == "text" and ln.words < 12:
                ln.kind, ln.key = "code", ln.content
    return out


def looks_like_verse(lines: list[Line]) -> bool:
    """Eight or more short prose lines (60 characters at most), most not ending a sentence."""
    text = [ln.content for ln in lines if ln.kind == "text"]
    if len(text) < 8:
        return False
    short = sum(1 for t in text if len(t) <= 60)
    stops = sum(1 for t in text if t[-1] in ".!?")
    return short >= 0.8 * len(text) and stops * 2 < len(text)


def paragraph_units(lines: list[Line]) -> tuple[list[Unit], int]:
    """Paragraphs (a heading with the lines under it) as units, and the characters of all
    lines. A block of code or table rows counts from 3 lines: a one-line snippet shown
    again with its neighbours changed (the same code before and after an edit) is not a
    restatement, a whole program pasted twice is."""
    out: list[Unit] = []
    current: list[Line] = []
    for ln in lines + [None]:  # type: ignore[list-item]
        if current and (ln is None or ln.block != current[0].block):
            if any(x.kind in ("text", "item") for x in current) or len(current) >= 3:
                out.append(("\n".join(x.key for x in current), max(3, sum(x.words for x in current)),
                            sum(len(x.content) for x in current)))
            current = []
        if ln is not None:
            current.append(ln)
    return out, sum(len(ln.content) for ln in lines)


_BREAK: Unit = ("", 0, 0)  # stands for a line of another kind: a heading between two copies ends a run


def sentence_units(lines: list[Line], kinds: tuple[str, ...] = ("text", "item")) -> list[Unit]:
    """Every sentence of the lines of these kinds, a break for each other line."""
    return [u for ln in lines for u in (ln.sentences or [_BREAK] if ln.kind in kinds else [_BREAK])]


def prose_units(lines: list[Line]) -> list[Unit]:
    """Sentences of prose and list items, less items that restate an item of another list
    (the same exercises under "Monday:" and "Wednesday:" are a schedule, not a loop)."""
    first_list: dict[str, int] = {}
    out: list[Unit] = []
    for ln in lines:
        if ln.kind == "text" or (ln.kind == "item" and first_list.setdefault(ln.key, ln.list_id) == ln.list_id):
            out += ln.sentences or []
    return out


