"""JSON: batch decoding to Arrow, case-insensitive keys, nested types, failures with clear reasons."""

from __future__ import annotations

import datetime
import decimal
import math

import orjson
import pyarrow as pa
import pytest

from streamml.errors import FormatError
from streamml.formats import TOMBSTONE_REASON, JsonFormat

SCHEMA = pa.schema([("V1", pa.float64()), ("Amount", pa.float64()), ("Label", pa.string())])


def test_decode_flat_batch() -> None:
    fmt = JsonFormat(SCHEMA)
    decoded = fmt.decode([b'{"V1": 1.5, "Amount": 10, "Label": "a"}', b'{"V1": -2, "Amount": null}'])
    assert decoded.all_ok
    assert decoded.table.schema == SCHEMA
    assert decoded.table.to_pylist() == [
        {"V1": 1.5, "Amount": 10.0, "Label": "a"},
        {"V1": -2.0, "Amount": None, "Label": None},
    ]


def test_keys_match_case_insensitively() -> None:
    fmt = JsonFormat(SCHEMA)
    decoded = fmt.decode([b'{"v1": 1.0, "AMOUNT": 2.0, "label": "x", "extra": [1]}'] * 3)
    assert decoded.table.column_names == ["V1", "Amount", "Label"]
    assert decoded.table.column("V1").to_pylist() == [1.0] * 3
    assert decoded.table.column("Label").to_pylist() == ["x"] * 3
    # another spelling in a later batch
    decoded = fmt.decode([b'{"V1": 3.0, "amount": 4.0}'])
    assert decoded.table.to_pylist() == [{"V1": 3.0, "Amount": 4.0, "Label": None}]


def test_mixed_good_and_bad_records() -> None:
    fmt = JsonFormat(SCHEMA)
    values = [
        b'{"V1": 1}',
        b'{"V1": "abc"}',
        None,
        b"[1, 2]",
        b'{"V1": 2',
        b'{"V1": 3}',
        b"",
        b"null",
        b'{"V1": 4}{"V1": 5}',
        b'{"Label": "\xff"}',
        b'{"V1": 6}',
    ]
    decoded = fmt.decode(values)
    assert decoded.table.column("V1").to_pylist() == [1.0, 3.0, 6.0]
    assert decoded.indices.tolist() == [0, 5, 10]
    reasons = {f.index: f.reason for f in decoded.failures}
    assert reasons == {
        1: "field 'V1': expected double, got string 'abc'",
        2: TOMBSTONE_REASON,
        3: "expected a JSON object, got array",
        4: "invalid JSON at byte 8: unexpected end of data",
        6: "invalid JSON at byte 0: Input is a zero-length, empty document",
        7: "expected a JSON object, got null",
        8: "invalid JSON at byte 9: unexpected content after document",
        9: reasons[9],
    }
    assert "UTF-8" in reasons[9]


def test_all_bad_batch_is_empty_table_with_schema() -> None:
    decoded = JsonFormat(SCHEMA).decode([b"{", None, b"1"])
    assert decoded.table.schema == SCHEMA
    assert decoded.table.num_rows == 0
    assert [f.index for f in decoded.failures] == [0, 1, 2]


def test_pretty_printed_and_padded_records() -> None:
    fmt = JsonFormat(SCHEMA)
    pretty = orjson.dumps({"V1": 1.0, "Label": "x"}, option=orjson.OPT_INDENT_2)
    decoded = fmt.decode([pretty, b'  {"V1": 2.0}\r\n', b'{"V1": 3.0}'])
    assert decoded.all_ok
    assert decoded.table.column("V1").to_pylist() == [1.0, 2.0, 3.0]


def test_integer_checks() -> None:
    fmt = JsonFormat(pa.schema([("n", pa.int32())]))
    decoded = fmt.decode([b'{"n": 1}', b'{"n": 1.5}', b'{"n": 3000000000}', b'{"n": true}'])
    assert decoded.table.column("n").to_pylist() == [1]
    reasons = [f.reason for f in decoded.failures]
    assert reasons[0] == "field 'n': expected int32, got number 1.5"
    assert reasons[1] == "field 'n': expected int32, got 3000000000 (out of range)"
    assert reasons[2] == "field 'n': expected int32, got boolean True"


NESTED = pa.schema(
    [
        ("image", pa.list_(pa.float64())),
        ("point", pa.struct([("X", pa.float64()), ("Tags", pa.list_(pa.string()))])),
        ("counts", pa.map_(pa.string(), pa.int64())),
    ]
)


def test_nested_types_round_trip() -> None:
    fmt = JsonFormat(NESTED)
    values = [
        b'{"image": [0.0, 0.5, 1.0], "point": {"x": 1.5, "tags": ["a"]}, "counts": {"a": 1, "b": 2}}',
        b'{"image": [], "point": null, "counts": {}}',
        b'{"image": null, "point": {"X": null, "Tags": [null]}}',
    ]
    decoded = fmt.decode(values)
    assert decoded.all_ok, decoded.failures
    assert decoded.table.to_pylist() == [
        {"image": [0.0, 0.5, 1.0], "point": {"X": 1.5, "Tags": ["a"]}, "counts": [("a", 1), ("b", 2)]},
        {"image": [], "point": None, "counts": []},
        {"image": None, "point": {"X": None, "Tags": [None]}, "counts": None},
    ]
    again = fmt.decode(fmt.encode(decoded.table))
    assert again.table.equals(decoded.table)


def test_nested_mismatch_reason() -> None:
    fmt = JsonFormat(NESTED)
    decoded = fmt.decode([b'{"image": [1.0, "x"]}', b'{"point": {"x": "no"}}', b'{"counts": {"a": "b"}}'])
    assert [f.reason for f in decoded.failures] == [
        "field 'image': item 1: expected double, got string 'x'",
        "field 'point': in 'X': expected double, got string 'no'",
        "field 'counts': item 0: expected int64, got string 'b'",
    ]


def test_image_arrays_of_doubles() -> None:
    schema = pa.schema([("pixels", pa.list_(pa.float64(), 4)), ("id", pa.int64())])
    fmt = JsonFormat(schema)
    decoded = fmt.decode([b'{"pixels": [0.1, 0.2, 0.3, 0.4], "id": 1}', b'{"pixels": [1, 2], "id": 2}'])
    assert decoded.table.column("pixels").to_pylist() == [[0.1, 0.2, 0.3, 0.4]]
    assert [f.index for f in decoded.failures] == [1]
    assert fmt.decode(fmt.encode(decoded.table)).table.equals(decoded.table)


def test_special_types_follow_ksqldb() -> None:
    schema = pa.schema([("ts", pa.timestamp("ms")), ("d", pa.date32()), ("raw", pa.binary()), ("f", pa.float64())])
    table = pa.table(
        {
            "ts": pa.array([datetime.datetime(2024, 1, 2, 3, 4, 5, 678000)], pa.timestamp("ms")),
            "d": pa.array([datetime.date(2024, 1, 2)], pa.date32()),
            "raw": [b"\x00\xffhi"],
            "f": [math.nan],
        },
        schema=schema,
    )
    fmt = JsonFormat(schema)
    [value] = fmt.encode(table)
    assert orjson.loads(value) == {"ts": 1704164645678, "d": 19724, "raw": "AP9oaQ==", "f": "NaN"}
    decoded = fmt.decode([value])
    assert math.isnan(decoded.table.column("f")[0].as_py())
    assert decoded.table.drop_columns("f").to_pylist() == [
        {
            "ts": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000),
            "d": datetime.date(2024, 1, 2),
            "raw": b"\x00\xffhi",
        }
    ]


@pytest.mark.parametrize("rows", [3, 3000])  # row-wise and DuckDB paths for the finite rows
def test_nan_and_infinity_are_written_as_jacksons_strings_even_nested(rows: int) -> None:
    """ksqlDB (Jackson) writes non-finite doubles as "NaN", "Infinity", "-Infinity"; finite rows are unchanged."""
    xs = ([math.nan, math.inf, 1.0] * rows)[:rows]
    nested = ([[-math.inf, 2.0], None, [3.5]] * rows)[:rows]
    table = pa.table({"x": xs, "l": nested, "m": pa.array([[("k", 1.0)]] * rows, pa.map_(pa.string(), pa.float64()))})
    values = [orjson.loads(v) for v in JsonFormat().encode(table)]
    assert (
        values[:3]
        == [
            {"x": "NaN", "l": ["-Infinity", 2.0], "m": {"k": 1.0}},
            {"x": "Infinity", "l": None, "m": {"k": 1.0}},
            {"x": 1.0, "l": [3.5], "m": {"k": 1.0}},
        ][: len(values)]
    )
    assert len(values) == rows


def test_nan_strings_read_back_as_doubles() -> None:
    schema = pa.schema([("x", pa.float64())])
    decoded = JsonFormat(schema).decode([b'{"x": 1.5}', b'{"x": "NaN"}', b'{"x": "-Infinity"}'])
    got = decoded.table.column("x").to_pylist()
    assert got[0] == 1.5 and math.isnan(got[1]) and got[2] == -math.inf and not decoded.failures


def test_encode_unicode_and_nulls() -> None:
    table = pa.table({"s": ['q"\\\n\t\x01😀', None, ""], "n": [None, 1, 2]})
    values = JsonFormat().encode(table)
    assert [orjson.loads(v) for v in values] == table.to_pylist()


def test_without_schema_infers_types() -> None:
    decoded = JsonFormat().decode([b'{"a": 1, "b": "x"}', b'{"a": 2.5}', b"oops"])
    assert decoded.table.column_names == ["a", "b"]
    assert decoded.table.column("a").to_pylist() == [1.0, 2.5]
    assert decoded.failures[0].index == 2


def test_empty_inputs() -> None:
    fmt = JsonFormat(SCHEMA)
    assert fmt.decode([]).table.schema == SCHEMA
    assert fmt.encode(SCHEMA.empty_table()) == []
    assert JsonFormat().encode(pa.table({"a": [1]}).select([])) == [b"{}"]


def test_columns_differing_only_in_case_are_rejected() -> None:
    with pytest.raises(FormatError, match="case"):
        JsonFormat(pa.schema([("a", pa.int64()), ("A", pa.int64())]))


def test_encode_columns_differing_only_in_case() -> None:
    values = JsonFormat().encode(pa.table({"a": [1], "A": [2]}))
    assert orjson.loads(values[0]) == {"a": 1, "A": 2}


def test_large_batch_spanning_blocks() -> None:
    fmt = JsonFormat(pa.schema([("i", pa.int64()), ("s", pa.string())]))
    values = [orjson.dumps({"i": i, "s": "x" * (i % 300)}) for i in range(20_000)]
    values[12_345] = b'{"i": "bad"}'
    decoded = fmt.decode(values)
    assert decoded.table.num_rows == 19_999
    assert [f.index for f in decoded.failures] == [12_345]
    assert decoded.table.column("i").to_pylist()[:3] == [0, 1, 2]


def test_spelling_learned_from_later_records_when_first_lacks_a_field() -> None:
    fmt = JsonFormat(SCHEMA)
    decoded = fmt.decode([b'{"v1": 1.0}', b'{"v1": 2.0, "LABEL": "x", "amount": 3.0}'])
    assert decoded.table.to_pylist() == [
        {"V1": 1.0, "Amount": None, "Label": None},
        {"V1": 2.0, "Amount": 3.0, "Label": "x"},
    ]


def test_without_schema_conflicting_types_fail_not_raise() -> None:
    decoded = JsonFormat().decode([b'{"a": 1}', b'{"a": "x"}', b'{"a": 2}'])
    assert decoded.table.num_rows + len(decoded.failures) == 3
    assert decoded.failures and "types differ" in decoded.failures[0].reason


def test_record_larger_than_a_read_block() -> None:
    schema = pa.schema([("a", pa.string()), ("b", pa.int64())])
    fmt = JsonFormat(schema)
    table = pa.table({"a": ["x" * 3_000_000, "q"], "b": [1, 2]}, schema=schema)
    assert fmt.decode(fmt.encode(table)).table.equals(table)


@pytest.mark.parametrize("with_map", [False, True], ids=["vectorised", "row by row"])
def test_varchar_takes_any_json_value_as_its_text(with_map: bool) -> None:
    """As in ksqlDB; a schema with a MAP is read row by row and must agree with the vectorised reader."""
    fields = [("s", pa.string()), ("n", pa.int64())] + ([("m", pa.map_(pa.string(), pa.int64()))] if with_map else [])
    fmt = JsonFormat(pa.schema(fields))
    decoded = fmt.decode([b'{"s": 5, "n": 1}', b'{"s": true, "n": 2}', b'{"s": "x", "n": 3}', b'{"s": 1, "n": "two"}'])
    assert decoded.table.column("s").to_pylist() == ["5", "true", "x"]
    assert [(f.index, f.reason) for f in decoded.failures] == [(3, "field 'n': expected int64, got string 'two'")]


@pytest.mark.parametrize("first_as_text", [False, True], ids=["among numbers", "whole batch as text"])
def test_numbers_and_booleans_written_as_text_convert_as_in_ksqldb(first_as_text: bool) -> None:
    schema = pa.schema([("i", pa.int32()), ("d", pa.float64()), ("b", pa.bool_()), ("c", pa.decimal128(6, 2))])
    texts = [b'{"i": "2", "d": "2.5", "b": "TRUE", "c": "3.5"}', b'{"i": "-7", "d": "1e3", "b": "false", "c": "0.25"}']
    numbers = [b'{"i": 1, "d": 1.5, "b": true, "c": 1.25}']
    bad = [b'{"i": "2.5"}', b'{"i": "99999999999"}', b'{"b": "yes"}', b'{"d": "one"}']
    decoded = JsonFormat(schema).decode((texts + numbers if first_as_text else numbers + texts) + bad)
    rows = {r["i"]: r for r in decoded.table.to_pylist()}
    assert rows[2] == {"i": 2, "d": 2.5, "b": True, "c": decimal.Decimal("3.50")}
    assert rows[-7] == {"i": -7, "d": 1000.0, "b": False, "c": decimal.Decimal("0.25")}
    assert rows[1]["d"] == 1.5 and len(rows) == 3
    assert [f.reason for f in decoded.failures] == [
        "field 'i': expected int32, got string '2.5'",
        "field 'i': expected int32, got 99999999999 (out of range)",
        "field 'b': expected bool, got string 'yes'",
        "field 'd': expected double, got string 'one'",
    ]


def test_narrow_integers_decimals_and_times_are_read_exactly_with_range_checks() -> None:
    schema = pa.schema(
        [
            ("d", pa.decimal128(10, 2)),
            ("i8", pa.int8()),
            ("u16", pa.uint16()),
            ("u32", pa.uint32()),
            ("f", pa.float32()),
            ("t", pa.time64("us")),
            ("s", pa.struct([("b", pa.int16())])),
        ]
    )
    values = [
        b'{"d": 12.34, "i8": -5, "u16": 65535, "u32": 4000000000, "f": 1.5, "t": 5, "s": {"b": 3}}',
        b'{"d": "12.30"}',
        b'{"i8": 300}',
        b'{"u16": -1}',
        b'{"s": {"b": 40000}}',
        b'{"d": true}',
        b'{"d": 1.005}',
    ]
    decoded = JsonFormat(schema).decode(values)
    first, second = decoded.table.to_pylist()
    assert first == {
        "d": decimal.Decimal("12.34"),
        "i8": -5,
        "u16": 65535,
        "u32": 4_000_000_000,
        "f": 1.5,
        "t": datetime.time(0, 0, 0, 5),
        "s": {"b": 3},
    }
    assert second["d"] == decimal.Decimal("12.30")
    reasons = {f.index: f.reason for f in decoded.failures}
    assert reasons[2] == "field 'i8': expected int8, got 300 (out of range)"
    assert reasons[3] == "field 'u16': expected uint16, got -1 (out of range)"
    assert reasons[4] == "field 's': in 'b': expected int16, got 40000 (out of range)"
    assert reasons[5] == "field 'd': expected decimal128(10, 2), got boolean True"
    assert "data loss" in reasons[6]
