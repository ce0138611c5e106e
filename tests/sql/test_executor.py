"""Executor behaviour: re-keying, input normalisation, LIMIT, failures in aggregations, INSERT INTO."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streamml.errors import SqlError
from streamml.sql import FunctionRegistry, SqlEngine, udf


@pytest.fixture
def eng() -> SqlEngine:
    registry = FunctionRegistry()

    @udf(name="checked", returns="INT", params=["INT"], registry=registry)
    def checked(x: pa.Array) -> pa.Array:
        if pc.any(pc.less(x, 0)).as_py():
            raise ValueError("negative")
        return x

    engine = SqlEngine(functions=registry)
    engine.execute(
        "CREATE STREAM ev (id VARCHAR KEY, grp VARCHAR, v INT, ts BIGINT) WITH (KAFKA_TOPIC='ev', VALUE_FORMAT='JSON');"
    )
    return engine


BATCH = pa.table({"id": ["a", "b", "c"], "grp": ["x", "y", "x"], "v": pa.array([1, -2, 3], pa.int64())})


def test_key_columns_pass_through_and_input_is_normalised(eng: SqlEngine) -> None:
    plan = eng.plan("SELECT id, v + 1 AS w FROM ev;")
    assert plan.key_columns == ["ID"]
    out = plan.executor().execute(BATCH)  # lower-case names, INT64 values for an INT column
    assert out.table.to_pylist() == [{"ID": "a", "W": 2}, {"ID": "b", "W": -1}, {"ID": "c", "W": 4}]
    assert out.table.schema.field("W").type == pa.int32()


@pytest.mark.parametrize(
    ("sql", "key", "values"),
    [
        ("SELECT grp, v FROM ev PARTITION BY grp;", "GRP", ["x", "y", "x"]),
        ("SELECT v FROM ev PARTITION BY grp;", "GRP", ["x", "y", "x"]),
        ("SELECT UCASE(grp) AS g, v FROM ev PARTITION BY g;", "G", ["X", "Y", "X"]),
        ("SELECT v FROM ev PARTITION BY UCASE(grp);", "KSQL_COL_0", ["X", "Y", "X"]),
    ],
)
def test_partition_by_variants(eng: SqlEngine, sql: str, key: str, values: list[str]) -> None:
    plan = eng.plan(sql)
    assert plan.key_columns == [key]
    out = plan.executor().execute(BATCH)
    assert out.table.column_names[0] == key
    assert out.table.column(key).to_pylist() == values


def test_partition_by_null_drops_the_key(eng: SqlEngine) -> None:
    assert eng.plan("SELECT v FROM ev PARTITION BY NULL;").key_columns == []


def test_limit(eng: SqlEngine) -> None:
    ex = eng.plan("SELECT v FROM ev LIMIT 4;").executor()
    assert ex.execute(BATCH).table.num_rows == 3 and not ex.done
    assert ex.execute(BATCH).table.num_rows == 1 and ex.done


def test_failing_rows_in_aggregation_are_isolated(eng: SqlEngine) -> None:
    ex = eng.plan("SELECT grp, SUM(checked(v)) AS total FROM ev GROUP BY grp;").executor()
    out = ex.execute(BATCH)
    assert sorted(out.table.to_pylist(), key=lambda r: r["GRP"]) == [{"GRP": "x", "TOTAL": 4}]
    assert [(f.index, f.reason) for f in out.failures] == [(1, "ValueError: negative")]


def test_insert_into_checks_schema(eng: SqlEngine) -> None:
    eng.execute("CREATE STREAM copy (id VARCHAR KEY, grp VARCHAR) WITH (KAFKA_TOPIC='copy', VALUE_FORMAT='JSON');")
    [ok] = eng.execute("INSERT INTO copy SELECT id, grp FROM ev;")
    assert ok.plan is not None and ok.plan.sink is not None and ok.plan.sink.topic == "copy"
    with pytest.raises(SqlError, match="do not match stream 'COPY'"):
        eng.execute("INSERT INTO copy SELECT id, v FROM ev;")


def test_explain_persistent_query_by_id(eng: SqlEngine) -> None:
    [created] = eng.execute("CREATE STREAM big AS SELECT id, v FROM ev WHERE v > 1;")
    [explained] = eng.execute(f"EXPLAIN {created.query_id};")
    assert "SQL: CREATE STREAM big AS SELECT id, v FROM ev WHERE v > 1" in explained.message
    assert 'WHERE ("V" > CAST(1 AS INTEGER))' in explained.message
    [inner] = eng.execute("EXPLAIN SELECT v FROM ev;")
    assert "SQL: SELECT v FROM ev" in inner.message
