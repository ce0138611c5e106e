"""Calls OVER a window of rows per key, without a broker: windows, state, changelog restore, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from streamml.errors import SqlError
from streamml.sql import SqlEngine
from streamml.sql.udf import udf

DDL = "CREATE STREAM s (car VARCHAR KEY, a DOUBLE, b INT) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');"


@pytest.fixture
def engine() -> SqlEngine:
    engine = SqlEngine()
    engine.execute(DDL)

    @udf(name="WLAST", returns="STRUCT<a_first DOUBLE, b_sum DOUBLE, tag STRING>", registry=engine.functions)
    def wlast(a: pa.Array, b: pa.Array, tag: pa.Array) -> pa.Array:
        va = a.flatten().to_numpy().reshape(len(a), -1)
        vb = b.flatten().to_numpy().reshape(len(b), -1)
        return pa.StructArray.from_arrays(
            [pa.array(va[:, 0]), pa.array(vb.sum(axis=1)), tag], names=["A_FIRST", "B_SUM", "TAG"]
        )

    return engine


QUERY = "SELECT car, a, WLAST(a, b, 'x') OVER (PARTITION BY car ROWS 2 PRECEDING) AS w FROM s EMIT CHANGES;"


def reference(cars: list[str], a: list[float], b: list[int], k: int) -> list[tuple[float, float] | None]:
    """Per row, (first a, sum of b) over the last k rows of its car, None while the car has fewer."""
    seen: dict[str, list[tuple[float, int]]] = {}
    out: list[tuple[float, float] | None] = []
    for car, x, y in zip(cars, a, b, strict=True):
        rows = seen.setdefault(car, [])
        rows.append((x, y))
        window = rows[-k:]
        out.append((window[0][0], float(sum(v for _, v in window))) if len(rows) >= k else None)
    return out


def results(table: pa.Table) -> list[tuple[float, float] | None]:
    return [None if w is None else (w["A_FIRST"], w["B_SUM"]) for w in table.column("W").to_pylist()]


def random_batches(seed: int, n: int, cars: int) -> tuple[list[str], list[float], list[int]]:
    rng = np.random.default_rng(seed)
    keys = [f"car{i}" for i in rng.integers(0, cars, n)]
    return keys, rng.normal(size=n).round(3).tolist(), rng.integers(0, 100, n).tolist()


def test_each_row_sees_the_last_rows_of_its_key_across_batches(engine: SqlEngine) -> None:
    keys, a, b = random_batches(1, 500, 7)
    executor = engine.plan(QUERY).executor()
    got: list[tuple[float, float] | None] = []
    for lo, hi in [(0, 1), (1, 3), (3, 120), (120, 121), (121, 500)]:  # windows span batches of any size
        batch = pa.table({"car": keys[lo:hi], "a": a[lo:hi], "b": b[lo:hi]})
        result = executor.execute(batch)
        assert result.table.column("CAR").to_pylist() == keys[lo:hi]
        got += results(result.table)
    assert got == reference(keys, a, b, 3)
    tags = {w["TAG"] for w in executor.execute(pa.table({"car": ["c"] * 3, "a": [1.0] * 3, "b": [1] * 3})).table
            .column("W").to_pylist() if w}  # fmt: skip
    assert tags == {"x"}  # constants reach the function as constants


def test_windows_are_per_partition_and_restored_from_the_changelog(engine: SqlEngine) -> None:
    keys, a, b = random_batches(2, 400, 5)
    parts = [i % 2 for i in range(400)]
    plan = engine.plan(QUERY)
    first = plan.executor()
    half = 250
    meta = {"ROWPARTITION": parts[:half]}
    got = results(first.execute(pa.table({"car": keys[:half], "a": a[:half], "b": b[:half]}), meta).table)
    log = {p: first.changes(p) for p in first.partitions()}
    assert sorted(log) == [0, 1]
    restored = plan.executor()
    for p, records in log.items():
        restored.load(p, records)
    rest = restored.execute(
        pa.table({"car": keys[half:], "a": a[half:], "b": b[half:]}), {"ROWPARTITION": parts[half:]}
    )
    got_rest = dict(zip(rest.indices.tolist(), results(rest.table), strict=True))
    expected: dict[int, tuple[float, float] | None] = {}
    for p in (0, 1):
        rows = [i for i in range(400) if parts[i] == p]
        ref = reference([keys[i] for i in rows], [a[i] for i in rows], [b[i] for i in rows], 3)
        expected.update(dict(zip(rows, ref, strict=True)))
    first_half = dict(zip([i for p in (0, 1) for i in range(half) if parts[i] == p], got, strict=True))
    assert first_half == {i: expected[i] for i in range(half)}
    assert {i + half: v for i, v in got_rest.items()} == {i: expected[i] for i in range(half, 400)}


def test_rows_with_a_null_argument_are_set_aside_and_skip_the_window(engine: SqlEngine) -> None:
    executor = engine.plan(QUERY).executor()
    batch = pa.table({"car": ["c"] * 5, "a": [1.0, None, 2.0, float("nan"), 3.0], "b": [1, 1, 1, 1, 1]})
    result = executor.execute(batch)
    assert [f.index for f in result.failures] == [1, 3]
    assert "is NULL or NaN" in result.failures[0].reason
    assert result.indices.tolist() == [0, 2, 4]
    assert results(result.table) == [None, None, (1.0, 3.0)]  # the set-aside rows are not in the window
    assert result.counters["failed"] == 2 and result.counters["output"] == 3


def test_where_filters_rows_before_they_enter_a_window(engine: SqlEngine) -> None:
    executor = engine.plan(QUERY.replace(" EMIT", " WHERE b > 0 EMIT")).executor()
    result = executor.execute(pa.table({"car": ["c"] * 5, "a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [1, 0, 1, 0, 1]}))
    assert results(result.table) == [None, None, (1.0, 3.0)]
    assert result.counters["filtered"] == 2


def test_explain_shows_the_window_and_its_state(engine: SqlEngine) -> None:
    text = engine.plan(QUERY).explain()
    assert "Query type: SEQUENCE" in text
    assert "[ WINDOW ROWS ]" in text
    assert 'WLAST("A", "B", \'x\') OVER (PARTITION BY "CAR" ROWS 2 PRECEDING) -> __win0' in text
    assert "the last 2 rows of every key" in text
    between = engine.plan(QUERY.replace("ROWS 2 PRECEDING", "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW")).explain()
    assert between.splitlines()[2:] == text.splitlines()[2:]  # the same plan; only the SQL line differs


CALL = "WLAST(a, b, 'x') OVER (PARTITION BY car ROWS 1 PRECEDING)"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT car, UCASE(car) OVER (PARTITION BY car ROWS 1 PRECEDING) FROM s;", "applies to user functions"),
        ("SELECT car, WLAST(a, b, 'x') OVER (PARTITION BY car) FROM s;", "needs a frame"),
        ("SELECT car, WLAST(car, b, 'x') OVER (PARTITION BY car ROWS 1 PRECEDING) FROM s;", "must be numeric"),
        (f"SELECT car FROM s WHERE {CALL} IS NULL;", "WHERE"),
        (f"SELECT car, COUNT(*) FROM s GROUP BY car HAVING {CALL} IS NULL;", "aggregations"),
        (
            f"SELECT car, {CALL} AS p, WLAST(a, b, 'y') OVER (PARTITION BY a ROWS 1 PRECEDING) AS q FROM s;",
            "same PARTITION BY",
        ),
        ("SELECT car, (a + 1) OVER (PARTITION BY car ROWS 1 PRECEDING) FROM s;", "must follow a function call"),
        ("SELECT car, WLAST(a, b, 'x') OVER (PARTITION BY car ROWS 1.5 PRECEDING) FROM s;", "whole number"),
    ],
)
def test_misuse_is_reported_at_its_position(engine: SqlEngine, sql: str, message: str) -> None:
    with pytest.raises(SqlError, match=message) as caught:
        engine.plan(sql)
    assert caught.value.line == 1 and caught.value.column is not None


def test_two_windows_of_different_lengths_share_one_state(engine: SqlEngine) -> None:
    sql = (
        "SELECT car, WLAST(a, b, 'x') OVER (PARTITION BY car ROWS 1 PRECEDING) AS w, "
        "WLAST(a, b, 'y') OVER (PARTITION BY car ROWS 3 PRECEDING) AS v FROM s;"
    )
    plan = engine.plan(sql)
    assert plan.sequence is not None and plan.sequence.history == 3
    keys, a, b = random_batches(3, 60, 3)
    result = plan.executor().execute(pa.table({"car": keys, "a": a, "b": b}))
    assert results(result.table) == reference(keys, a, b, 2)
    longer = [None if v is None else (v["A_FIRST"], v["B_SUM"]) for v in result.table.column("V").to_pylist()]
    assert longer == reference(keys, a, b, 4)


def test_the_window_key_must_be_the_record_key(engine: SqlEngine) -> None:
    """Windows are per input partition: a key other than the record key could be spread over partitions."""
    with pytest.raises(SqlError, match=r"must name the record key of S \(CAR\)") as caught:
        engine.plan("SELECT car, WLAST(a, b, 'x') OVER (PARTITION BY b ROWS 1 PRECEDING) AS w FROM s;")
    assert caught.value.hint is not None and "PARTITION BY" in caught.value.hint
    engine.execute("CREATE STREAM k (a DOUBLE, b INT) WITH (KAFKA_TOPIC='k', VALUE_FORMAT='JSON');")
    plan = engine.plan("SELECT WLAST(a, b, 'x') OVER (PARTITION BY ROWKEY ROWS 1 PRECEDING) AS w FROM k;")
    result = plan.executor().execute(pa.table({"a": [1.0, 2.0, 3.0], "b": [1, 2, 3]}), {"ROWKEY": ["u", "v", "u"]})
    assert results(result.table) == [None, None, (1.0, 4.0)]


def test_a_changelog_of_other_windows_is_refused(engine: SqlEngine) -> None:
    first = engine.plan(QUERY).executor()
    first.execute(pa.table({"car": ["c", "d"], "a": [1.0, 2.0], "b": [1, 2]}))
    records = first.changes(0)
    assert records.num_rows == 3  # one record per changed key, then the window shape
    longer = engine.plan(QUERY.replace("ROWS 2 PRECEDING", "ROWS 4 PRECEDING")).executor()
    with pytest.raises(SqlError, match="another shape"):
        longer.load(0, records)
    assert first.changes(0).num_rows == 1  # nothing changed since: only the shape
