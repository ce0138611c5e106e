"""Expressions as ksqlDB documents them: IS [NOT] DISTINCT FROM, ARRAY/STRUCT/MAP constructors, COUNT()."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from streamml.errors import SqlError
from streamml.sql import SqlEngine


@pytest.fixture
def engine() -> SqlEngine:
    eng = SqlEngine()
    eng.execute("CREATE STREAM t (K VARCHAR KEY, A INT, B VARCHAR) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');")
    return eng


ROWS = pa.table({"K": ["x", "y", "x"], "A": pa.array([1, None, 3], pa.int32()), "B": ["one", None, "three"]})


def values(engine: SqlEngine, expr: str) -> list[Any]:
    plan = engine.plan(f"SELECT {expr} AS V FROM t EMIT CHANGES;")
    return plan.executor().execute(ROWS).table.column("V").to_pylist()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("A IS DISTINCT FROM 1", [False, True, True]),
        ("A IS NOT DISTINCT FROM 1", [True, False, False]),
        ("A IS NOT DISTINCT FROM NULL", [False, True, False]),
        ("B IS DISTINCT FROM B", [False, False, False]),
        ("ARRAY[A, 10]", [[1, 10], [None, 10], [3, 10]]),
        ("ARRAY[A, 2.5]", [[1.0, 2.5], [None, 2.5], [3.0, 2.5]]),
        ("ARRAY[A, 10][2]", [10, 10, 10]),
        ("STRUCT(N := A, S := B)", [{"N": 1, "S": "one"}, {"N": None, "S": None}, {"N": 3, "S": "three"}]),
        ("STRUCT(N := A)->N", [1, None, 3]),
        ("MAP('a' := A, 'b' := 0)['b']", [0, 0, 0]),
        ("MAP(K := A)", [[("x", 1)], [("y", None)], [("x", 3)]]),
    ],
)
def test_expression(engine: SqlEngine, expr: str, expected: list[Any]) -> None:
    assert values(engine, expr) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("ARRAY[A, 'x']", "needs one element type"),
        ("STRUCT(N := A, N := B)", "names each field once"),
        ("STRUCT(t.A := 1)", "named by an identifier"),
        ("CONCAT(N := A)", "build a STRUCT or a MAP"),
        ("A IS DISTINCT FROM 'x'", "cannot compare"),
    ],
)
def test_refused_at_the_statement(engine: SqlEngine, expr: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        engine.plan(f"SELECT {expr} AS V FROM t EMIT CHANGES;")


def test_count_without_arguments_counts_rows(engine: SqlEngine) -> None:
    plan = engine.plan("SELECT K, COUNT() AS N, COUNT(A) AS C FROM t GROUP BY K EMIT CHANGES;")
    out = plan.executor().execute(ROWS).table.to_pylist()
    assert {r["K"]: (r["N"], r["C"]) for r in out} == {"x": (2, 2), "y": (1, 0)}


def test_latest_and_earliest_by_offset_with_a_count(engine: SqlEngine) -> None:
    plan = engine.plan(
        "SELECT K, LATEST_BY_OFFSET(A, 2) AS L, EARLIEST_BY_OFFSET(A, 2, FALSE) AS E, LATEST_BY_OFFSET(B, TRUE) AS B "
        "FROM t GROUP BY K EMIT CHANGES;"
    )
    executor = plan.executor()
    executor.execute(ROWS)
    more = pa.table({"K": ["x", "x"], "A": pa.array([None, 7], pa.int32()), "B": [None, "seven"]})
    latest = {r["K"]: r for r in executor.execute(more).table.to_pylist()}
    assert latest["x"]["L"] == [3, 7] and latest["x"]["E"] == [1, 3] and latest["x"]["B"] == "seven"
    for bad in ("LATEST_BY_OFFSET(A, 0)", "LATEST_BY_OFFSET(A, 'two')", "EARLIEST_BY_OFFSET(A, 2, 3)"):
        with pytest.raises(SqlError, match=r"takes .*col"):
            engine.plan(f"SELECT K, {bad} AS V FROM t GROUP BY K EMIT CHANGES;")


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("A = '1'", ["one"]),
        ("A IN ('3', 7)", ["three"]),
        ("A BETWEEN '0' AND '1.5'", ["one"]),
        ("B = 'one' AND K = 'x'", ["one"]),
        ("B IN (1, 'three')", ["three"]),
    ],
)
def test_literals_coerce_as_ksqldb_documents(engine: SqlEngine, where: str, expected: list[str]) -> None:
    """A STRING literal holding a number compares with a number; any literal compares with a STRING as text."""
    plan = engine.plan(f"SELECT B FROM t WHERE {where} EMIT CHANGES;")
    assert plan.executor().execute(ROWS).table.column("B").to_pylist() == expected
    with pytest.raises(SqlError, match="cannot compare"):
        engine.plan("SELECT B FROM t WHERE A = 'one' EMIT CHANGES;")
