"""Threshold policies: turn a score into keep or reject, globally or per source.

Two kinds, both pure (no clock, no I/O; the quota's only state is its window):

* :class:`FixedThreshold` keeps scores ``>= value``.
* :class:`WindowQuota` keeps the top ``keep_frac`` of a sliding window of the last
  ``window`` scores, as DEITA keeps the top of a score-sorted pool, but online: a new
  score is kept when fewer than ``keep_frac * len(window)`` of the previous scores
  beat it. Until ``min_history`` scores have been seen it falls back to a fixed
  threshold (or keeps everything). The window follows input order, so the same input
  in the same order gets the same decisions in file mode and in the stream.

:class:`ThresholdPolicy` picks the policy of an example's source (``per_source``) or
the default one. Policies are written as short specs, from settings or the CLI:
``"0.05"`` is a fixed threshold, ``"top:0.8"`` (or ``"top:80%"``) a quota.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class FixedThreshold:
    """Keeps scores at or above ``value``."""

    value: float

    def keep(self, score: float) -> bool:
        return score >= self.value

    def spec(self) -> str:
        return repr(float(self.value))

    def version(self) -> dict[str, Any]:
        return {"kind": "fixed", "threshold": float(self.value)}


class WindowQuota:
    """Keeps a score when it would rank in the top ``keep_frac`` of the last ``window`` scores.

    Args:
        keep_frac: share to keep, in (0, 1].
        window: how many previous scores the rank is taken against.
        min_history: scores needed before the quota applies; before that ``fallback``
            decides (a :class:`FixedThreshold`, or None to keep).
    """

    def __init__(self, keep_frac: float, window: int = 1000, min_history: int = 100,
                 fallback: FixedThreshold | None = None) -> None:
        if not 0.0 < keep_frac <= 1.0:
            raise ValueError(f"keep_frac must be in (0, 1] (the share kept), got {keep_frac!r}")
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window!r}")
        if not 0 <= min_history <= window:
            raise ValueError(f"min_history must be in [0, window={window}], got {min_history!r}")
        self.keep_frac = float(keep_frac)
        self.window = int(window)
        self.min_history = int(min_history)
        self.fallback = fallback
        self._scores: deque[float] = deque()  # arrival order
        self._sorted: list[float] = []        # the same scores, sorted

    def keep(self, score: float) -> bool:
        score = float(score)
        if score != score:  # NaN: never kept, never enters the window
            return False
        n = len(self._scores)
        if n < self.min_history or n == 0:
            kept = self.fallback.keep(score) if self.fallback is not None else True
        else:
            better = n - bisect_right(self._sorted, score)
            kept = better < self.keep_frac * n
        if n == self.window:
            old = self._scores.popleft()
            del self._sorted[bisect_left(self._sorted, old)]
        self._scores.append(score)
        insort(self._sorted, score)
        return kept

    def state(self) -> list[float]:
        """The window's scores, oldest first (what a snapshot saves)."""
        return list(self._scores)

    def restore(self, scores: Iterable[float]) -> None:
        """Replaces the window with ``scores`` (oldest first; only the last ``window`` are kept)."""
        self._scores.clear()
        self._sorted.clear()
        for score in list(scores)[-self.window:]:
            score = float(score)
            if score == score:
                self._scores.append(score)
                insort(self._sorted, score)

    def spec(self) -> str:
        return f"top:{self.keep_frac:g}"

    def version(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "quota", "keep_frac": self.keep_frac, "window": self.window,
                               "min_history": self.min_history}
        if self.fallback is not None:
            out["fallback_threshold"] = self.fallback.value
        return out


Policy = FixedThreshold | WindowQuota


def parse_policy(spec: str | float, *, window: int = 1000, min_history: int = 100,
                 fallback: FixedThreshold | None = None, where: str = "threshold") -> Policy:
    """``0.05``/``"0.05"`` is a fixed threshold; ``"top:0.8"``/``"top:80%"`` a window quota.

    Raises:
        ValueError: the spec is neither, naming ``where`` and the value.
    """
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return FixedThreshold(float(spec))
    text = str(spec).strip()
    try:
        if text.lower().startswith("top:"):
            frac_text = text[4:].strip()
            frac = float(frac_text[:-1]) / 100 if frac_text.endswith("%") else float(frac_text)
            return WindowQuota(frac, window=window, min_history=min(min_history, window), fallback=fallback)
        return FixedThreshold(float(text))
    except ValueError as exc:
        raise ValueError(f"{where} must be a number (fixed threshold) or 'top:FRACTION' / 'top:PERCENT%' "
                         f"(keep the top share of a sliding window), got {spec!r} ({exc})") from None


def parse_per_source(entries: Iterable[str] | Mapping[str, str | float], **kwargs: Any) -> dict[str, Policy]:
    """``["alpaca=0.1", "dolly=top:0.5"]`` (or a mapping) to one policy per source.

    Raises:
        ValueError: an entry without ``=``, an empty source or a bad spec.
    """
    if isinstance(entries, Mapping):
        items = list(entries.items())
    else:
        items = []
        for entry in entries:
            source, sep, spec = str(entry).partition("=")
            if not sep or not source.strip():
                raise ValueError(f"per_source entries look like 'SOURCE=0.1' or 'SOURCE=top:0.8', got {entry!r}")
            items.append((source.strip(), spec))
    return {source: parse_policy(spec, where=f"per_source[{source!r}]", **kwargs) for source, spec in items}


class ThresholdPolicy:
    """The policy of each source: its own if configured, else the default.

    Args:
        default: the policy for sources without their own.
        per_source: source name to policy; each quota keeps its own window.
    """

    def __init__(self, default: Policy, per_source: Mapping[str, Policy] | None = None) -> None:
        self.default = default
        self.per_source = dict(per_source or {})

    def keep(self, score: float, source: str | None) -> bool:
        policy = self.per_source.get(source, self.default) if source is not None else self.default
        return policy.keep(score)

    def quotas(self) -> dict[str | None, WindowQuota]:
        """The quota policies by source (None: the default), i.e. the ones with state."""
        out: dict[str | None, WindowQuota] = {}
        if isinstance(self.default, WindowQuota):
            out[None] = self.default
        out.update({k: v for k, v in self.per_source.items() if isinstance(v, WindowQuota)})
        return out

    def state(self) -> dict[str, Any]:
        """JSON-able windows of every quota: ``{"default": [...], "per_source": {source: [...]}}``."""
        quotas = self.quotas()
        return {"default": quotas[None].state() if None in quotas else None,
                "per_source": {k: v.state() for k, v in quotas.items() if k is not None}}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Refills the quota windows from :meth:`state`; quotas the state does not name stay as they are."""
        quotas = self.quotas()
        if None in quotas and state.get("default") is not None:
            quotas[None].restore(state["default"])
        for source, scores in (state.get("per_source") or {}).items():
            if source in quotas:
                quotas[source].restore(scores)

    def version(self) -> dict[str, Any]:
        out = {"default": self.default.version()}
        if self.per_source:
            out["per_source"] = {k: v.version() for k, v in sorted(self.per_source.items())}
        return out

