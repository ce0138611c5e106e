"""KAFKA: single-column primitives in Kafka's own serialization."""

from __future__ import annotations

import struct

import pyarrow as pa
import pytest

from streamml.errors import FormatError
from streamml.formats import TOMBSTONE_REASON, KafkaFormat


@pytest.mark.parametrize(
    ("arrow_type", "packed", "values"),
    [
        (pa.int32(), ">i", [0, -1, 2**31 - 1, -(2**31)]),
        (pa.int64(), ">q", [0, -1, 2**63 - 1, -(2**63)]),
        (pa.float64(), ">d", [0.0, -0.0, 1.5, 1e308, 5e-324]),
    ],
)
def test_fixed_width(arrow_type: pa.DataType, packed: str, values: list[float]) -> None:
    fmt = KafkaFormat(pa.schema([("v", arrow_type)]))
    raw = [struct.pack(packed, v) for v in values]
    decoded = fmt.decode(raw)
    assert decoded.table.column("v").to_pylist() == values
    assert fmt.encode(decoded.table) == raw


def test_wrong_length_and_tombstones() -> None:
    fmt = KafkaFormat(pa.schema([("v", pa.int32())]))
    decoded = fmt.decode([b"\x00\x00\x00\x01", b"\x01", None, b"\x00" * 8, b"\x00\x00\x00\x02"])
    assert decoded.table.column("v").to_pylist() == [1, 2]
    assert decoded.indices.tolist() == [0, 4]
    assert [(f.index, f.reason) for f in decoded.failures] == [
        (1, "expected 4 bytes for INT, got 1"),
        (2, TOMBSTONE_REASON),
        (3, "expected 4 bytes for INT, got 8"),
    ]


def test_string_and_bytes() -> None:
    text = KafkaFormat(pa.schema([("s", pa.string())]))
    decoded = text.decode(["héllo 😀".encode(), b"", b"\xff\xfe"])
    assert decoded.table.column("s").to_pylist() == ["héllo 😀", ""]
    assert decoded.failures[0].reason == "invalid UTF-8 at byte 0: invalid start byte"
    raw = KafkaFormat(pa.schema([("b", pa.binary())]))
    assert raw.decode([b"\xff\x00", b""]).table.column("b").to_pylist() == [b"\xff\x00", b""]


def test_encode_null_is_refused() -> None:
    fmt = KafkaFormat(pa.schema([("v", pa.int64())]))
    with pytest.raises(FormatError, match="row 1"):
        fmt.encode(pa.table({"v": pa.array([1, None], pa.int64())}))


@pytest.mark.parametrize(
    "schema",
    [None, pa.schema([("a", pa.int64()), ("b", pa.int64())]), pa.schema([("a", pa.list_(pa.int64()))])],
)
def test_misconfiguration(schema: pa.Schema | None) -> None:
    with pytest.raises(FormatError):
        KafkaFormat(schema)
