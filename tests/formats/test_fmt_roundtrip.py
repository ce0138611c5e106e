"""Property: for every format, ``decode(encode(table))`` gives the table back, row for row."""

from __future__ import annotations

import math
from typing import Any
from unittest.mock import patch

import pyarrow as pa
import pytest
from fmt_strategies import tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamml.formats import AvroFormat, DelimitedFormat, Format, JsonFormat, KafkaFormat

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FLAT = pa.schema(
    [
        ("V1", pa.float64()),
        ("Count", pa.int64()),
        ("small", pa.int32()),
        ("label", pa.string()),
        ("flag", pa.bool_()),
    ]
)
NESTED = pa.schema(
    [
        ("pixels", pa.list_(pa.float64())),
        ("point", pa.struct([("x", pa.float64()), ("tags", pa.list_(pa.string()))])),
        ("attrs", pa.map_(pa.string(), pa.int64())),
        ("at", pa.timestamp("ms")),
        ("raw", pa.binary()),
    ]
)
NARROW = pa.schema(
    [
        ("i8", pa.int8()),
        ("i16", pa.int16()),
        ("u8", pa.uint8()),
        ("u16", pa.uint16()),
        ("u32", pa.uint32()),
        ("u64", pa.uint64()),
        ("f32", pa.float32()),
        ("price", pa.decimal128(12, 3)),
        ("day", pa.date32()),
        ("inner", pa.struct([("small", pa.int16()), ("cents", pa.decimal128(9, 2))])),
    ]
)
DOUBLES = pa.schema([(f"V{i}", pa.float64()) for i in range(1, 31)])


def _assert_round_trip(fmt: Format, table: pa.Table) -> None:
    values = fmt.encode(table)
    assert len(values) == table.num_rows
    assert all(isinstance(v, bytes) for v in values)
    decoded = fmt.decode(values)
    assert decoded.failures == []
    assert decoded.indices.tolist() == list(range(table.num_rows))
    assert decoded.table.schema == table.schema
    assert decoded.table.to_pylist() == table.to_pylist()


@SETTINGS
@given(tables(FLAT))
def test_json_flat(table: pa.Table) -> None:
    _assert_round_trip(JsonFormat(FLAT), table)


@SETTINGS
@given(tables(NESTED))
def test_json_nested(table: pa.Table) -> None:
    _assert_round_trip(JsonFormat(NESTED), table)


@SETTINGS
@given(tables(NARROW))
def test_json_narrow_and_exact_types(table: pa.Table) -> None:
    _assert_round_trip(JsonFormat(NARROW), table)


@SETTINGS
@given(tables(FLAT))
def test_delimited(table: pa.Table) -> None:
    _assert_round_trip(DelimitedFormat(FLAT), table)


@SETTINGS
@given(tables(FLAT), st.sampled_from([",", "\t", "|", ";"]))
def test_delimited_other_delimiters(table: pa.Table, delimiter: str) -> None:
    _assert_round_trip(DelimitedFormat(FLAT, delimiter=delimiter), table)


@SETTINGS
@given(tables(FLAT))
def test_avro_flat(table: pa.Table) -> None:
    _assert_round_trip(AvroFormat(FLAT), table)


@SETTINGS
@given(tables(NESTED))
def test_avro_nested(table: pa.Table) -> None:
    _assert_round_trip(AvroFormat(NESTED), table)


@settings(max_examples=20, deadline=None)
@given(tables(DOUBLES, min_rows=1), st.booleans())
def test_avro_doubles_fast_and_slow_paths(table: pa.Table, fill: bool) -> None:
    if fill:  # no nulls: every record takes the NumPy path
        table = pa.Table.from_arrays([c.fill_null(0.5) for c in table.columns], schema=DOUBLES)
    _assert_round_trip(AvroFormat(DOUBLES), table)


@pytest.mark.parametrize("arrow_type", [pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.binary()])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_kafka(arrow_type: pa.DataType, data: Any) -> None:
    schema = pa.schema([("v", arrow_type)])
    table = data.draw(tables(schema, nulls=False))
    _assert_round_trip(KafkaFormat(schema), table)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=10))
def test_json_non_finite_floats_round_trip(xs: list[float]) -> None:
    schema = pa.schema([("x", pa.float64())])
    fmt = JsonFormat(schema)
    decoded = fmt.decode(fmt.encode(pa.table({"x": xs}, schema=schema)))
    got = decoded.table.column("x").to_pylist()
    assert len(got) == len(xs) and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(xs, got, strict=True)
    )


ROWWISE = pa.schema(
    [
        *FLAT,
        ("pixels", pa.list_(pa.float64())),
        ("point", pa.struct([("x", pa.float64()), ("tags", pa.list_(pa.string()))])),
        ("at", pa.timestamp("ms")),
    ]
)


@SETTINGS
@given(tables(ROWWISE, min_rows=1))
def test_json_small_batches_encode_the_values_large_ones_do(table: pa.Table) -> None:
    """Small batches are written row by row with orjson, large ones by DuckDB: the values must not differ."""
    import orjson

    from streamml.formats import json as json_format

    fmt = JsonFormat(ROWWISE)
    assert table.num_rows < json_format._ROWWISE_BELOW
    rowwise = fmt.encode(table)
    with patch.object(json_format, "_ROWWISE_BELOW", 0):
        vectorised = fmt.encode(table)
    assert [orjson.loads(v) for v in rowwise] == [orjson.loads(v) for v in vectorised]
