"""Serialization formats: a whole batch of Kafka values in, one Arrow table out (and back).

Use :func:`get_format` with a KSQL format name (``JSON``, ``DELIMITED``, ``AVRO``, ``KAFKA``) or ``RAW``
(the value's bytes as one binary column). Records that do not decode become :class:`DecodeFailure` entries,
never exceptions; misconfiguration raises :class:`streamml.errors.FormatError`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from streamml.errors import FormatError
from streamml.formats.avro import AvroFormat, arrow_schema_from_avro, avro_schema_from_arrow
from streamml.formats.base import TOMBSTONE_REASON, Decoded, DecodeFailure, Format, decode_isolating
from streamml.formats.delimited import DelimitedFormat
from streamml.formats.json import JsonFormat
from streamml.formats.kafka import KafkaFormat
from streamml.formats.schema_registry import SchemaRegistryClient, UnknownSchemaError, subject_name

__all__ = [
    "FORMAT_NAMES",
    "RAW_SCHEMA",
    "TOMBSTONE_REASON",
    "AvroFormat",
    "DecodeFailure",
    "Decoded",
    "DelimitedFormat",
    "Format",
    "JsonFormat",
    "KafkaFormat",
    "SchemaRegistryClient",
    "UnknownSchemaError",
    "arrow_schema_from_avro",
    "avro_schema_from_arrow",
    "decode_isolating",
    "get_format",
    "subject_name",
]

#: Format names :func:`get_format` accepts (case-insensitively).
FORMAT_NAMES: tuple[str, ...] = ("JSON", "DELIMITED", "AVRO", "KAFKA", "RAW")

#: The schema of the RAW format: the value's bytes in one column.
RAW_SCHEMA = pa.schema([pa.field("value", pa.binary())])

_OPTIONS: dict[str, frozenset[str]] = {
    "JSON": frozenset(),
    "DELIMITED": frozenset({"delimiter"}),
    "AVRO": frozenset({"avro_schema", "schema_registry_url", "subject", "registry", "record_name", "unwrapped"}),
    "KAFKA": frozenset(),
    "RAW": frozenset(),
}


def get_format(name: str, schema: pa.Schema | None = None, **options: Any) -> Format:
    """The format called ``name`` (case-insensitive) for records of ``schema``.

    Options: ``delimiter`` (DELIMITED); ``avro_schema``, ``schema_registry_url``, ``subject``, ``registry``,
    ``record_name``, ``unwrapped`` (AVRO). Raises :class:`FormatError` for an unknown name or an option the
    format lacks.
    """
    key = name.strip().upper()
    if key not in _OPTIONS:
        raise FormatError(f"unknown format '{name}'", hint=f"valid formats: {', '.join(FORMAT_NAMES)}")
    unknown = sorted(set(options) - _OPTIONS[key])
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[key])) or "none"
        raise FormatError(f"format {key} has no option(s) {', '.join(unknown)}", hint=f"its options: {allowed}")
    if key == "JSON":
        return JsonFormat(schema)
    if key == "DELIMITED":
        return DelimitedFormat(schema, **options)
    if key == "AVRO":
        return AvroFormat(schema, **options)
    if key == "RAW":
        return KafkaFormat(schema or RAW_SCHEMA)
    return KafkaFormat(schema)
