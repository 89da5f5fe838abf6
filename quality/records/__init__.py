"""Raw payloads in, canonical examples out: :func:`parse` (:mod:`quality.records.example`),
reading JSON that can be written back (:mod:`quality.records.payload`), transcript-style prompts
split into turns (:mod:`quality.records.transcript`)."""

from quality.records.example import (DEFAULT_MAX_MESSAGE_BYTES, FORMATS, MAX_ID_CHARS, MAX_SOURCE_CHARS, Example,
                                     Kind, Message, ParseFailure, RawRecord, detect_format, origin_id, parse)
from quality.records.payload import MAX_JSON_DEPTH, PayloadError, read_payload
from quality.records.transcript import CONVENTIONS, Unconverted, split_transcript

__all__ = ["CONVENTIONS", "DEFAULT_MAX_MESSAGE_BYTES", "FORMATS", "MAX_ID_CHARS", "MAX_JSON_DEPTH",
           "MAX_SOURCE_CHARS", "Example", "Kind", "Message", "ParseFailure", "PayloadError", "RawRecord", "Unconverted",
           "detect_format", "origin_id", "parse", "read_payload", "split_transcript"]
