"""Table-table joins on primary keys, broker-free: each change of either table re-joins its key; the joined
row, or a tombstone when the join has no row for the key any more (INNER, LEFT, RIGHT and FULL OUTER)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from streamml.errors import SqlError
from streamml.sql import SqlEngine


@pytest.fixture
def engine() -> SqlEngine:
    eng = SqlEngine()
    eng.execute(
        "CREATE TABLE a (ID INT PRIMARY KEY, X VARCHAR) WITH (KAFKA_TOPIC='a', VALUE_FORMAT='JSON');"
        "CREATE TABLE b (ID INT PRIMARY KEY, Y VARCHAR) WITH (KAFKA_TOPIC='b', VALUE_FORMAT='JSON');"
        "CREATE STREAM s (ID INT KEY, Z VARCHAR) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');"
    )
    return eng


def changes(executor: Any, side: str, *rows: tuple[int, str | None]) -> tuple[list[dict], list[int]]:
    """Apply one side's changes (a None value deletes the key); the rows and the tombstoned keys it emits."""
    column = "X" if side == "left" else "Y"
    batch = pa.table({"ID": pa.array([r[0] for r in rows], pa.int32()), column: [r[1] for r in rows],
                      "__delete": [r[1] is None for r in rows]})  # fmt: skip
    result = executor.execute(batch, {"ROWTIME": [5] * len(rows)}, side=side)
    return result.table.to_pylist(), sorted(t["ID"] for t in result.tombstones.to_pylist())


@pytest.mark.parametrize(
    ("join", "expected"),
    [
        ("JOIN", [([], [1]), ([{"ID": 1, "X": "x1", "Y": "y1"}], [2]), ([], [1]), ([], [2])]),
        ("LEFT JOIN", [([{"ID": 1, "X": "x1", "Y": None}], []), ([{"ID": 1, "X": "x1", "Y": "y1"}], [2]),
                       ([], [1]), ([], [2])]),
        ("RIGHT JOIN", [([], [1]), ([{"ID": 1, "X": "x1", "Y": "y1"}, {"ID": 2, "X": None, "Y": "y2"}], []),
                        ([{"ID": 1, "X": None, "Y": "y1"}], []), ([], [2])]),
        ("FULL OUTER JOIN", [([{"ID": 1, "X": "x1", "Y": None}], []),
                             ([{"ID": 1, "X": "x1", "Y": "y1"}, {"ID": 2, "X": None, "Y": "y2"}], []),
                             ([{"ID": 1, "X": None, "Y": "y1"}], []), ([], [2])]),
    ],
)  # fmt: skip
def test_each_kind_of_table_join(engine: SqlEngine, join: str, expected: list[tuple[list[dict], list[int]]]) -> None:
    plan = engine.plan(f"SELECT a.ID AS ID, X, Y FROM a {join} b ON a.ID = b.ID EMIT CHANGES;")
    assert (plan.output[0].name, plan.output[0].key) == ("ID", True)
    executor = plan.executor()
    got = [
        changes(executor, "left", (1, "x1")),
        changes(executor, "right", (1, "y1"), (2, "y2")),
        changes(executor, "left", (1, None)),
        changes(executor, "right", (2, None)),
    ]
    assert got == expected


def test_a_table_join_is_a_table(engine: SqlEngine) -> None:
    (created,) = engine.execute("CREATE TABLE ab AS SELECT a.ID AS ID, X, Y FROM a JOIN b ON a.ID = b.ID;")
    assert created.query_id is not None and engine.catalog.get("ab").kind == "TABLE"
    with pytest.raises(SqlError, match="produces a table"):
        engine.execute("CREATE STREAM ab2 AS SELECT a.ID AS ID, X, Y FROM a JOIN b ON a.ID = b.ID;")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT a.ID AS ID, X FROM a JOIN b ON a.X = b.Y", "ON the primary keys"),
        ("SELECT X, Y FROM a JOIN b ON a.ID = b.ID", "select the join key"),
        ("SELECT a.ID AS ID, X FROM a JOIN b WITHIN 1 MINUTE ON a.ID = b.ID", "WITHIN is only allowed"),
        ("SELECT a.ID AS ID, a.ROWTIME AS T FROM a JOIN b ON a.ID = b.ID", "ROWTIME"),
        ("SELECT s.ID AS ID, Z FROM s FULL OUTER JOIN b ON s.ID = b.ID", "a stream-table join is INNER or LEFT"),
    ],
)
def test_refused_at_the_statement(engine: SqlEngine, query: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        engine.plan(query + " EMIT CHANGES;")


@pytest.mark.parametrize(
    ("join", "key", "left_out", "right_out"),
    [
        ("RIGHT JOIN", "w.ID", [], [{"K": 1, "Z": "z1", "W": "w1"}, {"K": 2, "Z": None, "W": "w2"}]),
        ("FULL OUTER JOIN", "s.ID", [{"K": 1, "Z": "z1", "W": None}],
         [{"K": 1, "Z": "z1", "W": "w1"}, {"K": 2, "Z": None, "W": "w2"}]),
    ],
)  # fmt: skip
def test_outer_stream_joins_write_unmatched_records_at_once(
    engine: SqlEngine, join: str, key: str, left_out: list[dict], right_out: list[dict]
) -> None:
    """The unmatched record of an outer side is written at once with NULLs; a FULL join's key is whichever
    side's key the row has."""
    engine.execute("CREATE STREAM w (ID INT KEY, W VARCHAR) WITH (KAFKA_TOPIC='w', VALUE_FORMAT='JSON');")
    plan = engine.plan(f"SELECT {key} AS K, Z, W FROM s {join} w WITHIN 1 MINUTE ON s.ID = w.ID EMIT CHANGES;")
    assert plan.output[0].name == "K" and plan.output[0].key
    executor = plan.executor()
    first = executor.execute(pa.table({"ID": pa.array([1], pa.int32()), "Z": ["z1"]}), {"ROWTIME": [1_000]})
    second = executor.execute(
        pa.table({"ID": pa.array([1, 2], pa.int32()), "W": ["w1", "w2"]}), {"ROWTIME": [2_000, 2_000]}, side="right"
    )
    assert first.table.to_pylist() == left_out
    assert sorted(second.table.to_pylist(), key=lambda r: r["K"]) == right_out
