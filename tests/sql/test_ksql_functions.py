"""ksqlDB's scalar function library, checked against the examples and edge cases of its documentation."""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
from typing import Any

import pyarrow as pa
import pytest

from streamml.errors import SqlError
from streamml.sql import SqlEngine


@pytest.fixture(scope="module")
def engine() -> SqlEngine:
    eng = SqlEngine()
    eng.execute(
        "CREATE STREAM t (S VARCHAR, N INT, D DOUBLE, R ARRAY<INT>, W ARRAY<VARCHAR>, M MAP<VARCHAR, INT>, "
        "TS TIMESTAMP, DT DATE) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');"
    )
    return eng


ROW = {
    "S": ["CORPORATE FLOOR"],
    "N": [5],
    "D": [-2.7],
    "R": [[3, 1, None, 3]],
    "W": [["Foo", "Bar", None, "baz"]],
    "M": pa.array([[("a", 1), ("b", 2)]], pa.map_(pa.string(), pa.int32())),
    "TS": pa.array([datetime.datetime(2021, 3, 4, 5, 6, 7)], pa.timestamp("ms")),
    "DT": pa.array([datetime.date(2021, 3, 4)], pa.date32()),
}


def value(engine: SqlEngine, expr: str) -> Any:
    table = pa.table({k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in ROW.items()})
    out = engine.plan(f"SELECT {expr} AS V FROM t EMIT CHANGES;").executor().execute(table)
    return out.table.column("V").to_pylist()[0]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # strings
        ("INSTR(S, 'OR')", 2),
        ("INSTR(S, 'OR', 3)", 5),
        ("INSTR(S, 'OR', 3, 2)", 14),
        ("INSTR(S, 'OR', -3)", 5),
        ("INSTR(S, 'OR', -3, 2)", 2),
        ("INSTR(S, 'MISSING')", 0),
        ("LPAD('Foo', 7, 'Bar')", "BarBFoo"),
        ("LPAD('Foo', 2, 'Bar')", "Fo"),
        ("LPAD('', 2, 'Bar')", "Ba"),
        ("LPAD('123', 5, '0')", "00123"),
        ("LPAD('Foo', 7, '')", None),
        ("LPAD('Foo', -1, 'x')", None),
        ("RPAD('Foo', 7, 'Bar')", "FooBarB"),
        ("RPAD('Foo', 2, 'Bar')", "Fo"),
        ("REPLACE('banana', 'a', 'o')", "bonono"),
        ("CONCAT_WS(', ', 'apple', 'banana', NULL, 'date')", "apple, banana, date"),
        ("CONCAT_WS(NULL, 'a', 'b')", None),
        ("INITCAP('hello wORLD')", "Hello World"),
        ("SPLIT('a,b,,c,', ',')", ["a", "b", "", "c", ""]),
        ("SPLIT('abc', '')", ["a", "b", "c"]),
        ("SPLIT('abc', 'x')", ["abc"]),
        ("CHR(75)", "K"),
        ("CHR(22909)", "好"),
        ("REGEXP_EXTRACT('(.*) (.*)', 'hello there', 2)", "there"),
        ("REGEXP_EXTRACT('x+', 'hello')", None),
        ("REGEXP_EXTRACT_ALL('(\\w+) (\\w+)', 'hello there nice day', 2)", ["there", "day"]),
        ("REGEXP_REPLACE('aaa bbb', 'b+', 'c')", "aaa c"),
        ("REGEXP_SPLIT_TO_ARRAY('a1b22c', '[0-9]+')", ["a", "b", "c"]),
        ("LEN(UUID())", 36),
        # math
        ("SIGN(D)", -1),
        ("SIGN(0)", 0),
        ("LOG(100)", 2.0),
        ("LOG(2, 8)", 3.0),
        ("LOG(0)", -math.inf),
        ("POWER(2, 10)", 1024.0),
        ("POWER(10, 400)", math.inf),
        ("TRUNC(D)", -2),
        ("TRUNC(1.2345, 2)", 1.23),
        ("CBRT(-8)", -2.0),
        ("ATAN2(1, 1)", math.pi / 4),
        ("DEGREES(PI())", 180.0),
        ("RADIANS(180)", math.pi),
        ("GREATEST(1, N, NULL, 3)", 5),
        ("LEAST(4, N, NULL)", 4),
        ("NULLIF(N, 5)", None),
        ("NULLIF(N, 4)", 5),
        # collections
        ("ARRAY_LENGTH(R)", 4),
        ("ARRAY_CONTAINS(R, 1)", True),
        ("ARRAY_DISTINCT(R)", [3, 1, None]),
        ("ARRAY_MAX(W)", "baz"),
        ("ARRAY_MIN(W)", "Bar"),
        ("ARRAY_SORT(R)", [1, 3, 3, None]),
        ("ARRAY_SORT(R, 'DESC')", [3, 3, 1, None]),
        ("ARRAY_JOIN(R)", "3,1,null,3"),
        ("ARRAY_JOIN(W, '|')", "Foo|Bar|null|baz"),
        ("ARRAY_REMOVE(R, 3)", [1, None]),
        ("ARRAY_CONCAT(R, ARRAY[9])", [3, 1, None, 3, 9]),
        ("ARRAY_UNION(R, ARRAY[1, 7])", [3, 1, None, 7]),
        ("ARRAY_INTERSECT(R, ARRAY[3, 7])", [3]),
        ("ARRAY_EXCEPT(R, ARRAY[3])", [1, None]),
        ("SLICE(R, 2, 3)", [1, None]),
        ("MAP_KEYS(M)", ["a", "b"]),
        ("MAP_VALUES(M)", [1, 2]),
        ("AS_MAP(ARRAY['x', 'y'], ARRAY[1, 2])['y']", 2),
        # dates and times
        ("UNIX_TIMESTAMP(TS)", 1614834367000),
        ("UNIX_DATE(DT)", 18690),
        ("FROM_UNIXTIME(1614834367000)", datetime.datetime(2021, 3, 4, 5, 6, 7)),
        ("PARSE_TIMESTAMP('2021-03-04 05:06:07', 'yyyy-MM-dd HH:mm:ss')", datetime.datetime(2021, 3, 4, 5, 6, 7)),
        (
            "PARSE_TIMESTAMP('2021-03-04 06:06', 'yyyy-MM-dd HH:mm', 'Europe/Berlin')",
            datetime.datetime(2021, 3, 4, 5, 6),
        ),
        ("FORMAT_TIMESTAMP(TS, 'yyyy-MM-dd''T''HH:mm')", "2021-03-04T05:06"),
        ("FORMAT_TIMESTAMP(TS, 'HH:mm', 'Europe/Berlin')", "06:06"),
        ("PARSE_DATE('2021-03-04', 'yyyy-MM-dd')", datetime.date(2021, 3, 4)),
        ("FORMAT_DATE(DT, 'dd/MM/yyyy')", "04/03/2021"),
        ("STRINGTODATE('2021-03-04', 'yyyy-MM-dd')", 18690),
        ("DATETOSTRING(18690, 'yyyy-MM-dd')", "2021-03-04"),
        ("CONVERT_TZ(TS, 'UTC', 'America/New_York')", datetime.datetime(2021, 3, 4, 0, 6, 7)),
    ],
)
def test_documented_result(engine: SqlEngine, expr: str, expected: Any) -> None:
    got = value(engine, expr)
    if isinstance(expected, float) and not math.isinf(expected):
        assert got == pytest.approx(expected)
    else:
        assert got == expected


@pytest.mark.parametrize("expr", ["ACOS(2)", "ASIN(-1.5)", "LOG(-1)", "LOG(1, 5)"])
def test_outside_the_domain_is_nan(engine: SqlEngine, expr: str) -> None:
    assert math.isnan(value(engine, expr))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("INSTR(N, 'x')", "INSTR: argument 1 must be a STRING"),
        ("ARRAY_LENGTH(S)", "ARRAY_LENGTH: argument 1 must be an ARRAY"),
        ("ARRAY_SORT(R, 'UP')", "must be 'ASC' or 'DESC'"),
        ("REGEXP_EXTRACT('a', S, N)", "must be a number literal"),
        ("FORMAT_TIMESTAMP(N, 'yyyy')", "must be a TIMESTAMP"),
        ("GREATEST(1, 'a')", "incompatible types"),
    ],
)
def test_wrong_arguments_are_refused_at_the_statement(engine: SqlEngine, expr: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        engine.plan(f"SELECT {expr} AS V FROM t EMIT CHANGES;")


def test_times_do_not_depend_on_the_machines_time_zone() -> None:
    code = (
        "import pyarrow as pa\nfrom streamml.sql import SqlEngine\ne = SqlEngine()\n"
        "e.execute(\"CREATE STREAM s (T BIGINT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');\")\n"
        "p = e.plan(\"SELECT TIMESTAMPTOSTRING(T, 'HH:mm', 'UTC') AS A, TIMESTAMPTOSTRING(T, 'HH:mm') AS B, "
        "FORMAT_TIMESTAMP(FROM_UNIXTIME(T), 'HH:mm', 'Asia/Tokyo') AS C, "
        "STRINGTOTIMESTAMP('1970-01-01 01:00', 'yyyy-MM-dd HH:mm') AS D FROM s;\")\n"
        "print(p.executor().execute(pa.table({'T': [0]})).table.to_pylist())"
    )
    env = {**os.environ, "TZ": "America/Los_Angeles"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[{'A': '00:00', 'B': '00:00', 'C': '09:00', 'D': 3600000}]"
