"""Built-in scalar functions and CAST, evaluated through DuckDB."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from streamml.errors import SqlError
from streamml.sql import SqlEngine
from streamml.sql.functions import java_to_strftime


@pytest.fixture
def fn_engine() -> SqlEngine:
    eng = SqlEngine()
    eng.execute("CREATE STREAM t (s VARCHAR, n INT, d DOUBLE, b BIGINT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');")
    return eng


def evaluate(engine: SqlEngine, expr: str, **columns: list[Any]) -> list[Any]:
    plan = engine.plan(f"SELECT {expr} AS r FROM t;")
    n = max((len(v) for v in columns.values()), default=1)
    batch = pa.table(columns) if columns else pa.table({"S": [None] * n})
    return plan.executor().execute(batch).table.column("R").to_pylist()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("MASK_LEFT('Hans', 2)", "Xxns"),
        ("MASK('Ab1-z')", "Xxn-x"),
        ("MASK_RIGHT('Hans', 2)", "Haxx"),
        ("MASK_KEEP_LEFT('Hans9', 2)", "Haxxn"),
        ("MASK_KEEP_RIGHT('Hans9', 2)", "Xxxs9"),
        ("MASK_LEFT('Hi', 5)", "Xx"),
        ("IFNULL(NULL, 'x')", "x"),
        ("COALESCE(NULL, NULL, 3)", 3),
        ("UCASE('aBc')", "ABC"),
        ("LCASE('aBc')", "abc"),
        ("CONCAT('a', NULL, 'c')", "ac"),
        ("SUBSTRING('streaming', 3)", "reaming"),
        ("SUBSTRING('streaming', 1, 6)", "stream"),
        ("LEN('hello')", 5),
        ("TRIM('  x ')", "x"),
        ("ABS(-3)", 3),
        ("ROUND(2.5)", 3),
        ("ROUND(1.2345, 2)", 1.23),
        ("FLOOR(1.7)", 1.0),
        ("CEIL(1.2)", 2.0),
        ("SQRT(16)", 4.0),
        ("SQRT(-1)", None),
        ("EXP(0)", 1.0),
        ("LN(1)", 0.0),
        ("TIMESTAMPTOSTRING(1577934245678, 'yyyy-MM-dd HH:mm:ss.SSS')", "2020-01-02 03:04:05.678"),
        ("TIMESTAMPTOSTRING(0, 'yyyy-MM-dd''T''HH:mm', 'Europe/Berlin')", "1970-01-01T01:00"),
        ("STRINGTOTIMESTAMP('2020-01-02 03:04:05.678', 'yyyy-MM-dd HH:mm:ss.SSS')", 1577934245678),
        ("STRINGTOTIMESTAMP('nope', 'yyyy-MM-dd')", None),
        # an X offset reads 'Z' as UTC, and numeric offsets
        ("STRINGTOTIMESTAMP('2018-05-11T21:58:33Z', 'yyyy-MM-dd''T''HH:mm:ssX')", 1526075913000),
        ("STRINGTOTIMESTAMP('2018-05-11T21:58:33+02:00', 'yyyy-MM-dd''T''HH:mm:ssXXX')", 1526068713000),
        ("STRINGTOTIMESTAMP('1970-01-01 01:00', 'yyyy-MM-dd HH:mm', 'Europe/Berlin')", 0),
        ("CASE WHEN 1 > 2 THEN 'a' WHEN 2 > 1 THEN 'b' ELSE 'c' END", "b"),
        ("CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END", "two"),
        ("'it''s' || ' ok'", "it's ok"),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7.0 / 2", 3.5),
        ("7 % 3", 1),
        ("3 IN (1, 2, 3)", True),
        ("3 NOT BETWEEN 1 AND 2", True),
        ("'kafka' LIKE 'ka%'", True),
    ],
)
def test_scalar(fn_engine: SqlEngine, expr: str, expected: Any) -> None:
    assert evaluate(fn_engine, expr) == [expected]


def test_functions_over_columns(fn_engine: SqlEngine) -> None:
    assert evaluate(fn_engine, "MASK_LEFT(s, n)", S=["Hans", "Anna", None], N=[2, 0, 1]) == ["Xxns", "Anna", None]
    assert evaluate(fn_engine, "IFNULL(s, 'none')", S=["a", None]) == ["a", "none"]


def test_bad_cast_is_null_and_counted(fn_engine: SqlEngine) -> None:
    plan = fn_engine.plan("SELECT CAST(s AS INT) AS i, CAST(s AS DOUBLE) AS d FROM t WHERE n > 0;")
    out = plan.executor().execute(pa.table({"S": ["1", "x", None, "2.5", "y"], "N": [1, 1, 1, 1, 0]}))
    assert out.table.column("I").to_pylist() == [1, None, None, None]
    assert out.table.column("D").to_pylist() == [1.0, None, None, 2.5]
    # 'x' fails twice, '2.5' fails as INT, NULL is not a failure, 'y' is filtered out
    assert out.cast_failures == 3


def test_struct_and_array_access() -> None:
    eng = SqlEngine()
    eng.execute(
        "CREATE STREAM s (p STRUCT<name VARCHAR, addr STRUCT<city VARCHAR>>, xs ARRAY<INT>, m MAP<VARCHAR, INT>) "
        "WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');"
    )
    plan = eng.plan("SELECT p->name, p->addr->city AS city, xs[1] AS first, xs[-1] AS last, m['a'] AS a FROM s;")
    batch = pa.table(
        {
            "P": [{"NAME": "n", "ADDR": {"CITY": "c"}}],
            "XS": [[1, 2, 3]],
            "M": pa.array([[("a", 5)]], type=pa.map_(pa.string(), pa.int32())),
        }
    )
    out = plan.executor().execute(batch).table.to_pylist()
    assert out == [{"NAME": "n", "CITY": "c", "FIRST": 1, "LAST": 3, "A": 5}]


def test_java_patterns() -> None:
    assert java_to_strftime("yyyy-MM-dd'T'HH:mm:ss.SSSZ") == "%Y-%m-%dT%H:%M:%S.%g%z"
    with pytest.raises(SqlError, match="unsupported"):
        java_to_strftime("QQQ")


def test_function_type_errors(fn_engine: SqlEngine) -> None:
    with pytest.raises(SqlError, match="MASK_LEFT: argument 1 must be a STRING"):
        fn_engine.plan("SELECT MASK_LEFT(n, 2) FROM t;")
    with pytest.raises(SqlError, match="format\\) must be a string literal"):
        fn_engine.plan("SELECT TIMESTAMPTOSTRING(b, s) FROM t;")
    with pytest.raises(SqlError, match="cannot apply '\\+' to STRING and INTEGER"):
        fn_engine.plan("SELECT s + n FROM t;")
