"""Typed features: what a stage computes about an example for the stages after it.

Every example carries one :class:`Features` record (``ex.features``). Stages that
compute something another stage needs write it here under a fixed, typed name, and
declare it (``Stage.provides`` / ``Stage.needs``, names from :data:`FEATURE_NAMES`):

==================  ==============================  ===========================  ====================
name                what                            written by                   read by
==================  ==============================  ===========================  ====================
``content_hash``    16-byte key of the folded text  ``exact_dedup``              exact, near, semantic
``minhash``         uint32 MinHash signature        ``near_dedup``               ``near_dedup``
``minhash_key``     the MinHash settings it used    ``near_dedup``               ``near_dedup``
``embedding``       float32 (float16 values), unit  ``model_score``              ``semantic_dedup``
``quality``         quality head score (0..1)       ``model_score``              ``quality_gate``
``reward_margin``   reward chosen - rejected        ``model_score``              ``pair_margin``
==================  ==============================  ===========================  ====================

The record is serializable (:meth:`Features.to_dict` / :meth:`Features.from_dict`,
JSON-safe, lossless), because a scorer process ships exactly these to a decider
(``sieve.scored``, see docs/streams.md), and accepted envelopes carry the embedding so a
decider without a model rebuilds semantic dedup. The model stage rounds embeddings to
float16 values, so they travel as float16 (half the bytes) and still round-trip exactly:
every process decides on the same vectors. Features are computed on the normalized
example; a stage that rewrites the content (PII redaction) hands on fresh ones.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

#: Array features and the dtype they travel in.
_ARRAYS = {"minhash": np.uint32, "embedding": np.float32}
#: Marks an embedding sent as float16 (see :meth:`Features.to_dict`).
HALF_PREFIX = "f16:"


def half_precision(vec: np.ndarray) -> np.ndarray:
    """``vec`` as float32 holding float16 values: what the model stage stores, so that an
    embedding travels in half the bytes and comes back bit for bit."""
    return np.asarray(vec, dtype=np.float32).astype(np.float16).astype(np.float32)


def _is_half(vec: Any) -> bool:
    arr = np.asarray(vec, dtype=np.float32)
    return bool(np.all(np.isfinite(arr))) and np.array_equal(half_precision(arr), arr)


@dataclass(slots=True)
class Features:
    """What stages computed about one example (None: not computed)."""

    content_hash: bytes | None = None
    minhash: np.ndarray | None = None
    minhash_key: str | None = None  # num_perm, ngram, seed and fields of the signature: valid only for those
    embedding: np.ndarray | None = None
    quality: float | None = None
    reward_margin: float | None = None

    def has(self, name: str) -> bool:
        return getattr(self, name) is not None

    def to_dict(self) -> dict[str, Any]:
        """The computed features as JSON-safe values: bytes as hex, arrays as base64 of their
        little-endian bytes (``minhash`` uint32, ``embedding`` float32, or float16 behind a
        ``f16:`` prefix when every value is a float16 value). Round-trips exactly."""
        out: dict[str, Any] = {}
        for name in FEATURE_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "content_hash":
                out[name] = value.hex()
            elif isinstance(value, str):
                out[name] = value
            elif name == "embedding" and _is_half(value):
                half = np.ascontiguousarray(value, dtype=np.dtype(np.float16).newbyteorder("<")).ravel()
                out[name] = HALF_PREFIX + base64.b64encode(half.tobytes()).decode("ascii")
            elif name in _ARRAYS:
                arr = np.ascontiguousarray(value, dtype=np.dtype(_ARRAYS[name]).newbyteorder("<")).ravel()
                out[name] = base64.b64encode(arr.tobytes()).decode("ascii")
            else:
                out[name] = float(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Features":
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: an unknown feature name or a value of the wrong shape, naming it.
        """
        unknown = sorted(set(data) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; known: {list(FEATURE_NAMES)}")
        out = cls()
        for name, value in data.items():
            if value is None:
                continue
            try:
                if name == "content_hash":
                    value = bytes.fromhex(value)
                elif name == "minhash_key":
                    value = str(value)
                elif name == "embedding" and isinstance(value, str) and value.startswith(HALF_PREFIX):
                    raw = base64.b64decode(value[len(HALF_PREFIX):], validate=True)
                    value = np.frombuffer(raw, dtype=np.dtype(np.float16).newbyteorder("<")).astype(np.float32)
                elif name in _ARRAYS:
                    raw = base64.b64decode(value, validate=True)
                    value = np.frombuffer(raw, dtype=np.dtype(_ARRAYS[name]).newbyteorder("<")) \
                        .astype(_ARRAYS[name])
                else:
                    value = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"feature {name!r} has a bad value ({exc})") from None
            setattr(out, name, value)
        return out


FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Features))
