"""Property tests: vectorised expression evaluation agrees with Python on random values."""

from __future__ import annotations

import math
import operator

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamml.sql import QueryExecutor, SqlEngine

ints = st.lists(st.one_of(st.none(), st.integers(-(2**31), 2**31)), min_size=1, max_size=30)
doubles = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
STATEMENT = (
    "CREATE STREAM r (a BIGINT, b BIGINT, x DOUBLE, y DOUBLE, s VARCHAR) WITH (KAFKA_TOPIC='r', VALUE_FORMAT='JSON');"
)
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
COMPARISONS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_CACHE: dict[str, QueryExecutor] = {}


def executor(expr: str) -> QueryExecutor:
    if expr not in _CACHE:
        eng = SqlEngine()
        eng.execute(STATEMENT)
        _CACHE[expr] = eng.plan(f"SELECT {expr} AS r FROM r;").executor()
    return _CACHE[expr]


def run(expr: str, **columns: list) -> list:
    return executor(expr).execute(pa.table(columns)).table.column("R").to_pylist()


def java_div(a: int, b: int) -> int | None:
    if b == 0:
        return None
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def java_mod(a: int, b: int) -> int | None:
    if b == 0:
        return None
    return int(math.fmod(a, b))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_integer_arithmetic_matches_python(data: st.DataObject) -> None:
    a = data.draw(ints)
    b = data.draw(st.lists(st.one_of(st.none(), st.integers(-(2**31), 2**31)), min_size=len(a), max_size=len(a)))
    funcs = {**OPS, "/": java_div, "%": java_mod}
    for op, fn in funcs.items():
        got = run(f"a {op} b", A=pa.array(a, pa.int64()), B=pa.array(b, pa.int64()))
        expected = [None if x is None or y is None else fn(x, y) for x, y in zip(a, b, strict=True)]
        assert got == expected, op


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(doubles, doubles), min_size=1, max_size=30))
def test_double_arithmetic_and_comparison(pairs: list[tuple[float, float]]) -> None:
    x = [p[0] for p in pairs]
    y = [p[1] for p in pairs]
    for op, fn in OPS.items():
        got = run(f"x {op} y", X=x, Y=y)
        assert got == pytest.approx([fn(i, j) for i, j in pairs]), op
    for op, fn in COMPARISONS.items():
        assert run(f"x {op} y", X=x, Y=y) == [fn(i, j) for i, j in pairs], op
    assert run("x BETWEEN y AND x + 1", X=x, Y=y) == [j <= i <= i + 1 for i, j in pairs]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(alphabet="abcXYZ019 -é", max_size=12)), min_size=1, max_size=20),
    st.integers(-3, 15),
)
def test_mask_left_matches_reference(values: list[str | None], n: int) -> None:
    def mask(c: str) -> str:
        return "X" if c.isupper() else "x" if c.islower() else "n" if c.isdigit() else "-"

    def mask_left(s: str | None) -> str | None:
        if s is None:
            return None
        k = max(n, 0)
        return "".join(mask(c) for c in s[:k]) + s[k:]

    assert run(f"MASK_LEFT(s, {n})", S=values) == [mask_left(v) for v in values]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(-100, 100)), st.booleans()), min_size=1, max_size=20))
def test_boolean_logic_with_nulls(items: list[tuple[int | None, bool]]) -> None:
    a = [i[0] for i in items]
    got = run("a > 0 AND NOT (a IS NULL) OR a IN (1, 2, 3)", A=pa.array(a, pa.int64()))
    expected = []
    for v, _ in items:
        if v is None:
            expected.append(None)  # NULL > 0 -> NULL; NULL AND FALSE -> FALSE; FALSE OR NULL -> NULL
        else:
            expected.append((v > 0) or v in (1, 2, 3))
    assert got == expected
