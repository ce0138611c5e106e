"""AVRO: plain binary with given or derived schemas, and the Confluent wire format with a registry."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import math
import struct
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from streamml.errors import FormatError
from streamml.formats import (
    TOMBSTONE_REASON,
    AvroFormat,
    SchemaRegistryClient,
    UnknownSchemaError,
    arrow_schema_from_avro,
    avro_schema_from_arrow,
    get_format,
    subject_name,
)

RICH = pa.schema(
    [
        ("id", pa.int64()),
        ("n", pa.int32()),
        ("name", pa.string()),
        ("ok", pa.bool_()),
        ("score", pa.float64()),
        ("ratio", pa.float32()),
        ("raw", pa.binary()),
        ("price", pa.decimal128(10, 2)),
        ("at", pa.timestamp("ms")),
        ("day", pa.date32()),
        ("pixels", pa.list_(pa.float64())),
        ("counts", pa.map_(pa.string(), pa.int64())),
        ("point", pa.struct([("x", pa.float64()), ("label", pa.string())])),
    ]
)

ROWS: list[dict[str, Any]] = [
    {
        "id": 2**62,
        "n": -5,
        "name": "é😀",
        "ok": True,
        "score": 1.25,
        "ratio": 0.5,
        "raw": b"\x00\xff",
        "price": decimal.Decimal("-12.34"),
        "at": datetime.datetime(2024, 5, 6, 7, 8, 9, 10000),
        "day": datetime.date(2024, 5, 6),
        "pixels": [0.0, None, 1.0],
        "counts": [("a", 1), ("b", None)],
        "point": {"x": 1.5, "label": None},
    },
    dict.fromkeys(RICH.names),
]


def _rich_table() -> pa.Table:
    return pa.Table.from_pylist(ROWS, schema=RICH)


def test_derived_schema_is_ksqldb_style() -> None:
    avro = avro_schema_from_arrow(RICH, "Payment")
    assert avro["name"] == "Payment"
    assert all(f["type"][0] == "null" and f["default"] is None for f in avro["fields"])
    fields = {f["name"]: f["type"][1] for f in avro["fields"]}
    assert fields["id"] == "long"
    assert fields["price"] == {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}
    assert fields["point"]["name"] == "Payment_point"
    assert arrow_schema_from_avro(avro) == RICH


def test_round_trip_with_derived_schema() -> None:
    fmt = AvroFormat(RICH)
    table = _rich_table()
    values = fmt.encode(table)
    decoded = fmt.decode(values)
    assert decoded.all_ok
    assert decoded.table.equals(table)


def test_reads_what_fastavro_writes() -> None:
    avro = {
        "type": "record",
        "name": "Reading",
        "namespace": "demo",
        "fields": [
            {"name": "sensor", "type": "string"},
            {"name": "value", "type": ["null", "double"], "default": None},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        ],
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(avro), {"sensor": "s1", "value": 2.5, "kind": "B"})
    fmt = AvroFormat(avro_schema=avro)
    assert fmt.schema == pa.schema(
        [
            pa.field("sensor", pa.string(), nullable=False),
            ("value", pa.float64()),
            pa.field("kind", pa.string(), nullable=False),
        ]
    )
    decoded = fmt.decode([buf.getvalue()])
    assert decoded.table.to_pylist() == [{"sensor": "s1", "value": 2.5, "kind": "B"}]


def test_schema_from_avsc_file(tmp_path: Path) -> None:
    path = tmp_path / "reading.avsc"
    path.write_text(json.dumps(avro_schema_from_arrow(RICH)))
    fmt = get_format("avro", avro_schema=str(path))
    assert fmt.schema == RICH
    with pytest.raises(FormatError, match="cannot read"):
        AvroFormat(avro_schema=tmp_path / "missing.avsc")


def test_bad_records() -> None:
    fmt = AvroFormat(RICH)
    [good, _] = fmt.encode(_rich_table())
    decoded = fmt.decode([good, good[:7], None, good + b"\x00", b"", b"\x09" + good[1:]])
    assert decoded.indices.tolist() == [0]
    reasons = {f.index: f.reason for f in decoded.failures}
    assert reasons[1] == "truncated Avro record"
    assert reasons[2] == TOMBSTONE_REASON
    assert reasons[3] == "1 unread bytes after the Avro record"
    assert reasons[4] == "truncated Avro record"
    assert reasons[5] == "invalid Avro record: union branch or enum symbol out of range"


DOUBLES = pa.schema([(f"V{i}", pa.float64()) for i in range(1, 31)])


def test_fixed_layout_fast_path_with_nulls_and_nan() -> None:
    fmt = AvroFormat(DOUBLES)
    data = {name: [float(i), math.nan, None, -0.0] for i, name in enumerate(DOUBLES.names)}
    data["V30"] = [1.0, 2.0, 3.0, None]
    table = pa.table(data, schema=DOUBLES)
    values = fmt.encode(table)
    assert len(values[0]) == 30 * 9 and len(values[2]) < 30 * 9
    decoded = fmt.decode([values[2], None, *values, b"\x04" * 270])
    assert decoded.indices.tolist() == [0, 2, 3, 4, 5]
    assert [f.index for f in decoded.failures] == [1, 6]
    got = decoded.table.slice(1)
    assert got.column("V30").to_pylist() == [1.0, 2.0, 3.0, None]
    assert math.isnan(got.column("V2")[1].as_py())
    # the fast path writes the same bytes fastavro does
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(fmt.avro_schema), table.slice(0, 1).to_pylist()[0])
    assert fmt.encode(table.slice(0, 1)) == [buf.getvalue()]


def test_unsupported_types_and_names() -> None:
    with pytest.raises(FormatError, match="not a valid Avro"):
        AvroFormat(pa.schema([("bad-name", pa.int64())]))
    with pytest.raises(FormatError, match="union"):
        arrow_schema_from_avro({"type": "record", "name": "R", "fields": [{"name": "u", "type": ["int", "string"]}]})
    with pytest.raises(FormatError, match="needs a schema"):
        AvroFormat()


# ---------------------------------------------------------------------- Confluent wire format


def test_wire_format_registers_once_and_round_trips(registry_server: tuple[str, Any]) -> None:
    url, state = registry_server
    fmt = get_format("AVRO", RICH, schema_registry_url=url, subject=subject_name("payments"))
    table = _rich_table()
    values = fmt.encode(table) + fmt.encode(table)
    assert values[0][0] == 0
    schema_id = struct.unpack(">I", values[0][1:5])[0]
    assert state.subjects == {"payments-value": [schema_id]}
    posts = [r[1].split("?")[0] for r in state.requests if r[0] == "POST"]
    assert posts == ["/subjects/payments-value/versions"]  # once for two batches
    # a fresh reader fetches the writer schema by id
    reader = AvroFormat(RICH, schema_registry_url=url)
    decoded = reader.decode(values)
    assert decoded.all_ok
    assert decoded.table.equals(pa.concat_tables([table, table]))


def test_wire_format_bad_records(registry_server: tuple[str, Any]) -> None:
    url, _ = registry_server
    fmt = AvroFormat(DOUBLES, schema_registry_url=url, subject="t-value")
    [good] = fmt.encode(pa.table({n: [1.0] for n in DOUBLES.names}, schema=DOUBLES))
    unknown = b"\x00" + (999).to_bytes(4, "big") + good[5:]
    decoded = fmt.decode([good, b"\x01" + good[1:], b"\x00\x00", unknown, good[:-3], None, good])
    assert decoded.indices.tolist() == [0, 6]
    reasons = {f.index: f.reason for f in decoded.failures}
    assert reasons[1] == "unknown magic byte 0x01: expected 0x00 (Confluent wire format)"
    assert reasons[2] == "truncated Confluent header: 2 bytes, expected at least 5"
    assert reasons[3] == f"unknown schema id 999 (registry {url})"
    assert reasons[4] == "truncated Avro record"
    assert reasons[5] == TOMBSTONE_REASON


def test_wire_format_schema_evolution(registry_server: tuple[str, Any]) -> None:
    url, _ = registry_server
    old = pa.schema([("id", pa.int64()), ("name", pa.string())])
    new = pa.schema([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])
    writer = AvroFormat(old, schema_registry_url=url, subject="users-value")
    values = writer.encode(pa.table({"id": [1], "name": ["a"]}, schema=old))
    reader = AvroFormat(new, schema_registry_url=url)
    decoded = reader.decode(values)
    assert decoded.table.to_pylist() == [{"id": 1, "name": "a", "score": None}]


def test_wire_format_schema_from_latest_version(registry_server: tuple[str, Any]) -> None:
    url, _ = registry_server
    writer = AvroFormat(DOUBLES, schema_registry_url=url, subject="x-value")
    values = writer.encode(pa.table({n: [2.0] for n in DOUBLES.names}, schema=DOUBLES))
    reader = get_format("avro", schema_registry_url=url, subject="x-value")
    decoded = reader.decode(values)
    assert reader.schema == DOUBLES
    assert decoded.table.column("V7").to_pylist() == [2.0]


def test_registry_client_errors_name_url_and_subject(registry_server: tuple[str, Any]) -> None:
    url, _ = registry_server
    with SchemaRegistryClient(url) as client:
        with pytest.raises(UnknownSchemaError, match="schema id 42"):
            client.get_schema(42)
        with pytest.raises(UnknownSchemaError, match="'nope-value'") as info:
            client.latest("nope-value")
        assert url in str(info.value)
    with (
        SchemaRegistryClient("http://127.0.0.1:9", timeout=0.5) as client,
        pytest.raises(FormatError, match=r"127\.0\.0\.1:9.*'t-value'"),
    ):
        client.register("t-value", {"type": "record", "name": "R", "fields": []})


def test_registry_down_is_an_error_not_a_bad_record() -> None:
    fmt = AvroFormat(DOUBLES, schema_registry_url="http://127.0.0.1:9")
    with pytest.raises(FormatError, match="schema id 1"):
        fmt.decode([b"\x00\x00\x00\x00\x01" + b"\x00" * 30])
