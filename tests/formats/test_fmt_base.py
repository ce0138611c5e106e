"""The batch contract: bisection isolates bad records, tombstones and pre-rejected records are set aside."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pytest

from streamml.errors import FormatError
from streamml.formats import (
    FORMAT_NAMES,
    TOMBSTONE_REASON,
    AvroFormat,
    DelimitedFormat,
    JsonFormat,
    KafkaFormat,
    decode_isolating,
    get_format,
)

SCHEMA = pa.schema([("n", pa.int64())])


def _ints(calls: list[int]) -> object:
    def decode_all(chunk: Sequence[bytes]) -> pa.Table:
        calls.append(len(chunk))
        return pa.table({"n": [int(v) for v in chunk]}, schema=SCHEMA)

    return decode_all


def test_good_batch_costs_one_call() -> None:
    calls: list[int] = []
    decoded = decode_isolating([b"1", b"2", b"3"], _ints(calls), SCHEMA)  # type: ignore[arg-type]
    assert calls == [3]
    assert decoded.table.column("n").to_pylist() == [1, 2, 3]
    assert decoded.indices.tolist() == [0, 1, 2]
    assert decoded.all_ok


def test_bad_records_are_isolated_in_order() -> None:
    values = [b"1", b"x", b"3", None, b"5", b"y", b"7", b"8"]
    decoded = decode_isolating(values, _ints([]), SCHEMA)  # type: ignore[arg-type]
    assert decoded.table.column("n").to_pylist() == [1, 3, 5, 7, 8]
    assert decoded.indices.tolist() == [0, 2, 4, 6, 7]
    assert [f.index for f in decoded.failures] == [1, 3, 5]
    assert decoded.failures[1].reason == TOMBSTONE_REASON
    assert "invalid literal" in decoded.failures[0].reason


def test_explain_rejected_and_singles() -> None:
    calls: list[int] = []
    decoded = decode_isolating(
        [b"1", b"2", b"z", b"4", b"5"],
        _ints(calls),  # type: ignore[arg-type]
        SCHEMA,
        explain=lambda value, default: f"not a number: {value!r}",
        rejected={1: "set aside"},
        singles=[3],
    )
    assert decoded.indices.tolist() == [0, 3, 4]
    assert [(f.index, f.reason) for f in decoded.failures] == [(1, "set aside"), (2, "not a number: b'z'")]
    assert 1 in calls  # the single was decoded alone


def test_all_bad_gives_empty_table_with_schema() -> None:
    decoded = decode_isolating([b"x", None], _ints([]), SCHEMA)  # type: ignore[arg-type]
    assert decoded.table.schema == SCHEMA
    assert decoded.table.num_rows == 0
    assert len(decoded.indices) == 0
    assert len(decoded.failures) == 2


def test_row_count_mismatch_is_a_failure() -> None:
    def decode_all(chunk: Sequence[bytes]) -> pa.Table:
        rows = [int(x) for v in chunk for x in v.split(b";")]
        return pa.table({"n": rows}, schema=SCHEMA)

    decoded = decode_isolating([b"1", b"2;3", b"4"], decode_all, SCHEMA)
    assert decoded.indices.tolist() == [0, 2]
    assert decoded.failures[0].reason == "decoded into 2 rows, expected 1"


@pytest.mark.parametrize(
    ("name", "cls"),
    [("json", JsonFormat), ("Delimited", DelimitedFormat), ("AVRO", AvroFormat), ("kafka", KafkaFormat)],
)
def test_get_format_is_case_insensitive(name: str, cls: type) -> None:
    assert isinstance(get_format(name, SCHEMA), cls)


def test_get_format_unknown_lists_valid_names() -> None:
    with pytest.raises(FormatError) as info:
        get_format("protobuf")
    for name in FORMAT_NAMES:
        assert name in str(info.value)


def test_get_format_rejects_options_of_other_formats() -> None:
    with pytest.raises(FormatError, match="delimiter"):
        get_format("JSON", SCHEMA, delimiter=";")
    assert isinstance(get_format("DELIMITED", SCHEMA, delimiter="TAB"), DelimitedFormat)


def test_raw_is_bytes_in_one_column() -> None:
    fmt = get_format("raw")
    decoded = fmt.decode([b"\x00\xff", None])
    assert decoded.table.column("value").to_pylist() == [b"\x00\xff"]
    assert fmt.encode(decoded.table) == [b"\x00\xff"]
