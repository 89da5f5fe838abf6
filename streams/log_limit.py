"""Keep a flood of one log message from drowning the log (a broker outage logged ~110 lines/s).

:class:`RepeatFilter` sits on the log handlers. It lets the first ``burst`` records of
one kind through per ``window_s`` and counts the rest; the next record of that kind
after the window says how many were suppressed, and a kind that went quiet is summed
up by a line of its own (``suppressed N similar messages ...``) on the next record of
any kind, so nothing is hidden without saying so. A kind is the logger, the level and
the message template (its ``%s`` form; digits count as one for messages formatted
before logging, such as f-strings).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

#: Seconds of one window.
WINDOW_S = 30.0
#: Records of one kind let through per window.
BURST = 3
#: The logger that reports suppressed records (never itself limited).
REPORT_LOGGER = "sieve.log"

_DIGITS = re.compile(r"\d+")


@dataclass
class _Kind:
    start: float
    seen: int = 0
    suppressed: int = 0
    sample: str = ""


class RepeatFilter(logging.Filter):
    """Let ``burst`` records of one kind through per ``window_s`` seconds (see the module docstring).

    Args:
        window_s: seconds of one window.
        burst: records of one kind let through per window.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, window_s: float = WINDOW_S, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if window_s <= 0 or burst < 1:
            raise ValueError(f"RepeatFilter needs window_s > 0 and burst >= 1, got {window_s}, {burst}")
        self.window_s, self.burst, self.clock = window_s, burst, clock
        self._kinds: dict[tuple, _Kind] = {}
        self._lock = threading.RLock()
        self._reporting = threading.local()
        self._last_sweep = clock()

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple:
        msg = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        if not record.args:
            msg = _DIGITS.sub("#", msg)
        return record.name, record.levelno, msg

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == REPORT_LOGGER or getattr(self._reporting, "on", False):
            return True
        decided = getattr(record, "_sieve_repeat_allowed", None)
        if decided is not None:  # the same record on another handler: counted once
            return decided
        allowed = self._decide(record)
        record._sieve_repeat_allowed = allowed
        return allowed

    def _decide(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        with self._lock:
            key = self.kind(record)
            kind = self._kinds.get(key)
            if kind is None or now - kind.start >= self.window_s:
                if kind is not None and kind.suppressed:
                    record.msg = f"{record.msg} [and {kind.suppressed} similar messages suppressed in the " \
                                 f"{now - kind.start:.0f}s before]"
                kind = self._kinds[key] = _Kind(now)
            kind.seen += 1
            allowed = kind.seen <= self.burst
            if not allowed:
                kind.suppressed += 1
                kind.sample = kind.sample or _short(record)
            stale = self._stale(now)
        if stale:
            self._report(stale)
        return allowed

    def _stale(self, now: float) -> list[tuple[tuple, _Kind]]:
        """Kinds whose window ended with records suppressed (checked at most once a second)."""
        if now - self._last_sweep < 1.0:
            return []
        self._last_sweep = now
        out = [(key, kind) for key, kind in self._kinds.items() if now - kind.start >= self.window_s]
        for key, _kind in out:
            del self._kinds[key]
        return [(key, kind) for key, kind in out if kind.suppressed]

    def flush(self) -> None:
        """Report every kind with suppressed records now (at shutdown)."""
        with self._lock:
            pending = [(key, kind) for key, kind in self._kinds.items() if kind.suppressed]
            self._kinds.clear()
        self._report(pending)

    def _report(self, kinds: list[tuple[tuple, _Kind]]) -> None:
        log = logging.getLogger(REPORT_LOGGER)
        self._reporting.on = True
        try:
            for (name, level, _msg), kind in kinds:
                log.log(level, "suppressed %d similar messages from %s in %.0fs, like: %s", kind.suppressed, name,
                        self.window_s, kind.sample)
        finally:
            self._reporting.on = False


def _short(record: logging.LogRecord, limit: int = 300) -> str:
    try:
        text = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not break logging
        text = str(record.msg)
    return text if len(text) <= limit else text[:limit] + "..."


def install(handlers: list[logging.Handler] | None = None, **kwargs) -> RepeatFilter:
    """Put one :class:`RepeatFilter` on ``handlers`` (default: the root logger's); returns it."""
    flt = RepeatFilter(**kwargs)
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        handler.addFilter(flt)
    return flt
