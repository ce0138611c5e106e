"""DELIMITED: headerless CSV in schema order, empty field = NULL, quoted fields, clear failures."""

from __future__ import annotations

import datetime
import decimal
import math

import pyarrow as pa
import pytest

from streamml.errors import FormatError
from streamml.formats import TOMBSTONE_REASON, DelimitedFormat

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("score", pa.float64()),
        ("ok", pa.bool_()),
        ("at", pa.timestamp("ms")),
        ("price", pa.decimal128(10, 2)),
    ]
)


def test_decode_types_and_empty_is_null() -> None:
    fmt = DelimitedFormat(SCHEMA)
    decoded = fmt.decode([b"1,ann,2.5,true,2024-01-02 03:04:05.123,12.50", b",,,,,"])
    assert decoded.all_ok
    assert decoded.table.to_pylist() == [
        {
            "id": 1,
            "name": "ann",
            "score": 2.5,
            "ok": True,
            "at": datetime.datetime(2024, 1, 2, 3, 4, 5, 123000),
            "price": decimal.Decimal("12.50"),
        },
        dict.fromkeys(SCHEMA.names),
    ]


def test_quoted_fields_and_empty_strings() -> None:
    fmt = DelimitedFormat(SCHEMA)
    decoded = fmt.decode([b'2,"a,b",,,,', b'3,"",,,,', b'4,"say ""hi""",1,,,', b'5,"two\nlines",,,,', b'6,"",,false,,'])
    assert decoded.all_ok, decoded.failures
    assert decoded.table.column("name").to_pylist() == ["a,b", "", 'say "hi"', "two\nlines", ""]
    assert decoded.table.column("score").to_pylist() == [None, None, 1.0, None, None]
    assert decoded.table.column("ok").to_pylist() == [None, None, None, None, False]


def test_mixed_good_and_bad_records() -> None:
    fmt = DelimitedFormat(SCHEMA)
    values = [b"1,a,1,,,", b"2,b", None, b"x,c,1,,,", b"3,d,1,,,,", b"", b"4,\xff,,,,", b'5,"open,,,,', b"6,f,,,,"]
    decoded = fmt.decode(values)
    assert decoded.table.column("id").to_pylist() == [1, 6]
    assert decoded.indices.tolist() == [0, 8]
    reasons = {f.index: f.reason for f in decoded.failures}
    assert reasons[1] == "expected 6 fields, got 2"
    assert reasons[2] == TOMBSTONE_REASON
    assert reasons[3] == "field 'id': expected int64, got 'x'"
    assert reasons[4] == "expected 6 fields, got 7"
    assert reasons[5] == "expected 6 fields, got 1"
    assert reasons[6] == "field 'name': invalid UTF-8"
    assert set(reasons) == {1, 2, 3, 4, 5, 6, 7}


def test_all_bad_batch() -> None:
    decoded = DelimitedFormat(SCHEMA).decode([b"1", None])
    assert decoded.table.schema == SCHEMA
    assert decoded.table.num_rows == 0
    assert len(decoded.failures) == 2


def test_single_column_empty_value_is_null() -> None:
    fmt = DelimitedFormat(pa.schema([("s", pa.string())]))
    decoded = fmt.decode([b"", b"x", b'""'])
    assert decoded.table.column("s").to_pylist() == [None, "x", ""]


def test_custom_delimiter() -> None:
    schema = pa.schema([("a", pa.string()), ("b", pa.int64())])
    fmt = DelimitedFormat(schema, delimiter="TAB")
    decoded = fmt.decode([b"x,y\t1", b"\t"])
    assert decoded.table.to_pylist() == [{"a": "x,y", "b": 1}, {"a": None, "b": None}]
    assert fmt.encode(decoded.table) == [b"x,y\t1", b"\t"]  # a comma needs no quotes between tabs
    assert DelimitedFormat(schema, delimiter="|").encode(decoded.table) == [b"x,y|1", b"|"]
    assert DelimitedFormat(schema).encode(decoded.table) == [b'"x,y",1', b","]  # with commas it does


def test_encode_null_is_empty_and_newlines_stay_in_one_record() -> None:
    fmt = DelimitedFormat(pa.schema([("a", pa.string()), ("b", pa.float64())]))
    table = pa.table({"a": ["x\ny", None, "", 'q"'], "b": [None, 1.5, 2.0, None]})
    values = fmt.encode(table)
    assert values == [b'"x\ny",', b",1.5", b'"",2.0', b'"q""",']
    assert fmt.decode(values).table.equals(table)


def test_only_the_fields_that_need_quotes_are_quoted() -> None:
    fmt = DelimitedFormat(pa.schema([("a", pa.int32()), ("b", pa.string()), ("c", pa.string()), ("d", pa.bool_())]))
    table = pa.table({"a": pa.array([0, 1], pa.int32()), "b": ["zero", "a,b"], "c": ["x", "y"], "d": [True, None]})
    assert fmt.encode(table) == [b"0,zero,x,true", b'1,"a,b",y,']


def test_doubles_are_written_as_java_writes_them() -> None:
    fmt = DelimitedFormat(pa.schema([("x", pa.float64())]))
    xs = [0.0, 1.0, 2.5, 0.001, 9999999.0, 1e7, 123456789.0, 1e-4, -1.5e-10, 1e300, math.nan, math.inf, -math.inf]
    assert fmt.encode(pa.table({"x": xs})) == [
        b"0.0", b"1.0", b"2.5", b"0.001", b"9999999.0", b"1.0E7", b"1.23456789E8", b"1.0E-4", b"-1.5E-10",
        b"1.0E300", b"NaN", b"Infinity", b"-Infinity",
    ]  # fmt: skip
    back = fmt.decode(fmt.encode(pa.table({"x": xs}))).table.column("x").to_pylist()
    assert back[:10] == xs[:10] and math.isnan(back[10]) and back[11:] == xs[11:]


def test_encode_uses_schema_order() -> None:
    fmt = DelimitedFormat(pa.schema([("a", pa.int64()), ("b", pa.int64())]))
    assert fmt.encode(pa.table({"B": [2], "a": [1]})) == [b"1,2"]
    with pytest.raises(FormatError, match="lacks"):
        fmt.encode(pa.table({"a": [1]}))


@pytest.mark.parametrize(
    ("schema", "kwargs", "match"),
    [
        (None, {}, "needs a schema"),
        (pa.schema([("l", pa.list_(pa.int64()))]), {}, "cannot hold"),
        (pa.schema([("a", pa.int64())]), {"delimiter": '"'}, "delimiter"),
        (pa.schema([("a", pa.int64())]), {"delimiter": ";;"}, "delimiter"),
    ],
)
def test_misconfiguration(schema: pa.Schema | None, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(FormatError, match=match):
        DelimitedFormat(schema, **kwargs)


def test_record_larger_than_a_read_block() -> None:
    fmt = DelimitedFormat(pa.schema([("a", pa.string()), ("b", pa.int64())]))
    big = "x" * 3_000_000
    decoded = fmt.decode([b"y,1", f'"{big}",2'.encode(), b"z,3"])
    assert decoded.all_ok
    assert decoded.table.column("b").to_pylist() == [1, 2, 3]


def test_encoding_quotes_only_what_needs_it_as_ksqldb_does() -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("n", pa.int64())])
    fmt = DelimitedFormat(schema)
    table = pa.table({"id": [0, 1, 2, 3, 4], "name": ["zero", 'say "hi"', "", None, "a\nb"], "n": [0, 1, 2, 3, 4]},
                     schema=schema)  # fmt: skip
    encoded = fmt.encode(table)
    assert encoded == [b"0,zero,0", b'1,"say ""hi""",1', b'2,"",2', b"3,,3", b'4,"a\nb",4']
    assert fmt.decode(encoded).table.to_pylist() == table.to_pylist()
