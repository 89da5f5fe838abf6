"""Canned refusals and AI disclaimers in the trained-on response."""

from __future__ import annotations

import re
from typing import Any, Mapping

from quality.filters.common import FilterSettings, positive
from quality.reasons import Reason
from quality.records import Example
from quality.registry import register
from quality.stage import KEEP, Stage, Verdict

# What a canned answer says about itself. A roleplay (see below) may be an AI character
# speaking in character ("I am an AI, built to guard this station"), so the patterns come
# in three strengths.
_LIMITS = (r"(?:don't|do not|cannot|can't|can not|am not able|am unable|am not capable|am incapable|have no|lack|"
           r"don't have|do not have|don't possess|do not possess|am not programmed|don't experience|"
           r"do not experience|am not a human|am not human|am not a person)")
# Break character even in a roleplay: the model talks about being a language model.
_MODEL_DISCLAIMERS = [
    r"\bas an ai language model\b", r"\bas an? (?:large )?language model\s*,?\s*i\b",
    r"\bmy (?:goal|purpose|role|job) as an? (?:ai |large )?language model\b",
    r"\bi(?:'m| am) (?:just |only |merely )?(?:an ai |a )?(?:large )?language model\b",
    r"\b(?:developed|created|trained|built|made) by openai\b",
    r"\bmy (?:training data|knowledge) (?:cut-?off|only goes up)", r"\bas of my (?:last )?knowledge cut-?off",
]
# An AI's stock limitation ("As an AI, I don't have opinions"): canned, unless the roleplay
# character is itself an AI.
_AI_LIMITS = [
    r"\bas an? (?:ai|artificial intelligence|ai assistant|ai model|ai chatbot|virtual assistant)\s*,?\s*"
    r"(?:i(?:'m| am)? )?" + _LIMITS,
    r"\bi(?:'m| am) (?:just |only |merely )?an? (?:ai|artificial intelligence)(?: assistant| model| chatbot| program)?"
    r"\s*[,.;]?\s*(?:and |so |which means |therefore )?(?:i |i'm |i am )?" + _LIMITS,
]
# Self-identification without a limitation ("As an AI, I ...", "I am an AI, and ..."): a
# disclaimer in an ordinary answer, in character in a roleplay.
_AI_SELF = [
    r"\bas an? (?:ai|artificial intelligence|ai assistant|ai model)\s*,?\s*i\b",
    r"\bi(?:'m| am) (?:just |only )?an ai(?: assistant| model)?(?:,| and\b| so\b| developed\b| created\b| trained\b)",
]
# Every disclaimer above contains one of these.
_DISCLAIMER_CUES = ("an ai", "a ai", "language model", "openai", "training data", "knowledge",
                    "artificial intelligence", "virtual assistant")
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
# A refusal that opens a roleplay answer may be the character's ("I'm sorry, Dave, I can't do
# that"); it is the model's when it also says why in these words.
_BREAKS_CHARACTER = re.compile(
    r"language model|as an ai\b|\bopenai\b|(?:this|that|your) request|role-?play|pretend|in character|fictional|"
    r"my (?:programming|guidelines)|content polic|guidelines|inappropriate|not appropriate|offensive|harmful|"
    r"unethical|illegal|explicit|violen")
# The prompt asks for a character: GPTeacher's "Imagine you are...", "Role-play as...",
# "You are Sherlock Holmes...", "You are an AI in a post-apocalyptic world...", "Take the
# role of...", "As a superhero, you have been summoned...".
_ROLEPLAY = re.compile(
    r"\b(?:role-?\s?play(?:ing)?|pretend(?:ing)?(?: that)? (?:to be|you(?:'re| are))|(?:imagine|assume|suppose) "
    r"(?:that )?you(?:'re| are)|picture yourself|act(?:ing)? (?:as|like) (?:if you were |an? |the )|"
    r"(?:play|take|take on|assume|adopt|step into) (?:the )?(?:role|part|persona|shoes|character)|in character|"
    r"as if you were|in the (?:role|voice|persona) of|from the perspective of|from now on,? you(?:'re| are)|"
    r"your name is|you(?:'re| are) (?:playing|portraying)|as (?:a|an) (?:fictional )?character|transform into)\b",
    re.IGNORECASE)
# Weaker cues count only where a turn or line starts ("Human: you're a liar" is no roleplay):
# "You have been appointed...", "Imagine a conversation...", "Be a film critic...", "You are
# Gandalf...", and "You are a/an/the X" unless X is a plain assistant ("You are a helpful
# assistant.", "You are an AI assistant that helps people find information.").
_TURN_START = r"(?:^|\n)\W*(?:(?:human|user|system)\s*:\s*)?"
_ROLEPLAY_OPENING = re.compile(
    _TURN_START + r"(?:you (?:have been (?:appointed|chosen|transported|transformed|hired|summoned|elected|tasked|"
    r"assigned|sent|cast|turned|reincarnated)|have become (?:a|an|the)|find yourself|are tasked|are part of)|imagine|"
    r"be (?:a|an|the))\b", re.IGNORECASE)
_YOU_ARE = re.compile(_TURN_START + r"you(?:'re| are) (?:now )?(?:a|an|the|my)\b([^.\n]{0,80})", re.IGNORECASE)
_PLAIN_ASSISTANT = re.compile(
    r"^(?:\s*(?:helpful|harmless|honest|friendly|smart|useful|knowledgeable|polite|intelligent|ai|a\.i\.|artificial|"
    r"intelligence|large|virtual|digital|general|and|,))*\s*(?:assistant|chatbot|language model|model|ai)\b\s*"
    r"(?:$|[,;:!]|(?:that|who|which) (?:helps?|always|answers|provides|will|can)\b|designed to help|trained)",
    re.IGNORECASE)
_YOU_ARE_NAMED = re.compile(_TURN_START + r"[Yy]ou(?:'re| are) (?!(?:ChatGPT|GPT|Claude|Bard|Gemini|Llama|Copilot|"
                            r"Assistant|AI)\b)[A-Z]")
# "As a powerful superhero, you have been summoned...", "As Hagrid, explain..." opening the prompt.
_AS_A_ROLE = re.compile(r"^\W*as (?:an? |the )?(?!(?:a |an |the )?(?:result|rule|consequence|example|reminder|"
                        r"follow-?up|side note|whole|matter of fact|bonus|note|summary|reference|starting point|"
                        r"first step|general rule|part of)\b)[\w'-]+(?: [\w'-]+){0,14}, (?:you\b|[a-z]+)",
                        re.IGNORECASE)
# Fiction: the characters of a story or script speak for themselves.
_FICTION = re.compile(r"\b(?:(?:write|tell|create|compose|make up|invent|continue|imagine)\b[^.\n]{0,40}\b"
                      r"(?:stor(?:y|ies)|tale|fable|fiction|narrative|screenplay|dialogue|monologue|scene|novel|"
                      r"fan ?fic(?:tion)?)|"
                      r"short story|fictional|conversation between)\b", re.IGNORECASE)
_AI_CHARACTER = re.compile(r"\b(?:ai|a\.i\.|artificial intelligence|robot|android|cyborg|computer(?! science)|chatbot|"
                           r"bot|hologram|droid|automaton|synth|supercomputer)\b", re.IGNORECASE)


def _is_roleplay(prompt: str) -> bool:
    """Whether the prompt (system turns included) asks for a character or for fiction."""
    if _ROLEPLAY.search(prompt) or _ROLEPLAY_OPENING.search(prompt) or _YOU_ARE_NAMED.search(prompt) \
            or _AS_A_ROLE.search(prompt) or _FICTION.search(prompt):
        return True
    return any(not _PLAIN_ASSISTANT.match(m.group(1)) for m in _YOU_ARE.finditer(prompt))


def _unquoted(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first match that does not open a quotation (a character's line in a story)."""
    for match in pattern.finditer(text):
        if text[max(match.start() - 1, 0):match.start()] not in ("'", '"', "\u201c", "\u2018"):
            return match
    return None


@register(rank=60, section="filters", settings=FilterSettings,
          build=lambda s, _: RefusalFilter(apply_to_pairs=s.refusal_apply_to_pairs))
class RefusalFilter(Stage):
    """Rejects canned refusals and AI disclaimers in the trained-on response.

    "As an AI language model", knowledge-cutoff notes and "trained by OpenAI" reject
    anywhere; "As an AI, I don't have opinions" too, unless the prompt asks for a roleplay
    of an AI character (a robot, a ship's computer...); a bare "I am an AI, and ..." only
    outside roleplay; a refusal only when it opens the response, and in a roleplay only
    when it also breaks character ("as an AI", "this request", "inappropriate"...).

    Args:
        apply_to_pairs: also check the chosen side of preference pairs. Off by default:
            in harmlessness data a refusal is often the preferred answer.
        opening_chars: how far into the response a refusal opening is looked for.
    """

    name = "refusal"
    reasons = frozenset({Reason.REFUSAL})

    def __init__(self, *, apply_to_pairs: bool = False, opening_chars: int = 160) -> None:
        super().__init__()
        positive("opening_chars", opening_chars)
        self.apply_to_pairs = apply_to_pairs
        self.opening_chars = opening_chars
        self._model = re.compile("|".join(_MODEL_DISCLAIMERS))
        self._ai_limits = re.compile("|".join(_AI_LIMITS))
        self._ai_self = re.compile("|".join(_AI_SELF))
        self._opening = re.compile(r"^\W{0,3}(?:" + "|".join(_REFUSAL_OPENINGS) + ")")

    def check(self, ex: Example) -> Verdict:
        if ex.kind == "preference" and not self.apply_to_pairs:
            return KEEP
        text = ex.response_text.lower().replace("\u2019", "'")
        limits = self_id = None
        if any(cue in text for cue in _DISCLAIMER_CUES):  # cheap: most texts have none
            match = self._model.search(text)
            if match:
                return Verdict(Reason.REFUSAL, detail=match.group(0)[:60])
            limits, self_id = _unquoted(self._ai_limits, text), _unquoted(self._ai_self, text)
        opening = self._opening.search(text[: self.opening_chars])
        if not (limits or self_id or opening):
            return KEEP
        # only now read the prompt (system turns set personas too): the costlier part
        prompt = "\n".join(m.content for m in ex.prompt_messages)
        roleplay = _is_roleplay(prompt)
        if limits and not (roleplay and _AI_CHARACTER.search(prompt)):
            return Verdict(Reason.REFUSAL, detail=limits.group(0)[:60])
        if self_id and not roleplay:
            return Verdict(Reason.REFUSAL, detail=self_id.group(0)[:60])
        if opening and (not roleplay or _BREAKS_CHARACTER.search(text[:300])):
            return Verdict(Reason.REFUSAL, detail=opening.group(0)[:60])
        return KEEP

    def version(self) -> Mapping[str, Any]:
        return {"apply_to_pairs": self.apply_to_pairs, "opening_chars": self.opening_chars}
