"""The repeat filter: a flood of one message becomes a few lines and a count, nothing hidden silently."""

from __future__ import annotations

import logging

import pytest

from streams.log_limit import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured():
    """A logger whose only handler carries a RepeatFilter on a fake clock; yields (logger, lines, clock, filter)."""
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.name} {record.getMessage()}")

    clock = Clock()
    handler = ListHandler()
    flt = RepeatFilter(window_s=30.0, burst=3, clock=clock)
    handler.addFilter(flt)
    root = logging.getLogger()
    root.addHandler(handler)
    log = logging.getLogger("test.flood")
    log.setLevel(logging.INFO)
    try:
        yield log, lines, clock, flt
    finally:
        root.removeHandler(handler)


def test_a_flood_of_one_template_is_cut_to_the_burst_and_counted(captured):
    log, lines, clock, _flt = captured
    for i in range(110):  # one second of the outage logging measured in issue 10
        log.error("Unable connect to node with id %s: %s", 1, f"attempt {i}")
        clock.now += 0.01
    assert len(lines) == 3
    clock.now += 30.0
    log.error("Unable connect to node with id %s: %s", 1, "again")
    assert len(lines) == 4 and "107 similar messages suppressed" in lines[-1]


def test_messages_formatted_before_logging_count_as_one_kind_and_others_pass(captured):
    log, lines, clock, _flt = captured
    for offset in range(10):
        log.warning(f"fetch offset {offset} is out of range")  # noqa: G004 - what faust and aiokafka do
    log.warning("something else entirely")
    assert len(lines) == 4 and lines[-1].endswith("something else entirely")


def test_a_kind_that_went_quiet_is_summed_up_on_the_next_record_and_at_flush(captured):
    log, lines, clock, flt = captured
    for _ in range(10):
        log.error("broker down")
    clock.now += 31.0
    log.info("broker back")  # any later record reports the quiet kind
    assert any(line.startswith("sieve.log suppressed 7 similar messages from test.flood") for line in lines), lines
    for _ in range(5):
        log.error("broker down")
    flt.flush()
    assert lines[-1].startswith("sieve.log suppressed 2 similar messages from test.flood")


def test_one_record_on_two_handlers_is_counted_once(captured):
    log, lines, _clock, flt = captured
    other: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            other.append(record.getMessage())

    second = ListHandler()
    second.addFilter(flt)
    logging.getLogger().addHandler(second)
    try:
        for _ in range(3):
            log.error("same")
    finally:
        logging.getLogger().removeHandler(second)
    assert len(lines) == 3 and len(other) == 3
