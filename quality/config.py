"""Settings as frozen dataclasses, read once from a TOML file and ``SIEVE_*`` variables.

A file section maps to a nested dataclass field (``[pipeline.filters]``); an
environment variable names the path with double underscores:
``SIEVE_PIPELINE__FILTERS__MAX_TOTAL_CHARS=20000``, ``SIEVE_KAFKA__BROKERS=host:9092``.
Environment wins over the file, the file over the defaults. Unknown keys are errors,
so a typo never silently keeps a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")
ENV_PREFIX = "SIEVE_"


@dataclass(frozen=True)
class FilterSettings:
    """Bounds of the heuristic filters (see ``quality/filters/``)."""

    min_response_chars: int = 1
    min_total_words: int = 3
    max_total_chars: int = 60_000
    repetition_min_words: int = 100  # n-gram repetition rules apply from this many words
    refusal_apply_to_pairs: bool = False


@dataclass(frozen=True)
class PiiSettings:
    """PII redaction (``quality/filters/pii.py``): ``policy`` is ``redact`` or ``reject``."""

    enabled: bool = True
    policy: str = "redact"
    kinds: tuple[str, ...] = ("email", "phone", "ip_address", "credit_card", "secret")


@dataclass(frozen=True)
class DecontamSettings:
    """Benchmark decontamination (``quality/decont/ngram.py``); no paths = off.

    ``benchmark_paths`` are JSONL/text files or directories, re-read in a running
    worker when their modification times change (checked every ``reload_interval_s``).
    """

    benchmark_paths: tuple[str, ...] = ()
    threshold: float = 0.8
    ngram: int = 8
    short_item_tokens: int = 10
    check_response: bool = False
    reload_interval_s: float = 30.0


@dataclass(frozen=True)
class NearDedupSettings:
    """MinHash LSH near-duplicate detection (``quality/dedup/near.py``); bands/rows 0 = chosen for recall."""

    enabled: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 2  # word bigrams: best agreement with GPTeacher's cleaning (docs/eval_dedup.md)
    fields: tuple[str, ...] = ("prompt", "response", "rejected")  # a pair's rejected side counts: pairs differing there are distinct
    bands: int = 0
    rows: int = 0
    seed: int = 1


@dataclass(frozen=True)
class SemanticDedupSettings:
    """Embedding near-duplicates (``quality/dedup/semantic.py``): exact flat search up to
    ``flat_max`` stored vectors, HNSW up to ``ivf_min``, then IVF (see docs/dedup.md)."""

    enabled: bool = True
    threshold: float = 0.95  # cosine similarity from which an example is a semantic duplicate
    flat_max: int = 50_000  # stored vectors searched exactly (flat inner product)
    hnsw_m: int = 32
    ef_search: int = 64
    ivf_min: int = 200_000  # from this many stored vectors the index is IVF; 0 = stay HNSW
    ivf_nlist: int = 4096  # IVF lists, trained once at the switch: size it for the store's final size
    ivf_nprobe: int = 16  # IVF lists searched per query (recall against speed)


@dataclass(frozen=True)
class ScoringSettings:
    """The model stage (``models/stage.py``) and the pair margin check; see docs/models.md.

    ``quality_threshold`` None uses the threshold calibrated with the head (in its
    ``quality.json``); ``quality_quota`` (share kept, e.g. 0.8) switches to keeping the
    top share of a sliding window of ``quota_window`` scores. ``per_source`` entries are
    ``SOURCE=0.1`` (threshold) or ``SOURCE=top:0.8`` (quota). ``reward_model`` (an HF
    sequence-classification reward model, path or id) replaces the default reward head;
    ``min_margin`` is then on that model's scale. ``min_margin`` None disables the check.
    """

    enabled: bool = True
    model: str | None = None  # encoder: local folder or model id; None = bundled all-MiniLM-L6-v2
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str = "auto"  # auto = bfloat16 (or float16) on GPU, float32 on CPU
    max_tokens: int = 256
    batch_size: int = 64
    head_dir: str | None = None  # folder with quality/reward heads; None = the shipped default head
    quality_threshold: float | None = None
    quality_quota: float | None = None
    quota_window: int = 1000
    per_source: tuple[str, ...] = ()
    apply_quality_to_pairs: bool = False
    reward_model: str | None = None
    reward_max_tokens: int = 512
    reward_batch_size: int = 16
    min_margin: float | None = -0.5


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that changes decisions."""

    max_message_bytes: int = 1 << 20
    format: str | None = None  # alpaca | openai | sharegpt | preference; None = detect per record
    filters: FilterSettings = field(default_factory=FilterSettings)
    pii: PiiSettings = field(default_factory=PiiSettings)
    decontam: DecontamSettings = field(default_factory=DecontamSettings)
    near_dedup: NearDedupSettings = field(default_factory=NearDedupSettings)
    semantic_dedup: SemanticDedupSettings = field(default_factory=SemanticDedupSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    dedup_window_s: float = 0.0  # forget accepted examples older than this (0 = never); see quality/state.py


def load(cls: type[T], path: str | Path | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from defaults, then a TOML file, then the environment, then overrides.

    Raises:
        ValueError: an unknown key or a value of the wrong type, naming both.
        FileNotFoundError: ``path`` does not exist.
    """
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    env = os.environ if env is None else env
    top_level = {f.name for f in dataclasses.fields(cls)}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        if "__" not in key:  # SIEVE_STATE_DIR names a top-level field; others (SIEVE_CONFIG) are not settings
            name = key[len(ENV_PREFIX):].lower()
            if name in top_level:
                data[name] = value
            continue
        parts = key[len(ENV_PREFIX):].lower().split("__")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    for dotted, value in (overrides or {}).items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _build(cls, data, cls.__name__)


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(where + '.' + u for u in unknown)}; "
                         f"known: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        return _coerce(args[0], value, where)
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1]
        items = value.split(",") if isinstance(value, str) else list(value)
        out = [_coerce(item, v.strip() if isinstance(v, str) else v, where) for v in items if v != ""]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if tp in (int, float):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number ({tp.__name__}), got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    return value


def as_dict(settings: Any) -> dict[str, Any]:
    return dataclasses.asdict(settings)
