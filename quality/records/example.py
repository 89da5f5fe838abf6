"""Canonical examples: the record types, and :func:`parse` from a raw payload to an :class:`Example`.

Four input formats are recognised per message (or forced by configuration):

* Alpaca: ``{"instruction", "input"?, "output"}``
* OpenAI chat: ``{"messages": [{"role", "content"}, ...]}`` (a ``developer`` turn reads as ``system``)
* ShareGPT: ``{"conversations": [{"from", "value"}, ...]}``
* Preference (TRL style): ``{"prompt"?, "chosen", "rejected"}``, each a string or a message list;
  an optional ``rejected_prompt`` says what the rejected transcript's prompt was, when it may differ

A one-turn prompt holding a whole transcript (hh-rlhf's ``"\n\nHuman: …"``, ChatML...), and the
sides of a prompt-less pair given as transcripts, are split into turns (:mod:`quality.records.transcript`;
``Example.converted`` / ``unconverted`` say so).

:func:`parse` never raises: it returns an :class:`Example` or a :class:`ParseFailure`
carrying a dead-letter reason and a human-readable error. Structural problems
(missing fields, wrong types, empty lists) are failures; fields that are present but
empty strings parse, and the heuristic filters reject them (``empty_response``...).
Reading the JSON itself, so that whatever parses can be written back, is
:mod:`quality.records.payload`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping, Sequence

from quality.features import Features
from quality.reasons import Reason
from quality.records.payload import MAX_JSON_DEPTH, PayloadError, read_payload
from quality.records.transcript import CONVENTIONS, Unconverted, split_transcript

Kind = Literal["sft", "preference"]
FORMATS = ("alpaca", "openai", "sharegpt", "preference")
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
#: Longest accepted ``id`` and ``source``: they travel as Kafka keys and metric labels.
MAX_ID_CHARS = 512
MAX_SOURCE_CHARS = 256

_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
    "system": "system",
}
_OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One input message: its bytes (or text) and where it came from.

    ``origin`` is ``{"topic", "partition", "offset"}`` for Kafka or ``{"file", "line"}``
    for files; it yields the id of a payload that has none.
    """

    payload: bytes | str
    origin: Mapping[str, Any]

    @property
    def fallback_id(self) -> str:
        return origin_id(self.origin)


def origin_id(origin: Mapping[str, Any]) -> str:
    """A stable id derived from where a message came from."""
    if "topic" in origin:
        return f"{origin['topic']}/{origin.get('partition', 0)}/{origin.get('offset', 0)}"
    if "file" in origin:
        return f"{origin['file']}:{origin.get('line', 0)}"
    return "unknown:" + ":".join(f"{k}={v}" for k, v in sorted(origin.items()))


@dataclass(frozen=True, slots=True)
class Example:
    """The canonical form of an example inside Sieve.

    SFT examples keep the whole conversation in ``messages`` (it ends with the
    assistant turn that is trained on). Preference pairs keep the prompt turns in
    ``messages`` and the two continuations in ``chosen`` and ``rejected``.
    """

    id: str
    kind: Kind
    format: str
    messages: tuple[Message, ...]
    chosen: tuple[Message, ...] = ()
    rejected: tuple[Message, ...] = ()
    source: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    origin: Mapping[str, Any] = field(default_factory=dict)
    # set when an implicit-prompt pair had different prompts on its two sides
    rejected_prompt: tuple[Message, ...] | None = None
    # transcripts split into turns (field -> convention), or left whole as their turns do not alternate (-> why)
    converted: Mapping[str, str] = field(default_factory=dict, compare=False)
    unconverted: Mapping[str, str] = field(default_factory=dict, compare=False)
    # what stages computed for later stages (content hash, MinHash signature, embedding,
    # scores: quality.features); not part of equality, not in the canonical form
    features: Features = field(default_factory=Features, compare=False, repr=False)

    @property
    def prompt_messages(self) -> tuple[Message, ...]:
        return self.messages[:-1] if self.kind == "sft" else self.messages

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.prompt_messages if m.role != "system")

    @property
    def response_text(self) -> str:
        """The trained-on response: last assistant turn, or the chosen side of a pair."""
        if self.kind == "sft":
            return self.messages[-1].content
        return "\n".join(m.content for m in self.chosen)

    @property
    def rejected_text(self) -> str:
        return "\n".join(m.content for m in self.rejected)

    def texts(self) -> list[str]:
        """Every text field, for checks that look at all content."""
        out = [m.content for m in self.messages]
        out += [m.content for m in self.chosen] + [m.content for m in self.rejected]
        return out

    def canonical(self) -> dict[str, Any]:
        """The example as it appears on output topics and files (TRL-ready)."""
        msgs = [{"role": m.role, "content": m.content} for m in self.messages]
        if self.kind == "sft":
            return {"messages": msgs}
        return {
            "prompt": msgs,
            "chosen": [{"role": m.role, "content": m.content} for m in self.chosen],
            "rejected": [{"role": m.role, "content": m.content} for m in self.rejected],
        }


@dataclass(frozen=True, slots=True)
class ParseFailure:
    id: str
    reason: Reason
    error: str
    origin: Mapping[str, Any]


class _SchemaError(Exception):
    pass


def parse(raw: RawRecord, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
          format: str | None = None, max_depth: int = MAX_JSON_DEPTH,
          transcripts: Sequence[str] = tuple(CONVENTIONS)) -> Example | ParseFailure:
    """Turn one raw payload into an :class:`Example`, or say why it cannot be one.

    Whatever parses can also be written back out: lone UTF-16 surrogates anywhere
    (``invalid_utf8``), nesting past ``max_depth`` anywhere (``too_deep``) and numbers
    that are not finite doubles (``invalid_json``) fail here, even in fields Sieve
    ignores, so no envelope built from an example can fail to encode.

    Args:
        raw: the payload and its origin.
        max_message_bytes: payloads larger than this fail with ``too_large``.
        format: force one of :data:`FORMATS` instead of detecting it.
        max_depth: deepest nesting of arrays and objects (the top-level object is level 1).
        transcripts: the conventions of transcript-style prompts split into turns
            (:data:`~quality.records.transcript.CONVENTIONS`); empty: none.
    """
    fid = raw.fallback_id
    payload = raw.payload
    size = len(payload.encode("utf-8", "surrogatepass")) if isinstance(payload, str) else len(payload)
    if size > max_message_bytes:
        return ParseFailure(fid, Reason.TOO_LARGE,
                            f"payload is {size} bytes, over max_message_bytes={max_message_bytes}", raw.origin)
    try:
        obj = read_payload(payload, max_depth)
    except PayloadError as exc:
        return ParseFailure(fid, exc.reason, exc.message, raw.origin)
    if not isinstance(obj, dict):
        return ParseFailure(fid, Reason.NOT_AN_OBJECT,
                            f"expected a JSON object, got {type(obj).__name__}", raw.origin)
    try:
        ex_id = _id_of(obj, fid)
    except _SchemaError as exc:
        return ParseFailure(fid, Reason.SCHEMA_ERROR, str(exc), raw.origin)
    fmt = format or detect_format(obj)
    if fmt is None:
        keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
        return ParseFailure(ex_id, Reason.UNKNOWN_FORMAT,
                            "no known format: expected instruction/output (Alpaca), messages (OpenAI), "
                            f"conversations (ShareGPT) or chosen/rejected (preference); keys: {keys[:400]}",
                            raw.origin)
    try:
        sides: dict[str, str] = {}
        if fmt == "preference" and transcripts:
            obj, sides = _transcript_sides(obj, transcripts)
        ex = _BUILDERS[fmt](obj, ex_id, raw.origin)
        return _converted(ex, transcripts, sides) if transcripts else ex
    except _SchemaError as exc:
        return ParseFailure(ex_id, Reason.SCHEMA_ERROR, f"{fmt}: {exc}", raw.origin)
    except KeyError:
        return ParseFailure(ex_id, Reason.SCHEMA_ERROR, f"unknown format {fmt!r}; use one of {FORMATS}", raw.origin)


def detect_format(obj: Mapping[str, Any]) -> str | None:
    if "chosen" in obj and "rejected" in obj:
        return "preference"
    if "messages" in obj:
        return "openai"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    return None


def _id_of(obj: Mapping[str, Any], fallback: str) -> str:
    value = obj.get("id")
    if value is None or value == "":
        return fallback
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _SchemaError(f"'id' must be a string or integer, got {type(value).__name__}")
    value = str(value)
    if len(value) > MAX_ID_CHARS:
        raise _SchemaError(f"'id' is {len(value)} characters, over the limit of {MAX_ID_CHARS}")
    return value


def _common(obj: Mapping[str, Any]) -> dict[str, Any]:
    source = obj.get("source", obj.get("app"))
    if source is not None and not isinstance(source, str):
        raise _SchemaError(f"'source' must be a string, got {type(source).__name__}")
    if source is not None and len(source) > MAX_SOURCE_CHARS:
        raise _SchemaError(f"'source' is {len(source)} characters, over the limit of {MAX_SOURCE_CHARS}")
    metadata = obj.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise _SchemaError(f"'metadata' must be an object, got {type(metadata).__name__}")
    return {"source": source, "metadata": metadata}


def _str_field(obj: Mapping[str, Any], key: str, *, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise _SchemaError(f"missing required field '{key}'")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise _SchemaError(f"'{key}' must be a string, got {type(value).__name__}")
    return value


def _alpaca(obj, ex_id, origin) -> Example:
    instruction = _str_field(obj, "instruction", required=True)
    extra = _str_field(obj, "input", required=False)
    output = _str_field(obj, "output", required=True)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = (Message("user", prompt), Message("assistant", output))
    return Example(ex_id, "sft", "alpaca", messages, origin=origin, **_common(obj))


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts: keep the text ones
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _SchemaError(f"{where}: only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise _SchemaError(f"{where}: content must be a string, got {type(value).__name__}")


def _message_list(value: Any, key: str, *, role_key: str = "role", content_key: str = "content",
                  roles: Mapping[str, str] | None = None) -> tuple[Message, ...]:
    if not isinstance(value, list):
        raise _SchemaError(f"'{key}' must be a list of messages, got {type(value).__name__}")
    if not value:
        raise _SchemaError(f"'{key}' is empty")
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise _SchemaError(f"{where} must be an object, got {type(item).__name__}")
        role = item.get(role_key)
        if not isinstance(role, str):
            raise _SchemaError(f"{where} needs a string '{role_key}'")
        if roles is not None:
            if role.lower() not in roles:
                raise _SchemaError(f"{where}: unknown {role_key} {role[:40]!r}")
            role = roles[role.lower()]
        elif role.lower() not in _OPENAI_ROLES:
            raise _SchemaError(f"{where}: unknown role {role[:40]!r}; expected one of {sorted(_OPENAI_ROLES)}")
        else:  # chat templates know a system turn, not a developer one (Llama 2 and Mistral raise, Qwen drops it)
            role = _OPENAI_ROLES[role.lower()]
        if content_key not in item or item[content_key] is None:
            raise _SchemaError(f"{where} has no '{content_key}'")
        out.append(Message(role, _content(item[content_key], where)))
    return tuple(out)


def _conversation(messages: tuple[Message, ...], key: str) -> tuple[Message, ...]:
    if messages[-1].role != "assistant":
        raise _SchemaError(f"'{key}' must end with an assistant turn (the response to train on)")
    if not any(m.role == "user" for m in messages):
        raise _SchemaError(f"'{key}' has no user turn")
    return messages


def _openai(obj, ex_id, origin) -> Example:
    messages = _conversation(_message_list(obj["messages"], "messages"), "messages")
    return Example(ex_id, "sft", "openai", messages, origin=origin, **_common(obj))


def _sharegpt(obj, ex_id, origin) -> Example:
    messages = _message_list(obj["conversations"], "conversations", role_key="from",
                             content_key="value", roles=_SHAREGPT_ROLES)
    return Example(ex_id, "sft", "sharegpt", _conversation(messages, "conversations"),
                   origin=origin, **_common(obj))


def _side(value: Any, key: str) -> tuple[Message, ...]:
    if isinstance(value, str):
        return (Message("assistant", value),)
    return _message_list(value, key)


def _prompt(value: Any, key: str) -> tuple[Message, ...]:
    return (Message("user", value),) if isinstance(value, str) else _message_list(value, key)


def _preference(obj, ex_id, origin) -> Example:
    chosen = _side(obj["chosen"], "chosen")
    rejected = _side(obj["rejected"], "rejected")
    rejected_prompt = None
    if obj.get("prompt") is not None:
        raw_prompt = obj["prompt"]
        prompt = _prompt(raw_prompt, "prompt")
        if obj.get("rejected_prompt") is not None:  # transcript pairs that carry both prompts
            other = _prompt(obj["rejected_prompt"], "rejected_prompt")
            if other != prompt:
                rejected_prompt = other
    else:  # implicit prompt: both sides are whole conversations ending in the response
        if isinstance(obj["chosen"], str) or isinstance(obj["rejected"], str):
            raise _SchemaError("without 'prompt', 'chosen' and 'rejected' must be message lists, or transcripts "
                               f"in one of the conventions {sorted(CONVENTIONS)} whose turns alternate")
        for key, side in (("chosen", chosen), ("rejected", rejected)):
            if side[-1].role != "assistant" or len(side) < 2:
                raise _SchemaError(f"'{key}' must be a conversation ending with an assistant turn")
        prompt, chosen = chosen[:-1], chosen[-1:]
        other, rejected = rejected[:-1], rejected[-1:]
        if other != prompt:
            rejected_prompt = other
    return Example(ex_id, "preference", "preference", prompt, chosen, rejected, origin=origin,
                   rejected_prompt=rejected_prompt, **_common(obj))


def _transcript_sides(obj: dict[str, Any], transcripts: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """A pair without a prompt whose sides are transcript strings (hh-rlhf as published), as message lists."""
    if obj.get("prompt") is not None or not isinstance(obj["chosen"], str) or not isinstance(obj["rejected"], str):
        return obj, {}
    obj, sides = dict(obj), {}
    for key in ("chosen", "rejected"):
        found = split_transcript(obj[key], transcripts, slot=False)
        if found is None or isinstance(found, Unconverted):
            return obj, {}
        sides[key] = found[0]
        obj[key] = [{"role": role, "content": content} for role, content in found[1]]
    return obj, sides


def _converted(ex: Example, transcripts: Sequence[str], sides: Mapping[str, str]) -> Example:
    """``ex`` with a prompt that is one user turn holding a transcript split into its turns."""
    converted, unconverted, changes = dict(sides), {}, {}
    for key, prompt in (("prompt", ex.prompt_messages), ("rejected_prompt", ex.rejected_prompt or ())):
        lead = 1 if prompt and prompt[0].role == "system" else 0
        if len(prompt) != lead + 1 or prompt[lead].role != "user":
            continue
        found = split_transcript(prompt[lead].content, transcripts)
        if isinstance(found, Unconverted):
            unconverted[key] = f"{found.convention} markers, not converted: {found.why}"
        elif found is not None:
            converted[key] = found[0]
            turns = prompt[:lead] + tuple(Message(role, content) for role, content in found[1])
            if key == "rejected_prompt":
                changes[key] = turns
            else:
                changes["messages"] = turns + (ex.messages[-1:] if ex.kind == "sft" else ())
    if not converted and not unconverted:
        return ex
    return replace(ex, converted=converted, unconverted=unconverted, **changes)


_BUILDERS = {"alpaca": _alpaca, "openai": _openai, "sharegpt": _sharegpt, "preference": _preference}
