"""Turn order as a chat template checks it: what ``apply_chat_template`` would refuse is not accepted.

Strict chat templates (Llama 2, Mistral, Gemma) raise "Conversation roles must alternate
user/assistant/user/assistant/..." and others render a broken prompt silently. The order
checked, for the conversation a trainer renders (the rule is :mod:`quality.records.turns`,
which an operator's force-accept is held to as well):

* an optional system turn first (``system`` or ``developer``), nowhere else;
* then ``user`` and ``assistant`` alternating, starting with ``user``; a ``tool`` turn only
  right after an assistant turn (or another tool turn), answered by the assistant;
* SFT: it ends with the assistant turn that is trained on. Pairs: the prompt ends with the
  user turn, and prompt + chosen (prompt + rejected) is such a conversation.

With ``policy = "repair"`` (default), consecutive turns of one role in an SFT conversation,
or inside the prompt or one side of a pair, are merged into one (texts joined by a blank line), the one
repair with a single reading; the detail says what was merged. Every other fault rejects
with ``bad_turn_order`` and a detail naming it: a system turn later on, an assistant or
tool turn first, a prompt ending with the assistant (merging it into the response would
change what is trained on), and a transcript-style prompt whose turns do not alternate,
which parsing left whole (``Example.unconverted``). ``policy = "reject"`` repairs nothing.

It runs right after PII redaction, so a rejected example's envelope is redacted too.
It is a stage rather than part of parsing: its verdict is a rejection with a reason (the
payload is valid data), its policy is a setting, and it can be moved or left out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from quality.reasons import Reason
from quality.records import Example, Message
from quality.records.turns import example_fault
from quality.registry import register
from quality.stage import KEEP, Stage, Verdict

POLICIES = ("repair", "reject")


@dataclass(frozen=True)
class TurnSettings:
    """``[pipeline.turns]``: ``policy`` is ``repair`` (merge consecutive turns of one role; reject the rest)
    or ``reject`` (reject every fault)."""

    enabled: bool = True
    policy: str = "repair"  # repair (merge consecutive turns of one role, reject the rest) or reject

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"pipeline.turns.policy must be one of {POLICIES}, got {self.policy!r}")


class _Fault(Exception):
    pass


def _merged(msgs: tuple[Message, ...], merges: list[str], where: str) -> tuple[Message, ...]:
    """``msgs`` with each run of consecutive turns of one role merged; each merge noted in ``merges``."""
    out: list[Message] = []
    run = 1
    for m in msgs:
        if out and out[-1].role == m.role and m.role != "tool":
            out[-1] = Message(m.role, f"{out[-1].content}\n\n{m.content}")
            run += 1
            continue
        if run > 1:
            merges.append(f"{run} {out[-1].role} turns of the {where}")
        out.append(m)
        run = 1
    if run > 1:
        merges.append(f"{run} {out[-1].role} turns of the {where}")
    return tuple(out)


@register(rank=15, section="turns", settings=TurnSettings,
          build=lambda s, _: TurnOrderCheck(policy=s.policy) if s.enabled else None)
class TurnOrderCheck(Stage):
    """Rejects conversations a chat template refuses (turn order); merges consecutive turns of one role.

    Args:
        policy: ``repair`` (default) merges consecutive turns of one role within the prompt or
            one side of a pair and rejects every other fault; ``reject`` rejects every fault.
    """

    name = "turn_order"
    reasons = frozenset({Reason.BAD_TURN_ORDER})

    def __init__(self, *, policy: str = "repair") -> None:
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"turn_order policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy

    def check(self, ex: Example) -> Verdict:
        unconverted = {k: v for k, v in ex.unconverted.items() if k != "rejected_prompt"}
        if unconverted:
            field, why = next(iter(sorted(unconverted.items())))
            return Verdict(Reason.BAD_TURN_ORDER, detail=f"{field}: {why}")
        merges: list[str] = []
        fixed = self._repaired(ex, merges) if self.policy == "repair" else ex
        fault = self._fault(fixed)
        if fault is not None:
            return Verdict(Reason.BAD_TURN_ORDER, detail=fault)
        if not merges:
            return KEEP
        return Verdict(None, detail="merged " + "; ".join(merges), replacement=fixed)

    @staticmethod
    def _repaired(ex: Example, merges: list[str]) -> Example:
        if ex.kind == "sft":  # every turn is trained on or context for the next: merging keeps the text
            out = {"messages": _merged(ex.messages, merges, "conversation")}
        else:  # never across the prompt and a response: that would move text into what is trained on
            out = {"messages": _merged(ex.messages, merges, "prompt"),
                   "chosen": _merged(ex.chosen, merges, "chosen side"),
                   "rejected": _merged(ex.rejected, merges, "rejected side")}
        return dataclasses.replace(ex, **out) if merges else ex

    @staticmethod
    def _fault(ex: Example) -> str | None:
        # a rejected_prompt exists only where it differs from the prompt: pair_structure rejects that pair
        return example_fault(ex.kind, ex.messages, ex.chosen, ex.rejected)

    def version(self) -> Mapping[str, Any]:
        return {"policy": self.policy}
