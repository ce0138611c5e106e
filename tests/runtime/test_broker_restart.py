"""A broker restarted under a running query: the query goes on by itself, every record exactly once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamml.config import Settings
from streamml.kafka import Admin, BatchConsumer, LocalBroker, Producer, client_config
from streamml.kafka.process import free_port
from streamml.runtime.options import RuntimeOptions
from streamml.runtime.runner import Runner
from streamml.runtime.session import Session, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RECORDS = 40_000


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[LocalBroker, Settings]]:
    """A broker of this test's own, on fixed ports, so it can be stopped and started again."""
    settings = Settings(home=tmp_path, broker_port=free_port(), controller_port=free_port(), broker_heap="512m")
    broker = LocalBroker(settings)
    info = broker.start()
    try:
        yield broker, Settings(bootstrap=info.bootstrap, home=tmp_path, service_id="restart")
    finally:
        broker.stop()


def committed_ids(config: dict, topic: str) -> list[int]:
    ids: list[int] = []
    with BatchConsumer(config, [topic], isolation="read_committed", track_end=True) as reader:
        while not reader.reached_end():
            ids.extend(json.loads(v)["ID"] for v in reader.poll_batch(10_000, 0.5).values if v is not None)
    return ids


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(
    own_broker: tuple[LocalBroker, Settings], unique: Callable[[str], str]
) -> None:
    broker, settings = own_broker
    config = client_config(settings)
    source, sink = unique("src"), unique("out")
    Admin(config).create_topic(source, partitions=3)
    with Producer(config) as producer:
        values = [json.dumps({"id": i, "v": i * 0.5}).encode() for i in range(RECORDS)]
        producer.produce_batch(source, values, [str(i).encode() for i in range(RECORDS)])
    session = Session(settings)
    session.execute(f"CREATE STREAM src (id INT, v DOUBLE) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")
    session.execute(f"CREATE STREAM out WITH (KAFKA_TOPIC='{sink}') AS SELECT id, v * 2 AS w FROM src;")
    # small batches, so the stream is still flowing when the broker goes away
    runner = Runner(settings, RuntimeOptions(max_batch=200, max_wait_ms=20), refresh_s=0.5, publish_status=False)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: bool(runner.status()) and runner.status()[0].records_out >= 2_000, 90)
        broker.stop()
        assert runner.status()[0].records_out < RECORDS  # stopped mid-stream
        broker.start()
        assert wait_for(lambda: len(committed_ids(config, sink)) >= RECORDS, 240, interval_s=2)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()  # shutdown is bounded
    ids = committed_ids(config, sink)
    assert sorted(ids) == list(range(RECORDS))
