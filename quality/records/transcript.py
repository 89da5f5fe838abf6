"""Transcript-style prompts split into turns: ``"\\n\\nHuman: … \\n\\nAssistant:"`` becomes messages.

Datasets such as Anthropic's hh-rlhf store a conversation as one string with role markers.
Taken as one ``user`` message, it nests two conversation formats once a trainer applies its
chat template, and every turn statistic is wrong. :func:`split_transcript` recognises these
conventions (:data:`CONVENTIONS`):

* ``anthropic``: ``Human:`` / ``Assistant:`` at the start or after a blank line (hh-rlhf);
* ``chatml``: ``<|im_start|>role`` … ``<|im_end|>`` (roles system, user, assistant);
* ``llama2``: ``[INST] … [/INST]`` with an optional ``<<SYS>> … <</SYS>>`` block and ``<s>``/``</s>``;
* ``alpaca``: ``### Instruction:`` (with ``### Input:``) / ``### Response:`` headings, also
  ``### Human:`` / ``### Assistant:``, after the Alpaca preamble or none;
* ``vicuna``: upper-case ``USER:`` / ``ASSISTANT:`` (FastChat), after its preamble or none.

Only a text the markers structure as a whole converts, so a prompt that quotes a dialogue
stays as it is: the first marker opens the text (only whitespace, or the convention's known
preamble, which becomes the system turn, before it), markers count only where the convention
puts them (``Human:`` mid-line is text), there is at least one user and one assistant marker,
and the turns alternate user / assistant after an optional system turn. A trailing empty
assistant turn (``"\\n\\nAssistant:"``) is the slot the model fills: it is dropped. A text whose
markers open it but whose turns do not alternate is not converted and is reported
(:class:`Unconverted`): the ``turn_order`` stage rejects it, as a chat template would choke on it.
Free-form dialogue labels (``User:``/``Bot:``, ``Q:``/``A:``, ``Customer:``, ``Person A:``) are
not conventions: in the development data they occur only inside content (a written dialogue,
a joke), never as the structure of a prompt.

Every pattern is linear in the text (markers are literal or bounded), and a cheap prefix test
skips texts that start with none of the markers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

Turn = tuple[str, str]  # (role, content)


@dataclass(frozen=True)
class Convention:
    """One way of writing a conversation as a single string.

    ``marker`` finds turn headers (group ``label``); ``roles`` maps a label to a role, or to
    ``"+user"`` for a heading that continues the user turn (Alpaca's ``### Input:``).
    ``end_tokens`` are removed from the end of each turn's text; ``preambles`` are known system
    texts allowed before the first marker; ``starts`` are what a convertible text starts with.
    """

    name: str
    marker: re.Pattern
    roles: Mapping[str, str]
    starts: tuple[str, ...]
    end_tokens: tuple[str, ...] = ()
    preambles: tuple[str, ...] = ()
    system_block: re.Pattern | None = None  # a system turn inside the first user turn (llama2 <<SYS>>)


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("anthropic", re.compile(r"(?:\A[ \t\n]*|\n\n)(?P<label>Human|Assistant):[ \t]?"),
               {"Human": "user", "Assistant": "assistant"}, ("Human:",)),
    Convention("chatml", re.compile(r"<\|im_start\|>(?P<label>system|user|assistant)[ \t]*\n?"),
               {"system": "system", "user": "user", "assistant": "assistant"}, ("<|im_start|>",),
               end_tokens=("<|im_end|>",)),
    Convention("llama2", re.compile(r"(?:<s>[ \t]{0,3})?\[(?P<label>INST|/INST)\][ \t]*"),
               {"INST": "user", "/INST": "assistant"}, ("<s>", "[INST]"), end_tokens=("</s>",),
               system_block=re.compile(r"\A\s*<<SYS>>\n?(?P<system>(?:(?!<</SYS>>)[\s\S])*)<</SYS>>\s*")),
    Convention("alpaca", re.compile(r"(?:\A|\n)[ \t]{0,3}#{2,4}[ \t]{0,3}(?P<label>Instruction|Input|Response|Human|"
                                    r"Assistant|System)(?:[ \t]{0,3}:[ \t]*\n?|[ \t]*(?:\n|\Z))"),
               {"Instruction": "user", "Human": "user", "Input": "+user", "Response": "assistant",
                "Assistant": "assistant", "System": "system"}, ("#",),
               preambles=("Below is an instruction that describes a task",)),
    Convention("vicuna", re.compile(r"(?:\A|(?<=\s)|(?<=</s>))(?P<label>USER|ASSISTANT|SYSTEM):[ \t]?"),
               {"USER": "user", "ASSISTANT": "assistant", "SYSTEM": "system"}, ("USER:", "SYSTEM:"),
               end_tokens=("</s>",),
               preambles=("A chat between a curious",)),
)}


@dataclass(frozen=True)
class Unconverted:
    """A text whose markers open it but do not make a well-formed conversation, and why."""

    convention: str
    why: str


def split_transcript(text: str, conventions: Sequence[str], *,
                     slot: bool = True) -> tuple[str, list[Turn]] | Unconverted | None:
    """``(convention, turns)`` for a text the markers of one of ``conventions`` structure as a whole.

    ``slot``: drop a trailing empty assistant turn (a prompt's generation slot); a side of a pair
    keeps it (an empty response is the empty filter's to reject).

    Returns:
        ``None`` when no convention's markers open the text (the common case: plain text);
        :class:`Unconverted` when they do but the turns do not alternate.
    """
    head = text.lstrip()[:64]
    for name in conventions:
        conv = CONVENTIONS[name]
        if not head.startswith(conv.starts + conv.preambles):
            continue
        found = _split(text, conv, slot)
        if found is not None:
            return found
    return None


def _split(text: str, conv: Convention, slot: bool) -> tuple[str, list[Turn]] | Unconverted | None:
    marks = list(conv.marker.finditer(text))
    if not marks:
        return None
    before = text[:marks[0].start()].strip()
    turns: list[Turn] = []
    if before:
        if not before.startswith(conv.preambles) or not conv.preambles:
            return None  # text before the first marker: a prompt that quotes a transcript
        turns.append(("system", before))
    labels = [m.group("label") for m in marks]
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        content = text[m.end():end]
        content = _without_end_tokens(content, conv.end_tokens)
        role = conv.roles[labels[i]]
        if role == "+user":  # Alpaca's input continues the instruction
            if not turns or turns[-1][0] != "user" or labels[i - 1] != "Instruction":
                return Unconverted(conv.name, "an input heading that does not follow an instruction")
            turns[-1] = ("user", f"{turns[-1][1].strip()}\n\n{content.strip()}")
            continue
        if conv.system_block is not None and role == "user" and len(turns) == 0:
            sys_match = conv.system_block.match(content)
            if sys_match:
                turns.append(("system", sys_match.group("system").strip()))
                content = content[sys_match.end():]
        turns.append((role, content.strip()))
    roles = [r for r, _ in turns]
    if "user" not in roles or "assistant" not in roles:
        return None  # one kind of marker only: "Human: what is love?" is a question, not a transcript
    if slot and turns[-1][0] == "assistant" and not turns[-1][1] and len(turns) > 1:
        turns.pop()  # the empty slot the model is to fill
    problem = _alternation_problem([r for r, _ in turns])
    if problem:
        return Unconverted(conv.name, problem)
    return conv.name, turns


def _without_end_tokens(content: str, tokens: tuple[str, ...]) -> str:
    """``content`` without trailing whitespace and end-of-turn tokens, cut once (linear however many)."""
    end = len(content)
    while True:
        while end and content[end - 1].isspace():
            end -= 1
        token = next((t for t in tokens if content.endswith(t, 0, end)), None)
        if token is None:
            return content[:end]
        end -= len(token)


def _alternation_problem(roles: list[str]) -> str | None:
    body = roles[1:] if roles and roles[0] == "system" else roles
    if not body or body[0] != "user":
        return f"it starts with {body[0] if body else 'nothing'} after the system turn"
    for i, role in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return f"turn {i + 1} is {role}, expected {expected} ({', '.join(body[:12])})"
    return None
