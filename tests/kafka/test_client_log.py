"""librdkafka's log lines through the aggregating logger: repeats are counted, not printed."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Producer as CProducer

from streamml.kafka.client_log import AggregatingLog


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def captured() -> tuple[logging.Logger, Capture]:
    logger = logging.getLogger(f"test.client_log.{time.monotonic_ns()}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Capture()
    logger.addHandler(handler)
    return logger, handler


def test_repeats_of_a_line_are_counted_once_and_reported_on_flush(captured: tuple[logging.Logger, Capture]) -> None:
    logger, handler = captured
    log = AggregatingLog(logger, quiet_s=3600)
    for attempt in range(100):
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", f"Connect failed (after {attempt}ms)")
    log.log(logging.WARNING, "%s [%s] %s", "STATE", "rdkafka#producer-1", "broker is up again")
    assert len(handler.lines) == 2
    assert "Connect failed" in handler.lines[0] and "broker is up again" in handler.lines[1]
    log.flush()
    assert handler.lines[2].endswith("(repeated 99 times)")


def test_a_line_recurring_after_the_quiet_period_says_how_often_it_was_folded(
    captured: tuple[logging.Logger, Capture],
) -> None:
    logger, handler = captured
    log = AggregatingLog(logger, quiet_s=0.0)  # every line is past the quiet period
    log.log(logging.ERROR, "down 1")
    log.log(logging.ERROR, "down 2")
    assert handler.lines == ["down 1", "down 2"]


def test_a_real_client_logs_through_it(captured: tuple[logging.Logger, Capture]) -> None:
    logger, handler = captured
    producer = CProducer({"bootstrap.servers": "127.0.0.1:1", "logger": AggregatingLog(logger), "debug": "broker"})
    deadline = time.monotonic() + 10
    while not handler.lines and time.monotonic() < deadline:
        producer.poll(0.2)
    assert any("127.0.0.1:1" in line for line in handler.lines)
