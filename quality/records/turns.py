"""The turn order a chat template renders, as a rule of the canonical example.

A strict chat template (Llama 2, Mistral, Gemma) raises on any other order, and a trainer
that tokenizes a dataset through it (TRL's ``SFTTrainer`` and ``DPOTrainer``) fails on the
whole dataset for one such example. The order:

* an optional system turn first (``system`` or ``developer``), nowhere else;
* then ``user`` and ``assistant`` alternating, starting with ``user``; a ``tool`` turn only
  right after an assistant turn (or another tool turn), answered by the assistant;
* SFT: it ends with the assistant turn that is trained on. Pairs: the prompt ends with the
  user turn, and prompt + chosen (prompt + rejected) is such a conversation.

The ``turn_order`` stage (:mod:`quality.filters.turns`) judges parsed examples by it; an
operator's force-accept (:mod:`quality.overrides`) is held to it too, since it puts its
example in a batch without the stage.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from quality.records.example import Message

SYSTEM_ROLES = frozenset({"system", "developer"})
ROLES = SYSTEM_ROLES | {"user", "assistant", "tool"}


def order_fault(msgs: Sequence[Message], *, ends_with: str) -> str | None:
    """What a chat template would refuse in ``msgs`` (a whole conversation), or None."""
    unknown = next((m.role for m in msgs if m.role not in ROLES), None)
    if unknown is not None:
        return f"an unknown role {unknown[:40]!r}; expected one of {sorted(ROLES)}"
    body = msgs[1:] if msgs and msgs[0].role in SYSTEM_ROLES else msgs
    if not body:
        return "no turn after the system turn"
    previous = None
    for position, m in enumerate(body, start=len(msgs) - len(body) + 1):
        role = m.role
        if role in SYSTEM_ROLES:
            return f"a {role} turn at position {position}, not first"
        if previous is None and role != "user":
            return f"it starts with {role}, not user"
        if role == "tool" and previous not in ("assistant", "tool"):
            return f"a tool turn after a {previous} turn (position {position})"
        if role == previous and role != "tool":
            return f"two {role} turns in a row (positions {position - 1} and {position})"
        if role == "user" and previous == "tool":
            return f"a user turn right after a tool turn (position {position})"
        previous = role
    if previous != ends_with:
        return f"it ends with {previous}, not {ends_with}"
    return None


def example_fault(kind: str, prompt: Sequence[Message], chosen: Sequence[Message] = (),
                  rejected: Sequence[Message] = ()) -> str | None:
    """The turn-order fault of an SFT conversation (``prompt`` is all of it) or a pair, or None."""
    if kind == "sft":
        return order_fault(tuple(prompt), ends_with="assistant")
    fault = order_fault(tuple(prompt), ends_with="user")
    if fault is not None:
        return f"prompt: {fault}"
    for where, side in (("chosen", chosen), ("rejected", rejected)):
        fault = order_fault(tuple(prompt) + tuple(side), ends_with="assistant")
        if fault is not None:
            return f"prompt + {where}: {fault}"
    return None


def canonical_fault(example: Mapping[str, Any]) -> str | None:
    """:func:`example_fault` of a canonical example as JSON (``messages``, or ``prompt``/``chosen``/``rejected``
    lists of ``{"role", "content"}``), as an envelope or an override carries it."""
    def msgs(key: str) -> tuple[Message, ...]:
        return tuple(Message(str(m.get("role")), str(m.get("content"))) for m in example.get(key) or ())

    if "messages" in example:
        return example_fault("sft", msgs("messages"))
    return example_fault("preference", msgs("prompt"), msgs("chosen"), msgs("rejected"))
