"""A table-table join on the test broker: updates and deletes of either table re-join their key, across a
restart of the query (both tables restored from its changelog)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from streamml.kafka import BatchConsumer, Producer
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running

pytestmark = pytest.mark.broker


def test_a_left_join_of_two_tables_follows_both(
    session: Session, kafka_config: dict, unique: Callable[[str], str]
) -> None:
    users, emails, joined = unique("users"), unique("emails"), unique("joined")
    session.execute(
        f"CREATE TABLE users (ID VARCHAR PRIMARY KEY, NAME VARCHAR) WITH (KAFKA_TOPIC='{users}', VALUE_FORMAT='JSON', "
        "PARTITIONS=1);"
        f"CREATE TABLE emails (ID VARCHAR PRIMARY KEY, EMAIL VARCHAR) WITH (KAFKA_TOPIC='{emails}', "
        "VALUE_FORMAT='JSON', PARTITIONS=1);"
        f"CREATE TABLE joined WITH (KAFKA_TOPIC='{joined}') AS SELECT u.ID AS ID, NAME, EMAIL FROM users u "
        "LEFT JOIN emails e ON u.ID = e.ID;"
    )
    latest: dict[str, dict | None] = {}

    def send(topic: str, key: str, value: dict | None) -> None:
        with Producer(kafka_config) as producer:
            producer.produce_batch(topic, [None if value is None else orjson.dumps(value)], [key.encode()])

    def joined_is(expected: dict[str, dict | None]) -> bool:
        with BatchConsumer(kafka_config, [joined], track_end=True) as reader:
            while not reader.reached_end():
                batch = reader.poll_batch(1000, 0.3)
                latest.update(
                    (k.decode(), v and orjson.loads(v)) for k, v in zip(batch.keys, batch.values, strict=True)
                )
        return latest == expected

    send(users, "u1", {"NAME": "ann"})
    with running(session):
        assert wait_for(lambda: joined_is({"u1": {"NAME": "ann", "EMAIL": None}}), 60), latest
        send(emails, "u1", {"EMAIL": "ann@x"})
        assert wait_for(lambda: joined_is({"u1": {"NAME": "ann", "EMAIL": "ann@x"}}), 60), latest
    send(users, "u1", {"NAME": "anna"})  # joined with the email the restored state remembers
    with running(session):
        assert wait_for(lambda: joined_is({"u1": {"NAME": "anna", "EMAIL": "ann@x"}}), 60), latest
        send(users, "u1", None)
        assert wait_for(lambda: joined_is({"u1": None}), 60), latest
