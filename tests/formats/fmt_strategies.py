"""Hypothesis strategies: Arrow tables of a given schema with nulls, unicode and extreme values."""

from __future__ import annotations

import datetime
from typing import Any

import pyarrow as pa
from hypothesis import strategies as st

MAX_ROWS = 12

#: Text with what breaks naive serializers: quotes, delimiters, line breaks, emoji, empty strings.
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", '"', '""', ",", "a,b", "\n", "x\r\ny", "\\", "😀", "é\u2028", "\t", " lead"]),
)
FINITE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 1e-7, 0.1]),
)
INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**63 - 1, -(2**63)]))
INT32 = st.integers(-(2**31), 2**31 - 1)
TIMESTAMP = st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2200, 1, 1)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
)


def values_of(t: pa.DataType) -> st.SearchStrategy[Any]:
    """Non-null Python values of an Arrow type."""
    if pa.types.is_float64(t):
        return FINITE
    if pa.types.is_float32(t):
        return st.floats(width=32, allow_nan=False, allow_infinity=False)
    if pa.types.is_int64(t):
        return INT64
    if pa.types.is_int32(t):
        return INT32
    if pa.types.is_integer(t):
        bits = t.bit_width
        low, high = (0, 2**bits - 1) if pa.types.is_unsigned_integer(t) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return st.one_of(st.integers(low, high), st.sampled_from([low, high]))
    if pa.types.is_decimal(t):
        return st.decimals(
            min_value=-(10 ** (t.precision - t.scale)) + 1,
            max_value=10 ** (t.precision - t.scale) - 1,
            places=t.scale,
            allow_nan=False,
            allow_infinity=False,
        )
    if pa.types.is_date32(t):
        return st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2200, 1, 1))
    if pa.types.is_boolean(t):
        return st.booleans()
    if pa.types.is_string(t):
        return TEXT
    if pa.types.is_binary(t):
        return st.binary(max_size=10)
    if pa.types.is_timestamp(t):
        return TIMESTAMP
    if pa.types.is_list(t):
        return st.lists(nullable(values_of(t.value_type)), max_size=4)
    if pa.types.is_map(t):
        return st.dictionaries(TEXT, nullable(values_of(t.item_type)), max_size=3).map(lambda d: list(d.items()))
    if pa.types.is_struct(t):
        return st.fixed_dictionaries({f.name: nullable(values_of(f.type)) for f in t})
    raise NotImplementedError(str(t))


def nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def tables(draw: st.DrawFn, schema: pa.Schema, *, nulls: bool = True, min_rows: int = 0) -> pa.Table:
    """A table of ``schema`` with up to ``MAX_ROWS`` rows."""
    rows = draw(st.integers(min_rows, MAX_ROWS))
    columns = []
    for field in schema:
        element = nullable(values_of(field.type)) if nulls else values_of(field.type)
        columns.append(pa.array(draw(st.lists(element, min_size=rows, max_size=rows)), type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)
