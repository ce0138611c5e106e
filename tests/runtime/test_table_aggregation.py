"""An aggregation over a table on the test broker: updates move a row between groups, tombstones delete it,
and the counts go down; stopped and started again, the query still knows which row each key contributed
(restored from its changelog), so later changes are taken back correctly."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from streamml.kafka import BatchConsumer, Producer
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running

pytestmark = pytest.mark.broker


def test_counts_per_region_follow_the_tables_changes_across_a_restart(
    session: Session, kafka_config: dict, unique: Callable[[str], str]
) -> None:
    users, counts = unique("users"), unique("per-region")
    session.execute(
        f"CREATE TABLE users (ID VARCHAR PRIMARY KEY, REGION VARCHAR) WITH (KAFKA_TOPIC='{users}', "
        "VALUE_FORMAT='JSON', PARTITIONS=1);"
        f"CREATE TABLE per_region WITH (KAFKA_TOPIC='{counts}') AS SELECT REGION, COUNT(*) AS N FROM users "
        "GROUP BY REGION;"
    )
    latest: dict[str, int] = {}

    def send(*changes: tuple[str, str | None]) -> None:
        values = [None if region is None else orjson.dumps({"REGION": region}) for _, region in changes]
        with Producer(kafka_config) as producer:
            producer.produce_batch(users, values, [user.encode() for user, _ in changes])

    def counted(expected: dict[str, int]) -> bool:
        with BatchConsumer(kafka_config, [counts], track_end=True) as reader:
            while not reader.reached_end():
                batch = reader.poll_batch(1000, 0.3)
                latest.update(
                    (k.decode(), orjson.loads(v)["N"]) for k, v in zip(batch.keys, batch.values, strict=True) if v
                )
        return latest == expected

    send(("ann", "eu"), ("bob", "eu"), ("cy", "us"))
    with running(session):
        assert wait_for(lambda: counted({"eu": 2, "us": 1}), 60), latest
        send(("bob", "us"))  # bob moves
        assert wait_for(lambda: counted({"eu": 1, "us": 2}), 60), latest
    send(("ann", None), ("cy", "eu"))  # ann deleted, cy moves: known only from the restored rows
    with running(session):
        assert wait_for(lambda: counted({"eu": 1, "us": 1}), 60), latest
