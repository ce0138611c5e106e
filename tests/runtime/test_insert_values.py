"""INSERT INTO ... VALUES against the test broker: one record per statement, keyed and encoded as the stream
declares, with ROWTIME as its timestamp when given; a query over the stream reads it like any record."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from streamml.errors import SqlError
from streamml.kafka import BatchConsumer
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running

pytestmark = pytest.mark.broker


def read_all(config: dict, topic: str, count: int) -> list[tuple[bytes | None, bytes | None, int]]:
    records: list[tuple[bytes | None, bytes | None, int]] = []
    with BatchConsumer(config, [topic], start="earliest") as reader:

        def enough() -> bool:
            batch = reader.poll_batch(100, 0.2)
            records.extend(zip(batch.keys, batch.values, batch.timestamps.tolist(), strict=True))
            return len(records) >= count

        assert wait_for(enough, 30, 0.05), records
    return records


def test_insert_values_writes_one_record_per_statement(session: Session, unique: Callable[[str], str]) -> None:
    topic, doubled = unique("readings"), unique("doubled")
    session.execute(f"CREATE STREAM readings (ID VARCHAR KEY, N INT, NOTE VARCHAR) WITH (KAFKA_TOPIC='{topic}', "
                    "VALUE_FORMAT='JSON', KEY_FORMAT='JSON', PARTITIONS=1);")  # fmt: skip
    (first,) = session.execute("INSERT INTO readings (ID, N, NOTE) VALUES ('a', 1, 'one');")
    assert "1 row written" in first.result.message
    session.execute("INSERT INTO readings (N, ROWTIME) VALUES ('2', 1000);")  # no key, the literal coerced
    session.execute(f"CREATE STREAM doubled WITH (KAFKA_TOPIC='{doubled}') AS SELECT ID, N * 2 AS M FROM readings;")
    records = read_all(session.config, topic, 2)
    assert records[0][:2] == (b'"a"', b'{"N":1,"NOTE":"one"}')
    assert records[1] == (None, b'{"N":2,"NOTE":null}', 1000)
    with running(session):
        out = read_all(session.config, doubled, 2)
    assert [(k, orjson.loads(v)) for k, v, _ in out] == [(b'"a"', {"M": 2}), (None, {"M": 4})]
    with pytest.raises(SqlError, match="has no column 'NAME'"):
        session.execute("INSERT INTO readings (NAME) VALUES ('x');")
