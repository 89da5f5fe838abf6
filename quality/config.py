"""Settings as frozen dataclasses, read once from a TOML file and ``SIEVE_*`` variables.

:data:`PipelineSettings` is assembled from the stage registry: the core's own fields
(:class:`CoreSettings`) and one section per registered settings dataclass, which lives
with its stage (``FilterSettings`` in ``quality/filters/common.py``...).

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

from quality.records.transcript import CONVENTIONS
from quality.registry import REGISTRY, Registry, discover

T = TypeVar("T")
ENV_PREFIX = "SIEVE_"


@dataclass(frozen=True)
class CoreSettings:
    """The settings of the pipeline itself; each stage's own come from the registry."""

    max_message_bytes: int = 1 << 20
    format: str | None = None  # alpaca / openai / sharegpt / preference; None = detect per record
    stages: tuple[str, ...] = ()  # stage names in run order; empty = every registered stage by rank
    dedup_window_s: float = 0.0  # forget accepted examples older than this, in input time (0 = never)
    transcripts: tuple[str, ...] = tuple(CONVENTIONS)  # transcript-style prompts split into turns; empty = none

    def __post_init__(self) -> None:
        unknown = [c for c in self.transcripts if c not in CONVENTIONS]
        if unknown:
            raise ValueError(f"pipeline.transcripts: unknown convention(s) {unknown}; known: {sorted(CONVENTIONS)} "
                             "(an empty list converts nothing)")


def pipeline_settings_class(registry: Registry) -> type:
    """A frozen dataclass: :class:`CoreSettings` plus one field per settings section of
    ``registry`` (``filters``, ``pii``, ``scoring``...), typed by the section's dataclass."""
    fields = [(section, cls, field(default_factory=cls)) for section, cls in registry.sections()]
    return dataclasses.make_dataclass("PipelineSettings", fields, bases=(CoreSettings,), frozen=True,
                                      namespace={"__doc__": "Everything that changes decisions: the core's "
                                                 "settings and those of every registered stage."})


#: The pipeline settings of the stages Sieve ships (``[pipeline]`` in the config file).
PipelineSettings = pipeline_settings_class(discover())
PipelineSettings.__module__ = __name__
REGISTRY.seal()


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
