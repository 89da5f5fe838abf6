"""The stage registry: every stage says its name, its settings and where it runs, once.

A stage module registers its stage classes with :func:`register`::

    @register(rank=30, section="filters", settings=FilterSettings,
              build=lambda s, earlier: LengthFilter(min_response_chars=s.min_response_chars, ...))
    class LengthFilter(Stage): ...

From the registry come: the settings (``PipelineSettings`` in :mod:`quality.config`
gets one field per ``section``, typed by its ``settings`` dataclass), the default
stage order (by ``rank``, cheapest first), the pipeline (:mod:`quality.build`, from an
ordered list of names that ``pipeline.stages`` can change), and the generated tables
of docs/reasons.md, docs/scores.md, docs/configuration.md and the README, and the
score table of ``sieve score --help``.

:func:`discover` imports every module of :data:`STAGE_PACKAGES`, so a new module there
registers itself: adding a filter is its module plus its reason codes in
:mod:`quality.reasons`. Stages of other layers (the model stage, ``models/stage.py``)
register when their module is imported, into an existing settings section.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from quality.reasons import DEAD_LETTER_REASONS, DESCRIPTIONS, Reason
from quality.stage import ScoreSpec, Stage

#: The packages whose modules hold stages; :func:`discover` imports all of them.
STAGE_PACKAGES = ("quality.filters", "quality.decont", "quality.dedup", "quality.scoring")

Build = Callable[[Any, Sequence[Stage]], "Stage | None"]


@dataclass(frozen=True)
class StageEntry:
    """One registered stage class.

    ``build(section_settings, earlier_stages)`` returns the configured stage, or None
    when its settings turn it off (``enabled = false``, no benchmark files...).
    """

    cls: type[Stage]
    rank: int
    section: str | None
    settings: type | None
    build: Build

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def summary(self) -> str:
        """The first sentence of the class docstring."""
        doc = inspect.getdoc(self.cls) or ""
        return doc.split("\n\n")[0].replace("\n", " ").strip()

    @property
    def module_path(self) -> str:
        return self.cls.__module__.replace(".", "/") + ".py"


class Registry:
    """Stage entries by name, and the settings sections they own."""

    def __init__(self) -> None:
        self._entries: dict[str, StageEntry] = {}
        self._sealed: set[str] | None = None  # sections frozen into a settings class

    def register(self, cls: type[Stage], *, rank: int, section: str | None = None, settings: type | None = None,
                 build: Build | None = None) -> type[Stage]:
        """Adds a stage class; returns it (so it works as a decorator through :meth:`stage`).

        Raises:
            ValueError: a name taken by another class, a section owned by another settings
                class, or ``section`` and ``settings`` not given together.
        """
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{cls.__name__}.name must be a snake_case identifier, got {name!r}")
        old = self._entries.get(name)
        if old is not None and old.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"stage name {name!r} is taken by {old.cls.__module__}.{old.cls.__qualname__}")
        if (section is None) != (settings is None):
            raise ValueError(f"stage {name!r}: give section and settings together, or neither")
        for other in self._entries.values():
            if section is not None and other.section == section and other.settings is not settings:
                raise ValueError(f"settings section {section!r} belongs to {other.settings.__name__}, "
                                 f"not {settings.__name__}")
        if section is not None and self._sealed is not None and section not in self._sealed:
            raise RuntimeError(f"stage {name!r} brings a new settings section {section!r} after the settings "
                               "were assembled; use an existing section, or put the module in a STAGE_PACKAGES "
                               "package so it registers before quality.config is imported")
        if build is None:
            build = _default_build(cls, settings)
        self._entries[name] = StageEntry(cls, rank, section, settings, build)
        return cls

    def stage(self, *, rank: int, section: str | None = None, settings: type | None = None,
              build: Build | None = None) -> Callable[[type[Stage]], type[Stage]]:
        """Decorator form of :meth:`register`."""
        return lambda cls: self.register(cls, rank=rank, section=section, settings=settings, build=build)

    def get(self, name: str) -> StageEntry:
        """Raises: ValueError naming the registered stages."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown stage {name!r}; registered: {', '.join(self.default_order())}. Model stages "
                             "register when models.stage is imported (the sieve commands do)") from None

    def entries(self) -> list[StageEntry]:
        """Every entry in default order: by rank, then name."""
        return sorted(self._entries.values(), key=lambda e: (e.rank, e.name))

    def default_order(self) -> list[str]:
        return [e.name for e in self.entries()]

    def sections(self) -> list[tuple[str, type]]:
        """``(section, settings class)`` in the order of their first stage."""
        out: dict[str, type] = {}
        for e in self.entries():
            if e.section is not None:
                out.setdefault(e.section, e.settings)
        return list(out.items())

    def seal(self) -> None:
        """Marks the sections as assembled into a settings class (later new sections are errors)."""
        self._sealed = {s for s, _ in self.sections()}

    def copy(self) -> "Registry":
        """An unsealed copy (tests register toy stages into one)."""
        other = Registry()
        other._entries = dict(self._entries)
        return other


def _default_build(cls: type[Stage], settings: type | None) -> Build:
    if settings is None:
        return lambda _section, _earlier: cls()
    return lambda section, _earlier: cls.from_settings(section)  # type: ignore[attr-defined]


#: The registry of the stages Sieve ships (and of stages of other layers, once imported).
REGISTRY = Registry()
register = REGISTRY.stage


def discover(packages: Sequence[str] = STAGE_PACKAGES) -> Registry:
    """Imports every module of ``packages`` (each registers its stages); returns :data:`REGISTRY`."""
    for package in packages:
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=package + "."):
            importlib.import_module(info.name)
    return REGISTRY


#: Dead-letter codes that parsing does not give, and where they come from.
NOT_PARSE_DEAD_LETTERS = {Reason.PROCESSING_ERROR: "any step", Reason.UNENCODABLE: "envelope"}


def emitted_by(registry: Registry) -> dict[Reason, list[str]]:
    """Reason code -> the stages that may emit it (``parse`` for dead-letter codes)."""
    out: dict[Reason, list[str]] = {r: [] for r in Reason}
    for r in DEAD_LETTER_REASONS:
        out[r].append(NOT_PARSE_DEAD_LETTERS.get(r, "parse"))
    out[Reason.OPERATOR_REJECTED].append("override")  # quality/overrides/, not a stage
    for e in registry.entries():
        for r in sorted(e.cls.reasons):
            out[r].append(e.name)
    return out


def reasons_table(registry: Registry | None = None) -> str:
    """The reason-code table of docs/reasons.md: code, decision, the stages that emit it, meaning."""
    registry = registry or discover()
    stages = emitted_by(registry)
    rows = ["| code | decision | stage | meaning |", "|---|---|---|---|"]
    for reason in Reason:
        decision = "dead_letter" if reason in DEAD_LETTER_REASONS else "rejected"
        where = ", ".join(f"`{s}`" for s in stages[reason]) or "–"
        rows.append(f"| `{reason.value}` | {decision} | {where} | {DESCRIPTIONS[reason]} |")
    return "\n".join(rows) + "\n"


def stages_table(registry: Registry | None = None) -> str:
    """The README's stage table: every stage in default order, its phase, reasons, settings and module."""
    registry = registry or discover()
    rows = ["| stage | phase | what it does | rejects with | settings | module |", "|---|---|---|---|---|---|",
            "| `parse` | score | Parses and validates the payload (Alpaca, OpenAI `messages`, ShareGPT, TRL "
            "preference), then normalizes the text. | " + ", ".join(
                f"`{r.value}`" for r in Reason if r in DEAD_LETTER_REASONS and r not in NOT_PARSE_DEAD_LETTERS)
            + " (dead letter) | `pipeline.max_message_bytes`, `pipeline.format` | `quality/records/` |"]
    for e in registry.entries():
        reasons = ", ".join(f"`{r.value}`" for r in sorted(e.cls.reasons)) or "–"
        section = f"`pipeline.{e.section}`" if e.section else "–"
        rows.append(f"| `{e.name}` | {e.cls.phase} | {e.summary.replace('|', '/')} | {reasons} | {section} | "
                    f"`{e.module_path}` |")
    return "\n".join(rows) + "\n"


def declared_scores(registry: Registry | None = None) -> dict[str, tuple[str, ScoreSpec]]:
    """Score name -> (the stage that writes it, its :class:`~quality.stage.ScoreSpec`), in stage order.

    Raises:
        ValueError: two stages declare the same score name.
    """
    registry = registry or discover()
    out: dict[str, tuple[str, ScoreSpec]] = {}
    for e in registry.entries():
        for name, spec in e.cls.scores.items():
            if name in out:
                raise ValueError(f"score {name!r} is declared by both {out[name][0]} and {e.name}")
            out[name] = (e.name, spec)
    return out


def counted_scores(registry: Registry | None = None) -> frozenset[str]:
    """Names of the scores that count things found (``ScoreSpec.count``): summed, not drawn as distributions."""
    return frozenset(n for n, (_, spec) in declared_scores(registry).items() if spec.count)


def scores_table(registry: Registry | None = None) -> str:
    """The score table of docs/scores.md: every score name, the stage that writes it, which examples carry it."""
    rows = ["| score | stage | examples | kind | meaning |", "|---|---|---|---|---|"]
    for name, (stage, spec) in declared_scores(registry).items():
        kind = "count" if spec.count else "score"
        rows.append(f"| `{name}` | `{stage}` | {spec.examples} | {kind} | {spec.meaning.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def scores_text(registry: Registry | None = None, width: int = 88) -> str:
    """The same table as plain text for ``--help``: one entry per score, wrapped to ``width``."""
    import textwrap

    lines = []
    for name, (stage, spec) in declared_scores(registry).items():
        carried = "" if spec.examples == "all" else f" [{spec.examples}]"
        head = f"  {name:<20} "
        body = f"{spec.meaning} ({stage}){carried}"
        lines += textwrap.wrap(body, width, initial_indent=head, subsequent_indent=" " * len(head))
    return "\n".join(lines)
