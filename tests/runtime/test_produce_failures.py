"""Records the cluster refuses on the way out: dead-lettered by the produce stage, never a loop."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from streamml.kafka import Admin, BatchConsumer, Producer
from streamml.runtime.deadletter import H_KIND, H_OFFSET, H_TRUNCATED, MAX_VALUE_BYTES, header_dict
from streamml.runtime.naming import dead_letter_topic
from streamml.runtime.options import ErrorPolicy, RuntimeOptions
from streamml.runtime.query import PersistentQuery
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running

pytestmark = pytest.mark.broker

BIG_AT = 2_500
BIG = 3 * 1024 * 1024


def read_all(config: dict, topic: str) -> tuple[list[bytes | None], list[dict[str, str]]]:
    values: list[bytes | None] = []
    headers: list[dict[str, str]] = []
    with BatchConsumer(config, [topic], isolation="read_committed", track_end=True) as reader:
        while not reader.reached_end():
            batch = reader.poll_batch(10_000, 0.5)
            values.extend(batch.values)
            headers.extend(header_dict(h) for h in batch.headers)
    return values, headers


def start_pipeline(session: Session, admin: Admin, config: dict, unique: Callable[[str], str]) -> tuple[str, str]:
    """5,001 records, one of them 3 MB, into a topic that takes it; the output topic takes 1 MB records."""
    source, sink = unique("src"), unique("out")
    admin.create_topic(source, partitions=2, config={"max.message.bytes": str(8 * 1024 * 1024)})
    admin.create_topic(sink, partitions=2, config={"max.message.bytes": "1048576"})
    values = [json.dumps({"id": i, "s": "x" * (BIG if i == BIG_AT else 10)}).encode() for i in range(5001)]
    with Producer(config, {"message.max.bytes": 16 * 1024 * 1024}) as producer:
        producer.produce_batch(source, values, [str(i).encode() for i in range(5001)])
    session.execute(f"CREATE STREAM src (id INT, s VARCHAR) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")
    outcome = session.execute(f"CREATE STREAM out WITH (KAFKA_TOPIC='{sink}') AS SELECT id, s FROM src;")
    query_id = outcome[0].result.query_id
    assert query_id is not None
    return sink, dead_letter_topic(session.settings.service_id, query_id)


def output_ids(config: dict, sink: str) -> list[int]:
    values, _ = read_all(config, sink)
    return sorted(json.loads(v)["ID"] for v in values if v is not None)


def test_an_output_too_large_for_its_topic_is_dead_lettered_and_the_rest_commits(
    session: Session, admin: Admin, kafka_config: dict, unique: Callable[[str], str]
) -> None:
    sink, dlq = start_pipeline(session, admin, kafka_config, unique)
    with running(session):
        assert wait_for(lambda: admin.exists(dlq) and sum(h for _, h in admin.watermarks(dlq).values()) >= 1, 90)
        assert wait_for(lambda: len(output_ids(kafka_config, sink)) >= 5000, 90)
    assert output_ids(kafka_config, sink) == [i for i in range(5001) if i != BIG_AT]
    values, headers = read_all(kafka_config, dlq)
    assert len(values) == 1
    assert headers[0][H_KIND] == "produce"
    assert "exceeds" in headers[0]["streamml.error.message"]
    assert int(headers[0][H_TRUNCATED]) > BIG
    assert len(values[0] or b"") == MAX_VALUE_BYTES
    assert headers[0][H_OFFSET].isdigit()


def test_a_record_the_broker_refuses_is_isolated_instead_of_looping(
    session: Session, admin: Admin, kafka_config: dict, unique: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # no size check before producing: the broker refuses the record, and the query has to find it
    monkeypatch.setattr(PersistentQuery, "_record_limit", lambda self: 64 * 1024 * 1024)
    sink, dlq = start_pipeline(session, admin, kafka_config, unique)
    with running(session, RuntimeOptions(max_wait_ms=50, max_batch=1000)) as runner:
        assert wait_for(lambda: len(output_ids(kafka_config, sink)) >= 5000, 120)
        metrics = runner.status()[0]
    assert output_ids(kafka_config, sink) == [i for i in range(5001) if i != BIG_AT]
    values, headers = read_all(kafka_config, dlq)
    assert [h[H_KIND] for h in headers] == ["produce"]
    assert (values[0] or b"").startswith(f'{{"id": {BIG_AT},'.encode())  # the source record, truncated
    assert int(headers[0][H_TRUNCATED]) > BIG
    assert "too large" in headers[0]["streamml.error.message"].lower()
    assert metrics.rewinds <= 15  # halving 1,000 down to 1, not one rewind per attempt forever


def test_the_fail_policy_stops_the_query_with_the_reason_and_no_restart(
    session: Session, admin: Admin, kafka_config: dict, unique: Callable[[str], str]
) -> None:
    start_pipeline(session, admin, kafka_config, unique)
    options = RuntimeOptions(max_wait_ms=50, on_produce_error=ErrorPolicy.FAIL)
    with running(session, options) as runner:
        assert wait_for(lambda: bool(runner.status()) and runner.status()[0].state == "FAILED", 90)
        metrics = runner.status()[0]
        assert "produce failed at" in (metrics.error or "") and "exceeds" in (metrics.error or "")
        supervisor = runner._running[metrics.query_id].thread
        assert wait_for(lambda: not supervisor.is_alive(), 30)  # not restarted: its supervisor is done
        assert runner.status()[0].state == "FAILED"
