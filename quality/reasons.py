"""Stable reason codes: the only strings a decision may carry in ``reasons``.

Codes are part of the output contract (trainers and dashboards key on them), so
they are never built with f-strings and never renamed. ``docs/reasons.md`` is
generated from :data:`DESCRIPTIONS` and the stage registry by ``python -m quality.reasons``
(or ``python -m streams.docs``, which writes every generated page).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # dead letter: the payload could not become an example
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    TOO_LARGE = "too_large"
    UNKNOWN_FORMAT = "unknown_format"
    SCHEMA_ERROR = "schema_error"
    TOO_DEEP = "too_deep"
    PROCESSING_ERROR = "processing_error"
    UNENCODABLE = "unencodable"
    # heuristics
    EMPTY_PROMPT = "empty_prompt"
    EMPTY_RESPONSE = "empty_response"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    REPETITIVE = "repetitive"
    REFUSAL = "refusal"
    BAD_ENCODING = "bad_encoding"
    # privacy and contamination
    PII = "pii"
    CONTAMINATED = "contaminated"
    # dedup
    DUPLICATE_EXACT = "duplicate_exact"
    DUPLICATE_NEAR = "duplicate_near"
    DUPLICATE_SEMANTIC = "duplicate_semantic"
    # model judgement
    LOW_QUALITY = "low_quality"
    # preference pairs
    PAIR_IDENTICAL = "pair_identical"
    PAIR_PROMPT_MISMATCH = "pair_prompt_mismatch"
    PAIR_LOW_MARGIN = "pair_low_margin"
    PAIR_EMPTY_SIDE = "pair_empty_side"
    # conversation structure
    BAD_TURN_ORDER = "bad_turn_order"
    # an operator's override (quality/overrides/), not a stage
    OPERATOR_REJECTED = "operator_rejected"


DEAD_LETTER_REASONS = frozenset(
    {
        Reason.INVALID_UTF8,
        Reason.INVALID_JSON,
        Reason.NOT_AN_OBJECT,
        Reason.TOO_LARGE,
        Reason.UNKNOWN_FORMAT,
        Reason.SCHEMA_ERROR,
        Reason.TOO_DEEP,
        Reason.PROCESSING_ERROR,
        Reason.UNENCODABLE,
    }
)

DESCRIPTIONS: dict[Reason, str] = {
    Reason.INVALID_UTF8: "The payload is not valid UTF-8 (bad bytes, overlong forms, or a lone UTF-16 surrogate "
                         "escape such as `\\ud800` in any string or key). Such a payload cannot be redacted as "
                         "text, so the dead letter keeps only its length and sha256 (base64 of the bytes with "
                         "`pipeline.pii.dead_letter_raw = \"keep\"`).",
    Reason.INVALID_JSON: "The payload is not parseable JSON (one JSON object per message or line): also an empty "
                         "message (a Kafka tombstone), `NaN`/`Infinity`, and numbers that overflow a double (`1e400`).",
    Reason.NOT_AN_OBJECT: "The payload is valid JSON but not an object (a list, string, number...).",
    Reason.TOO_LARGE: "The payload is larger than `max_message_bytes` (default 1 MiB).",
    Reason.UNKNOWN_FORMAT: "The object matches none of Alpaca, OpenAI messages, ShareGPT or preference.",
    Reason.SCHEMA_ERROR: "The format was recognised but a field is missing, empty or of the wrong type.",
    Reason.TOO_DEEP: "Arrays and objects nest deeper than `MAX_JSON_DEPTH` (64) levels anywhere in the payload, "
                     "even in fields Sieve ignores: such a record cannot be written back out safely.",
    Reason.PROCESSING_ERROR: "A stage (or parsing, or normalization) raised on this example alone; `error` names "
                             "the stage and the exception class. When every example of a batch fails and a "
                             "known-good canary fails too, the stage is broken and the worker stops instead.",
    Reason.UNENCODABLE: "The decision could not be written as JSON (`error` names the stage `envelope` and the "
                        "exception); the envelope keeps only the id, origin and the raw payload (PII-redacted text "
                        "when it is UTF-8, else its length and sha256).",
    Reason.EMPTY_PROMPT: "The prompt (instruction/user turns) is empty after normalization.",
    Reason.EMPTY_RESPONSE: "The response (last assistant turn, or a side of a pair) is empty after normalization.",
    Reason.TOO_SHORT: "The response is shorter than `min_response_chars` or `min_response_words`.",
    Reason.TOO_LONG: "The example is longer than `max_total_chars`.",
    Reason.REPETITIVE: "The response loops: a line, sentence, paragraph, list item or phrase restated over and over "
                       "(the detail names the rule; a chorus, code and table rows are not loops).",
    Reason.REFUSAL: "The response is a canned refusal or AI disclaimer (\"As an AI language model...\").",
    Reason.BAD_ENCODING: "The text has control characters, U+FFFD replacement characters or mojibake that ftfy "
                         "can repair (correct non-ASCII such as IPA passes).",
    Reason.PII: "Personal data was found and the PII policy is `reject` (the default policy redacts instead).",
    Reason.CONTAMINATED: "The prompt overlaps an evaluation benchmark item beyond the n-gram threshold.",
    Reason.DUPLICATE_EXACT: "Same normalized content as an example accepted earlier.",
    Reason.DUPLICATE_NEAR: "MinHash/LSH near-duplicate of an example accepted earlier.",
    Reason.DUPLICATE_SEMANTIC: "Embedding cosine similarity to an accepted example above the threshold.",
    Reason.LOW_QUALITY: "The quality score is below the threshold (or outside the top-q quota).",
    Reason.PAIR_IDENTICAL: "Chosen and rejected responses are identical after normalization.",
    Reason.PAIR_PROMPT_MISMATCH: "The chosen and rejected transcripts have different prompts.",
    Reason.PAIR_LOW_MARGIN: "The reward margin chosen - rejected is below `min_margin`.",
    Reason.PAIR_EMPTY_SIDE: "Chosen or rejected is empty.",
    Reason.BAD_TURN_ORDER: "The turns are in an order a chat template refuses: a system turn not first, an "
                           "assistant or tool turn first, a prompt ending with the assistant (pairs), two turns of "
                           "one role in a row under `pipeline.turns.policy = \"reject\"` (the default merges them), "
                           "or a transcript-style prompt whose turns do not alternate. The detail names the fault.",
    Reason.OPERATOR_REJECTED: "An operator force-rejected this id (`sieve review`); the envelope's `overridden` "
                              "says who, why and what the pipeline had decided.",
}


def markdown_table() -> str:
    """The reason-code table for the docs (with the stages that emit each code, from the stage
    registry), generated so it cannot drift."""
    from quality.registry import reasons_table  # the registry imports this module

    return reasons_table()


assert set(DESCRIPTIONS) == set(Reason), "every reason needs a description"

if __name__ == "__main__":  # pragma: no cover
    print(markdown_table(), end="")
