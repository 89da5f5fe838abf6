"""Generates docs/configuration.md from the settings dataclasses, so it cannot drift.

Run ``python -m streams.config_docs > docs/configuration.md``. Each setting's
description is its trailing ``# comment`` in the source, or the class docstring's
mention; a test fails when the file is out of date.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

import streams.assemble  # noqa: F401 - the model stage registers (it shares pipeline.scoring)
from streams.config import Settings

_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


def _comments(cls: type) -> dict[str, str]:
    """Trailing comments of the fields of ``cls`` and of its bases (``PipelineSettings`` is
    assembled from the stage registry on top of ``CoreSettings``, whose source has them)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            m = _COMMENT.match(line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def _type_name(tp: typing.Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _rows(cls: type, path: list[str]) -> list[tuple[str, str, str, str, str]]:
    hints = typing.get_type_hints(cls)
    notes = _comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += _rows(tp, path + [f.name])
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        key = ".".join(path + [f.name])
        env = "SIEVE_" + "__".join(p.upper() for p in path + [f.name])
        rows.append((key, env, _type_name(tp).replace(" | ", " or "), repr(default), notes.get(f.name, "")))
    return rows


def markdown() -> str:
    lines = [
        "# Configuration",
        "",
        "Generated from the settings dataclasses by `python -m streams.docs`; a test fails when this",
        "page drifts from the code. `pipeline.*` is assembled from the stage registry: the core's",
        "settings (`quality/config.py`) and one section per stage settings class, which lives with",
        "its stage (`pipeline.filters` in `quality/filters/common.py`, `pipeline.scoring` in",
        "`quality/scoring/gate.py`...); see docs/architecture.md.",
        "",
        "Precedence: defaults < TOML file (`--config FILE` or `$SIEVE_CONFIG`) < environment.",
        "In the file, a dotted key is a table: `pipeline.filters.max_total_chars = 20000` is",
        "`[pipeline.filters]` / `max_total_chars = 20000`. Lists in the environment are",
        "comma-separated. Unknown keys are errors. `sieve config` prints the effective values.",
        "",
        "| key | environment variable | type | default | notes |",
        "|---|---|---|---|---|",
    ]
    for key, env, tp, default, note in _rows(Settings, []):
        lines.append(f"| `{key}` | `{env}` | {tp} | `{default}` | {note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(markdown(), end="")
