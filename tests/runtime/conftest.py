from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pytest

from streamml.config import Settings
from streamml.formats import get_format
from streamml.kafka import Producer
from streamml.runtime.options import RuntimeOptions
from streamml.runtime.runner import Runner
from streamml.runtime.session import Session, wait_for


@pytest.fixture
def session(kafka_settings: Settings, unique: Callable[[str], str]) -> Session:
    """A session whose catalog lives in a topic of its own, so tests do not see each other's streams."""
    return Session(kafka_settings.model_copy(update={"service_id": unique("svc")}))


@contextmanager
def running(session: Session, options: RuntimeOptions | None = None) -> Iterator[Runner]:
    """Run the session's persistent queries in a background runner for the duration of the block."""
    runner = Runner(session.settings, options or RuntimeOptions(max_wait_ms=50), refresh_s=0.5).start()
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(60)


def produce_table(config: dict, topic: str, table: pa.Table, fmt: str = "JSON", keys: list[bytes] | None = None,
                  timestamps: list[int] | None = None) -> None:  # fmt: skip
    values = get_format(fmt, table.schema).encode(table)
    with Producer(config) as producer:
        producer.produce_batch(topic, values, keys, timestamps=timestamps)


def pull_until(session: Session, sql: str, rows: int, timeout_s: float = 60.0) -> pa.Table:
    """Run a pull query until it returns at least ``rows`` rows."""
    result: list[pa.Table] = [pa.table({})]

    def enough() -> bool:
        result[0] = session.query(sql)
        return result[0].num_rows >= rows

    wait_for(enough, timeout_s, interval_s=0.5)
    return result[0]
