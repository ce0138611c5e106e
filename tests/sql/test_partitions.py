"""Stateful queries on batches that mix partitions: split by ROWPARTITION, state per partition."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from pyarrow import ipc

from streamml.sql import SqlEngine


def _state(data: bytes) -> list[dict]:
    return sorted(ipc.open_stream(io.BytesIO(data)).read_all().to_pylist(), key=str)


@pytest.fixture
def eng() -> SqlEngine:
    e = SqlEngine()
    e.execute(
        "CREATE STREAM pings (host VARCHAR KEY, code INT) WITH (KAFKA_TOPIC='pings', VALUE_FORMAT='JSON');"
        "CREATE STREAM clicks (user VARCHAR, page VARCHAR) WITH (KAFKA_TOPIC='clicks', VALUE_FORMAT='JSON');"
        "CREATE STREAM buys (user VARCHAR, amount DOUBLE) WITH (KAFKA_TOPIC='buys', VALUE_FORMAT='JSON');"
        "CREATE TABLE users (userid VARCHAR PRIMARY KEY, region VARCHAR) WITH (KAFKA_TOPIC='users', VALUE_FORMAT='JSON');"
        "CREATE STREAM orders (user VARCHAR, qty BIGINT) WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='JSON');"
    )
    return e


def test_aggregate_batch_mixing_partitions_keeps_state_per_partition(eng: SqlEngine) -> None:
    plan = eng.plan("SELECT host, COUNT(*) AS n, COLLECT_LIST(code) AS codes FROM pings GROUP BY host;")
    ex = plan.executor()
    out = ex.execute(
        pa.table({"HOST": ["a", "a", "b", "a", "a"], "CODE": [1, 2, 3, 4, 5]}),
        {"ROWPARTITION": [1, 0, 1, 1, 0], "ROWTIME": [1, 2, 3, 4, 5]},
    )
    # partition 0 first, then 1; each in record order
    assert out.table.to_pylist() == [
        {"HOST": "a", "N": 2, "CODES": [2, 5]},
        {"HOST": "a", "N": 2, "CODES": [1, 4]},
        {"HOST": "b", "N": 1, "CODES": [3]},
    ]
    assert out.counters["input"] == 5 and out.counters["output"] == 3
    assert out.indices.tolist() == [-1, -1, -1]
    assert ex.partitions() == [0, 1]
    # the same as feeding each partition on its own
    single = plan.executor()
    single.execute(
        pa.table({"HOST": ["a", "b", "a"], "CODE": [1, 3, 4]}), {"ROWPARTITION": [1, 1, 1], "ROWTIME": [1, 3, 4]}
    )
    assert _state(single.snapshot(1)) == _state(ex.snapshot(1))
    later = ex.execute(pa.table({"HOST": ["a"], "CODE": [6]}), {"ROWPARTITION": [1]})
    assert later.table.to_pylist() == [{"HOST": "a", "N": 3, "CODES": [1, 4, 6]}]


def test_stream_table_join_is_co_partitioned(eng: SqlEngine) -> None:
    ex = eng.plan(
        "SELECT o.user AS user, o.qty * 9223372036854775807 AS big, u.region FROM orders o "
        "JOIN users u ON o.user = u.userid;"
    ).executor()
    ex.update_table(
        pa.table({"userid": ["x", "y", "x", "y"], "region": ["p0", "p0", "p1", "gone"]}),
        tombstones=[False, False, False, True],
        partition=np.array([0, 0, 1, 1]),
    )
    assert ex.partitions() == [0, 1]
    out = ex.execute(
        pa.table({"USER": ["x", "y", "x", "y", "x"], "QTY": [1, 1, 1, 1, 2]}),
        {"ROWPARTITION": [1, 1, 0, 0, 0]},
    )
    # y has no row in partition 1 (tombstone); row 4 overflows and is set aside with its input position
    got = sorted(zip(out.indices.tolist(), out.table.to_pylist(), strict=True))
    assert [(i, r["USER"], r["REGION"]) for i, r in got] == [(0, "x", "p1"), (2, "x", "p0"), (3, "y", "p0")]
    assert [f.index for f in out.failures] == [4]
    assert out.counters["input"] == 5 and out.counters["failed"] == 1


def test_stream_stream_join_mixing_partitions(eng: SqlEngine) -> None:
    ex = eng.plan(
        "SELECT c.user AS user, c.page, b.amount FROM clicks c JOIN buys b WITHIN 1 MINUTE ON c.user = b.user;"
    ).executor()
    ex.execute(pa.table({"USER": ["u", "u"], "PAGE": ["p0", "p1"]}), {"ROWTIME": [0, 0], "ROWPARTITION": [0, 1]})
    out = ex.execute(
        pa.table({"USER": ["u", "u"], "AMOUNT": [1.0, 2.0]}),
        {"ROWTIME": [10, 10], "ROWPARTITION": [1, 0]},
        side="right",
    )
    assert sorted(zip(out.indices.tolist(), out.table.column("PAGE").to_pylist(), strict=True)) == [
        (0, "p1"),
        (1, "p0"),
    ]
    assert ex.partitions() == [0, 1]


def test_update_table_rejects_partition_count_mismatch(eng: SqlEngine) -> None:
    ex = eng.plan("SELECT o.user, u.region FROM orders o JOIN users u ON o.user = u.userid;").executor()
    with pytest.raises(Exception, match="partitions for 1 table rows"):
        ex.update_table(pa.table({"userid": ["x"], "region": ["r"]}), partition=[0, 1])


def test_joins_key_their_output_by_the_join_key(eng: SqlEngine) -> None:
    table_join = eng.plan("SELECT u.region, o.user AS who, o.qty FROM orders o JOIN users u ON o.user = u.userid;")
    assert table_join.key_columns == ["WHO"]
    assert [c.name for c in table_join.output] == ["WHO", "REGION", "QTY"]
    out = table_join.executor()
    out.update_table(pa.table({"userid": ["x"], "region": ["r"]}))
    result = out.execute(pa.table({"USER": ["x"], "QTY": [3]}))
    assert result.key_columns == ("WHO",)
    assert result.table.to_pylist() == [{"WHO": "x", "REGION": "r", "QTY": 3}]
    # a LEFT JOIN is keyed by the stream side only (the table key may be NULL)
    left = eng.plan("SELECT u.userid, o.qty FROM orders o LEFT JOIN users u ON o.user = u.userid;")
    assert left.key_columns == []
    inner = eng.plan("SELECT u.userid, o.qty FROM orders o JOIN users u ON o.user = u.userid;")
    assert inner.key_columns == ["USERID"]
    streams = eng.plan("SELECT b.amount, c.user AS user FROM clicks c JOIN buys b WITHIN 1 MINUTE ON c.user = b.user;")
    assert streams.key_columns == ["USER"]
    unkeyed = eng.plan("SELECT b.amount FROM clicks c JOIN buys b WITHIN 1 MINUTE ON c.user = b.user;")
    assert unkeyed.key_columns == []
