"""CREATE OR REPLACE ... AS SELECT on the test broker: the running query restarts with the new statement
under the same id, going on from its committed offsets (no record written twice, none by the old one)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from streamml.errors import SqlError
from streamml.kafka import BatchConsumer, Producer
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running

pytestmark = pytest.mark.broker


def test_a_replaced_query_goes_on_with_its_new_statement(
    session: Session, kafka_config: dict, unique: Callable[[str], str]
) -> None:
    source, sink = unique("numbers"), unique("scaled")
    session.execute(
        f"CREATE STREAM numbers (N INT) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON', PARTITIONS=1);"
        f"CREATE STREAM scaled WITH (KAFKA_TOPIC='{sink}') AS SELECT N, N * 2 AS M FROM numbers;"
    )
    out: list[dict] = []

    def send(*numbers: int) -> None:
        with Producer(kafka_config) as producer:
            producer.produce_batch(source, [orjson.dumps({"N": n}) for n in numbers])

    with running(session) as runner, BatchConsumer(kafka_config, [sink], start="earliest") as reader:

        def read(count: int) -> bool:
            out.extend(orjson.loads(v) for v in reader.poll_batch(100, 0.2).values)
            return len(out) >= count

        send(1, 2)
        assert wait_for(lambda: read(2), 60), out
        with pytest.raises(SqlError, match="cannot move 'SCALED' from topic"):
            session.execute("CREATE OR REPLACE STREAM scaled AS SELECT N, N * 10 AS M FROM numbers;")
        (replaced,) = session.execute(f"CREATE OR REPLACE STREAM scaled WITH (KAFKA_TOPIC='{sink}') AS "
                                      "SELECT N, N * 10 AS M FROM numbers;")  # fmt: skip
        assert wait_for(lambda: any(m.query_id == replaced.result.query_id for m in runner.status()), 30)
        send(3)
        assert wait_for(lambda: read(3), 60), out
        assert [len(runner.status())] == [1]
    assert out == [{"N": 1, "M": 2}, {"N": 2, "M": 4}, {"N": 3, "M": 30}]
