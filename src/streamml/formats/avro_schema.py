"""Avro schemas: load them, derive one from an Arrow schema (ksqlDB style) and map one back to Arrow."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.types as pat

from streamml.errors import FormatError
from streamml.formats._arrow import casefold_duplicates, is_list_like

__all__ = [
    "arrow_schema_from_avro",
    "avro_schema_from_arrow",
    "avro_value_schema",
    "load_avro_schema",
    "parse_avro_schema",
]

_AVRO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TEMPORAL_LOGICAL = {
    "date",
    "time-millis",
    "time-micros",
    "timestamp-millis",
    "timestamp-micros",
    "local-timestamp-millis",
    "local-timestamp-micros",
}


def load_avro_schema(source: dict[str, Any] | str | Path) -> dict[str, Any]:
    """An Avro schema from a dict, JSON text or a path to an ``.avsc`` file."""
    if isinstance(source, dict):
        return source
    text = str(source)
    if isinstance(source, str) and text.lstrip().startswith(("{", '"')):
        where = "Avro schema text"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FormatError(f"cannot read Avro schema file {path}: {exc.strerror}") from exc
        where = f"Avro schema file {path}"
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise FormatError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise FormatError(f"{where} must be a record schema (a JSON object)")
    return schema


def avro_schema_from_arrow(schema: pa.Schema, name: str = "Record", namespace: str | None = None) -> dict[str, Any]:
    """Derive an Avro record schema from an Arrow schema: every field (and item) a ``["null", T]`` union.

    Nested records are named ``<parent>_<field>``; a dotted ``name`` is a full name (``com.acme.Pet``: the
    namespace, then the name). Raises :class:`FormatError` for a type Avro cannot hold.
    """
    if namespace is None and "." in name:
        namespace, _, name = name.rpartition(".")
        for part in namespace.split("."):
            _check_name(part, "namespace part")
    _check_name(name, "record name")
    record: dict[str, Any] = {"type": "record", "name": name, "fields": _avro_fields(list(schema), name)}
    if namespace:
        record["namespace"] = namespace
    return record


def avro_value_schema(field: pa.Field, name: str = "Record") -> list[Any]:
    """The Avro schema of one column written on its own, unwrapped (a ksqlDB single-column key, or a value
    with ``WRAP_SINGLE_VALUE=false``): ``["null", T]``; a struct column's record is called ``name``."""
    _check_name(name, "record name")
    return ["null", _avro_type(field.type, name)]


def _avro_fields(fields: list[pa.Field], path: str) -> list[dict[str, Any]]:
    dups = casefold_duplicates([f.name for f in fields])
    if dups:
        raise FormatError(f"Avro record '{path}' has fields that differ only in case: {', '.join(dups)}")
    out = []
    for f in fields:
        _check_name(f.name, f"field name in '{path}'")
        avro_type = _avro_type(f.type, f"{path}_{f.name}")
        out.append({"name": f.name, "type": ["null", avro_type], "default": None})
    return out


def _avro_type(t: pa.DataType, path: str) -> Any:
    if pat.is_boolean(t):
        return "boolean"
    if pat.is_int8(t) or pat.is_int16(t) or pat.is_int32(t) or pat.is_uint8(t) or pat.is_uint16(t):
        return "int"
    if pat.is_int64(t) or pat.is_uint32(t):
        return "long"
    if pat.is_float16(t) or pat.is_float32(t):
        return "float"
    if pat.is_float64(t):
        return "double"
    if pat.is_string(t) or pat.is_large_string(t):
        return "string"
    if pat.is_binary(t) or pat.is_large_binary(t):
        return "bytes"
    if pat.is_fixed_size_binary(t):
        return {"type": "fixed", "name": path, "size": t.byte_width}
    if pat.is_decimal128(t):
        return {"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale}
    if pat.is_date32(t):
        return {"type": "int", "logicalType": "date"}
    if pat.is_time32(t) and t.unit == "ms":
        return {"type": "int", "logicalType": "time-millis"}
    if pat.is_time64(t) and t.unit == "us":
        return {"type": "long", "logicalType": "time-micros"}
    if pat.is_timestamp(t) and t.unit in ("ms", "us"):
        kind = "timestamp" if t.tz is not None else "local-timestamp"
        # ksqlDB writes TIMESTAMP as timestamp-millis whatever the zone; keep that spelling for "ms"
        kind = "timestamp" if t.unit == "ms" else kind
        return {"type": "long", "logicalType": f"{kind}-{'millis' if t.unit == 'ms' else 'micros'}"}
    if is_list_like(t):
        return {"type": "array", "items": ["null", _avro_type(t.value_type, f"{path}_item")]}
    if pat.is_map(t):
        if not (pat.is_string(t.key_type) or pat.is_large_string(t.key_type)):
            raise FormatError(f"Avro maps need string keys: '{path}' has {t.key_type} keys")
        return {"type": "map", "values": ["null", _avro_type(t.item_type, f"{path}_value")]}
    if pat.is_struct(t):
        return {"type": "record", "name": path, "fields": _avro_fields(list(t), path)}
    if pat.is_dictionary(t):
        return _avro_type(t.value_type, path)
    raise FormatError(f"Avro cannot hold '{path}' of type {t}")


def _check_name(name: str, what: str) -> None:
    if not _AVRO_NAME.match(name):
        raise FormatError(f"'{name}' is not a valid Avro {what}", hint="use letters, digits and _")


def arrow_schema_from_avro(avro: dict[str, Any] | str | Path) -> pa.Schema:
    """The Arrow schema of an Avro record schema (``["null", T]`` unions become nullable fields)."""
    schema = load_avro_schema(avro)
    if schema.get("type") != "record":
        raise FormatError(f"Avro schema must be a record, got {schema.get('type')!r}")
    named: dict[str, pa.DataType] = {}
    return pa.schema(_arrow_fields(schema, named, schema.get("namespace")))


def _arrow_fields(record: dict[str, Any], named: dict[str, pa.DataType], ns: str | None) -> list[pa.Field]:
    fields = []
    for f in record.get("fields", []):
        t, nullable = _arrow_type(f["type"], named, ns)
        fields.append(pa.field(f["name"], t, nullable=nullable))
    return fields


_PRIMITIVES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
}
_LOGICAL: dict[str, pa.DataType] = {
    "date": pa.date32(),
    "time-millis": pa.time32("ms"),
    "time-micros": pa.time64("us"),
    "timestamp-millis": pa.timestamp("ms"),
    "timestamp-micros": pa.timestamp("us"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
}


def _arrow_type(avro: Any, named: dict[str, pa.DataType], ns: str | None) -> tuple[pa.DataType, bool]:
    """Arrow type of an Avro type and whether it admits null."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) != 1:
            raise FormatError(f'Avro union {avro} is not supported: only ["null", T] unions are')
        t, _ = _arrow_type(branches[0], named, ns)
        return t, len(branches) != len(avro)
    if isinstance(avro, str):
        if avro == "null":
            return pa.null(), True
        if avro in _PRIMITIVES:
            return _PRIMITIVES[avro], False
        full = avro if "." in avro or ns is None else f"{ns}.{avro}"
        for key in (avro, full):
            if key in named:
                return named[key], False
        raise FormatError(f"unknown Avro type {avro!r}")
    if not isinstance(avro, dict):
        raise FormatError(f"invalid Avro type {avro!r}")
    kind = avro.get("type")
    logical = avro.get("logicalType")
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision = int(avro["precision"])
        return pa.decimal128(precision, int(avro.get("scale", 0))), False
    if logical in _LOGICAL:
        return _LOGICAL[logical], False
    if kind == "record":
        ns = avro.get("namespace", ns)
        record_type = pa.struct(_arrow_fields(avro, named, ns))
        _name(avro, ns, named, record_type)
        return record_type, False
    if kind == "array":
        item, nullable = _arrow_type(avro["items"], named, ns)
        return pa.list_(pa.field("item", item, nullable=nullable)), False
    if kind == "map":
        value, nullable = _arrow_type(avro["values"], named, ns)
        return pa.map_(pa.string(), pa.field("value", value, nullable=nullable)), False
    if kind == "enum":
        _name(avro, ns, named, pa.string())
        return pa.string(), False
    if kind == "fixed":
        fixed_type = pa.binary(int(avro["size"]))
        _name(avro, ns, named, fixed_type)
        return fixed_type, False
    return _arrow_type(kind, named, ns)


def _name(avro: dict[str, Any], ns: str | None, named: dict[str, pa.DataType], t: pa.DataType) -> None:
    name = avro["name"]
    named[name] = t
    if ns and "." not in name:
        named[f"{ns}.{name}"] = t


def _strip_temporal(avro: Any) -> Any:
    """The same schema without temporal logical types: their values are read and written as plain numbers."""
    if isinstance(avro, list):
        return [_strip_temporal(b) for b in avro]
    if not isinstance(avro, dict):
        return avro
    out = {k: v for k, v in avro.items() if not (k == "logicalType" and v in _TEMPORAL_LOGICAL)}
    if "fields" in out:
        out["fields"] = [{**f, "type": _strip_temporal(f["type"])} for f in out["fields"]]
    for key in ("items", "values"):
        if key in out:
            out[key] = _strip_temporal(out[key])
    if isinstance(out.get("type"), dict | list):
        out["type"] = _strip_temporal(out["type"])
    return out


def parse_avro_schema(avro: dict[str, Any]) -> Any:
    """fastavro's parsed form of ``avro``, temporal logical types read and written as plain numbers."""
    try:
        return fastavro.parse_schema(_strip_temporal(avro), named_schemas={})
    except Exception as exc:  # fastavro raises several unrelated types for a bad schema
        raise FormatError(f"invalid Avro schema: {exc}") from exc
