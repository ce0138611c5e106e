"""The ``WITH`` clause of ``CREATE STREAM/TABLE``: which properties and formats exist, and the checks ksqlDB
makes on them at the statement (so that nothing it would refuse fails later, while a query runs)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from streamml.errors import SqlError
from streamml.sql.catalog import Column, suggest

#: (message, hint) -> the error to raise, placed at the statement
Refuse = Callable[[str, "str | None"], SqlError]

KNOWN_PROPERTIES = (
    "KAFKA_TOPIC", "VALUE_FORMAT", "KEY_FORMAT", "FORMAT", "PARTITIONS", "REPLICAS", "TIMESTAMP",
    "TIMESTAMP_FORMAT", "KEY", "VALUE_DELIMITER", "WRAP_SINGLE_VALUE", "VALUE_AVRO_SCHEMA_FULL_NAME",
    "KEY_AVRO_SCHEMA_FULL_NAME",
)  # fmt: skip
FORMATS = ("JSON", "JSON_SR", "AVRO", "DELIMITED", "KAFKA", "PROTOBUF", "PROTOBUF_NOSR", "NONE")
#: ksqlDB formats without a codec here: refused at the statement, never failing later at run time
UNSUPPORTED_FORMATS = ("JSON_SR", "PROTOBUF", "PROTOBUF_NOSR")
_AVRO_FULL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def checked_properties(props: dict[str, Any], refuse: Refuse) -> dict[str, Any]:
    """``props`` with format names in upper case; unknown properties and formats refused."""
    for key in props:
        if key not in KNOWN_PROPERTIES:
            raise refuse(f"unknown property '{key}' in WITH clause", suggest(key, list(KNOWN_PROPERTIES)))
    for key in ("VALUE_FORMAT", "KEY_FORMAT", "FORMAT"):
        if key in props:
            value = str(props[key]).upper()
            if value not in FORMATS:
                raise refuse(f"unknown format '{props[key]}' for {key}", suggest(value, list(FORMATS)))
            if value in UNSUPPORTED_FORMATS or (value == "NONE" and key != "KEY_FORMAT"):
                hint = "use JSON, AVRO, DELIMITED or KAFKA" + (" (NONE is a key format)" if value == "NONE" else "")
                raise refuse(f"format {value} is not supported here ({key})", hint)
            props[key] = value
    return props


def check_source_properties(props: dict[str, Any], columns: tuple[Column, ...], refuse: Refuse) -> None:
    """What ksqlDB checks of a source's properties against its columns: a ``NONE`` key holds no column, an
    Avro full name is one, ``WRAP_SINGLE_VALUE`` is a boolean for one value column in a format that wraps."""
    if str(props.get("KEY_FORMAT", "")).upper() == "NONE" and any(c.key for c in columns):
        raise refuse("KEY_FORMAT='NONE' means no key: it cannot hold key columns",
                     "set KEY_FORMAT to KAFKA or JSON, or make the key columns value columns")  # fmt: skip
    for key in ("VALUE_AVRO_SCHEMA_FULL_NAME", "KEY_AVRO_SCHEMA_FULL_NAME"):
        full_name = props.get(key)
        if full_name is not None and not _AVRO_FULL_NAME.fullmatch(str(full_name)):
            raise refuse(f"{key} '{full_name}' is not an Avro full name",
                         "dotted names of letters, digits and _, e.g. 'com.acme.Order'")  # fmt: skip
    if "WRAP_SINGLE_VALUE" not in props:
        return
    value = str(props["WRAP_SINGLE_VALUE"]).lower()
    if value not in ("true", "false"):
        raise refuse(f"WRAP_SINGLE_VALUE must be true or false, not '{props['WRAP_SINGLE_VALUE']}'", None)
    props["WRAP_SINGLE_VALUE"] = value
    values = [c for c in columns if not c.key]
    if len(values) != 1:
        raise refuse("'WRAP_SINGLE_VALUE' is only valid for single-field value schemas",
                     f"this value has {len(values)} columns")  # fmt: skip
    fmt = str(props.get("VALUE_FORMAT", props.get("FORMAT", "JSON"))).upper()
    if fmt in ("KAFKA", "DELIMITED") and value == "true":
        raise refuse(f"format {fmt} does not support wrapping a single value: it is always unwrapped", None)
