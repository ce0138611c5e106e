"""Binding catalog sources to formats: Kafka record batches -> Arrow tables + metadata, results -> records.

Keys follow ksqlDB: a source without key columns exposes the record key as ``ROWKEY`` (a string); declared
key columns are decoded from the record key with the key format. Windowed keys are written the way Kafka
Streams does: the serialized key followed by the 8-byte big-endian window start.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.config import Settings
from streamml.formats import TOMBSTONE_REASON, Format, get_format, subject_name
from streamml.formats.unwrapped import UnwrappedJson
from streamml.kafka.consumer import RecordBatch
from streamml.sql import BatchResult, QueryPlan, Source
from streamml.sql.catalog import STREAM
from streamml.sql.functions import java_to_strftime

WINDOW_COLUMNS = ("WINDOWSTART", "WINDOWEND")


def value_format(source: Source, schema: pa.Schema, settings: Settings) -> Format:
    """The value format of ``source`` for ``schema``, with registry, delimiter and wrapping options applied."""
    options: dict[str, Any] = {}
    kind, topic, delimiter = source.value_format.upper(), source.topic, source.value_delimiter
    if kind == "JSON" and source.unwrapped and len(schema) == 1:
        return UnwrappedJson(schema)
    if kind == "DELIMITED" and delimiter:
        options["delimiter"] = delimiter
    if kind == "AVRO":
        options["record_name"] = str(source.properties.get("VALUE_AVRO_SCHEMA_FULL_NAME", "KsqlDataSourceSchema"))
        options["unwrapped"] = source.unwrapped and len(schema) == 1
        if settings.schema_registry_url:
            options.update(schema_registry_url=settings.schema_registry_url, subject=subject_name(topic))
    return get_format(kind, schema, **options)


def key_format(source: Source, schema: pa.Schema, settings: Settings) -> Format:
    """The key format of ``source`` for key columns ``schema``. As in ksqlDB, one key column is its bare value
    (JSON ``1``, ``"abc"``; an Avro ``["null", T]``), several are an object or record; AVRO keys use the
    registry (subject ``<topic>-key``) when one is configured. KAFKA holds one column: several are written
    as a JSON object."""
    name = source.key_format.upper()
    if len(schema) > 1 and name == "KAFKA":
        name = "JSON"
    if name == "JSON" and len(schema) == 1:
        return UnwrappedJson(schema)
    if name != "AVRO":
        return get_format(name, schema)
    options: dict[str, Any] = {
        "record_name": str(source.properties.get("KEY_AVRO_SCHEMA_FULL_NAME", "KsqlKey")),
        "unwrapped": len(schema) == 1,
    }
    if settings.schema_registry_url:
        subject = subject_name(source.topic, is_key=True)
        options.update(schema_registry_url=settings.schema_registry_url, subject=subject)
    return get_format("AVRO", schema, **options)


def encode_source_rows(source: Source, rows: pa.Table, settings: Settings) -> EncodedBatch:
    """Records of ``source`` for ``rows`` (its columns, and ``ROWTIME`` when set): keys in its key format,
    values in its value format, as a query writing to it would (``INSERT INTO ... VALUES``)."""
    keys_schema = pa.schema([rows.schema.field(c.name) for c in source.key_columns])
    values_schema = pa.schema([rows.schema.field(c.name) for c in source.value_columns])
    values: list[bytes | None] = list(
        value_format(source, values_schema, settings).encode(rows.select(values_schema.names))
    )
    keys: list[bytes | None] = [None] * rows.num_rows
    if len(keys_schema):
        fmt = key_format(source, keys_schema, settings)
        keys = encode_keys(fmt, rows.select(keys_schema.names))
    now = int(time.time() * 1000)
    stamps = rows.column("ROWTIME").to_pylist() if "ROWTIME" in rows.column_names else [None] * rows.num_rows
    return EncodedBatch(keys=keys, values=values, timestamps=[now if t is None else int(t) for t in stamps])


def encode_keys(fmt: Format, columns: pa.Table) -> list[bytes | None]:
    """Record keys of the key ``columns``; a row whose key columns are all NULL has no key, as in ksqlDB."""
    missing = np.logical_and.reduce([np.asarray(c.is_null()) for c in columns.columns])
    if not missing.any():
        return list(fmt.encode(columns))
    keys: list[bytes | None] = [None] * columns.num_rows
    present = np.flatnonzero(~missing)
    for i, key in zip(present.tolist(), fmt.encode(columns.take(present)), strict=True):
        keys[i] = key
    return keys


def text_keys(keys: list[bytes | None], rows: np.ndarray) -> pa.Array:
    """Record keys at ``rows`` as strings (invalid UTF-8 replaced, never an error)."""
    picked = pa.array([keys[i] for i in rows], pa.binary())
    try:
        return picked.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([None if k is None else k.decode(errors="replace") for k in picked.to_pylist()], pa.string())


@dataclass
class DecodedBatch:
    """A consumed batch as the SQL executor wants it, plus what was set aside.

    ``rows[i]`` is the batch position of table row ``i``; ``failures`` are (batch position, reason) pairs.
    """

    table: pa.Table
    meta: dict[str, pa.Array]
    rows: np.ndarray
    failures: list[tuple[int, str]] = field(default_factory=list)
    tombstones: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


class SourceCodec:
    """Decodes record batches of one source."""

    def __init__(self, source: Source, settings: Settings, *, deletes: bool = False) -> None:
        #: ``deletes``: a table's tombstones come out as rows too (key columns, NULL values, ``__delete``)
        self.source, self.deletes = source, deletes and source.kind != STREAM
        self.value = value_format(source, source.value_schema(), settings)
        key_schema = source.key_schema()
        self.window_bytes = 0
        if source.windowed:
            key_schema = pa.schema([f for f in key_schema if f.name not in WINDOW_COLUMNS])
            session = str(source.properties.get("WINDOW_TYPE", "")).upper() == "SESSION"
            self.window_bytes = 16 if session else 8
        self.key = key_format(source, key_schema, settings) if len(key_schema) else None

    def with_deletes(self) -> SourceCodec:
        """This codec, decoding a table's tombstones as rows flagged ``__delete``."""
        twin = copy.copy(self)
        twin.deletes = self.source.kind != STREAM
        return twin

    def decode(self, batch: RecordBatch) -> DecodedBatch:
        """Decode values (and declared key columns); undecodable records become failures, tombstones apart."""
        decoded = self.value.decode(batch.values)
        failures = [(f.index, f.reason) for f in decoded.failures if f.reason != TOMBSTONE_REASON]
        tombstones = np.asarray([f.index for f in decoded.failures if f.reason == TOMBSTONE_REASON], np.int64)
        table, rows = decoded.table, decoded.indices
        if self.key is not None and len(rows):
            table, rows, key_failures = self._with_key_columns(batch, table, rows)
            failures = sorted(failures + key_failures)
        elif self.key is not None:  # nothing but tombstones or failures: the same columns, no rows
            assert self.key.schema is not None
            for field in self.key.schema:
                table = table.append_column(field, pa.nulls(0, field.type))
        if self.deletes and self.key is not None:
            table, rows, tombstones, key_failures = self._with_deletes(batch, table, rows, tombstones)
            failures = sorted(failures + key_failures)
        meta = {
            "ROWTIME": pa.array(batch.timestamps[rows]),
            "ROWKEY": text_keys(batch.keys, rows),
            "ROWPARTITION": pa.array(batch.partitions[rows]),
            "ROWOFFSET": pa.array(batch.offsets[rows]),
        }
        return DecodedBatch(table=table, meta=meta, rows=rows, failures=failures, tombstones=tombstones)

    def _with_deletes(
        self, batch: RecordBatch, table: pa.Table, rows: np.ndarray, tombstones: np.ndarray
    ) -> tuple[pa.Table, np.ndarray, np.ndarray, list[tuple[int, str]]]:
        """The decoded rows and the table's deletes (their key columns, NULL values) in record order, each
        flagged in ``__delete``; tombstones whose key does not decode are failures."""
        assert self.key is not None
        table = table.append_column("__delete", pa.array(np.zeros(table.num_rows, dtype=bool)))
        if not len(tombstones):
            return table, rows, tombstones, []
        keys = self.key.decode([batch.keys[i] for i in tombstones])
        failures = [(int(tombstones[f.index]), f"key: {f.reason}") for f in keys.failures]
        deletes = keys.table
        for f in table.schema:
            if f.name not in deletes.column_names:
                deletes = deletes.append_column(f, pa.nulls(deletes.num_rows, f.type))
        deletes = deletes.set_column(deletes.schema.get_field_index("__delete"), "__delete",
                                     pa.array(np.ones(deletes.num_rows, dtype=bool)))  # fmt: skip
        merged = pa.concat_tables([table, deletes.select(table.column_names)])
        positions = np.concatenate([rows, tombstones[keys.indices]])
        order = np.argsort(positions, kind="stable")
        return merged.take(pa.array(order)), positions[order], np.empty(0, np.int64), failures

    def _with_key_columns(
        self, batch: RecordBatch, table: pa.Table, rows: np.ndarray
    ) -> tuple[pa.Table, np.ndarray, list[tuple[int, str]]]:
        """Append the key columns decoded from the record keys. As in ksqlDB, a stream record without a key has
        NULL key columns, and a table record without one is ignored; an undecodable key is a failure."""
        assert self.key is not None
        keys = [batch.keys[i] for i in rows]
        if self.window_bytes:
            keys = [None if k is None else k[: -self.window_bytes] for k in keys]
        if None in keys:
            where = np.flatnonzero(np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys)))
            decoded = self.key.decode([keys[i] for i in where])
        else:  # every record has a key: the common case, decoded as they are
            where = np.arange(len(keys))
            decoded = self.key.decode(keys)
        failures = [(int(rows[where[f.index]]), f"key: {f.reason}") for f in decoded.failures]
        # each row's position in the decoded keys; -1: no key (NULL columns on a stream), -2: dropped
        position = np.full(len(keys), -1 if self.source.kind == STREAM else -2, dtype=np.int64)
        position[where] = -2
        position[where[decoded.indices]] = np.arange(len(decoded.indices))
        kept = np.flatnonzero(position != -2)
        if len(kept) < len(keys):
            table, rows, position = table.take(pa.array(kept)), rows[kept], position[kept]
        missing = position < 0
        take = pa.array(position, mask=missing) if missing.any() else None
        for name in decoded.table.column_names:
            column = decoded.table.column(name)
            table = table.append_column(name, column.take(take) if take is not None else column)
        return table, rows, failures


@dataclass
class EncodedBatch:
    """Output records of one batch, ready to produce."""

    keys: list[bytes | None]
    values: list[bytes | None]
    timestamps: list[int]


class SinkCodec:
    """Encodes query results for the sink of ``plan``."""

    def __init__(self, plan: QueryPlan, sink: Source, settings: Settings, extra_value_fields: list[pa.Field]) -> None:
        self.plan = plan
        schema = plan.output_schema()
        self.key_columns = [c for c in plan.key_columns if c not in WINDOW_COLUMNS]
        self.windowed = any(c in WINDOW_COLUMNS for c in plan.key_columns)
        window = plan.aggregate.window if plan.aggregate is not None else None
        #: session keys carry the end too (Kafka Streams' session key layout), so a grown session is a new key
        self.session = window is not None and window.kind.upper() == "SESSION"
        value_fields = [schema.field(c) for c in plan.value_columns] + extra_value_fields
        self.value_schema = pa.schema(value_fields)
        self.value = value_format(sink, self.value_schema, settings)
        self.key: Format | None = None
        #: ``KEY_FORMAT='NONE'`` or ``PARTITION BY NULL``: the records have no key
        self.no_key = sink.key_format.upper() == "NONE" or plan.no_key
        #: ``WITH (TIMESTAMP='col')`` on the sink: the column (as the output names it) sets the records' time
        self.timestamp = next((n for n in schema.names if sink.timestamp and n.upper() == sink.timestamp.upper()), None)
        self.timestamp_format = sink.timestamp_format
        if self.key_columns:
            key_schema = pa.schema([schema.field(c) for c in self.key_columns])
            self.key = key_format(sink, key_schema, settings)

    def encode(self, result: BatchResult, input_keys: list[bytes | None], input_rows: np.ndarray) -> EncodedBatch:
        """Values from the value columns; keys from the key columns, else the input record's key."""
        table = result.table
        values: list[bytes | None] = list(self.value.encode(table.select(self.value_schema.names)))
        keys = self._keys(table, input_keys, input_rows, result.indices)
        stamps = result.timestamps
        if self.timestamp is not None:  # the sink's TIMESTAMP column: the records' time, as in ksqlDB
            stamps = pc.coalesce(self._column_times(table.column(self.timestamp)), stamps.cast(pa.int64()))
        timestamps = stamps.to_numpy(zero_copy_only=False).astype(np.int64).tolist()
        return EncodedBatch(keys=keys, values=values, timestamps=timestamps)

    def _column_times(self, column: pa.ChunkedArray) -> pa.Array:
        """Epoch milliseconds of a TIMESTAMP column's values (NULL where there is none or it does not parse)."""
        column = column.combine_chunks()
        if pa.types.is_timestamp(column.type):
            return column.cast(pa.timestamp("ms")).cast(pa.int64())
        if pa.types.is_string(column.type) and self.timestamp_format:
            parsed = pc.strptime(column, format=java_to_strftime(self.timestamp_format), unit="ms", error_is_null=True)
            return parsed.cast(pa.int64())
        return column.cast(pa.int64(), safe=False)

    def tombstones(self, result: BatchResult) -> EncodedBatch:
        """Null-value records for the keys ``result`` deleted (sessions merged away, HAVING no longer true)."""
        table = result.tombstones
        if table.num_rows == 0:
            return EncodedBatch([], [], [])
        keys = self._keys(table, [], np.empty(0, np.int64), np.empty(0, np.int64))
        stamps = result.tombstone_timestamps.to_numpy(zero_copy_only=False).astype(np.int64).tolist()
        return EncodedBatch(keys=keys, values=[None] * table.num_rows, timestamps=stamps)

    def _keys(
        self, table: pa.Table, input_keys: list[bytes | None], input_rows: np.ndarray, out_rows: np.ndarray
    ) -> list[bytes | None]:
        if self.key is None:
            if not len(input_keys) or self.no_key:
                return [None] * table.num_rows
            origin = input_rows[out_rows]
            return [input_keys[i] for i in origin]
        keys = encode_keys(self.key, table.select(self.key_columns))
        if self.windowed:
            starts = pc.cast(table.column("WINDOWSTART"), pa.int64()).to_numpy().astype(">i8").tobytes()
            if self.session:
                ends = pc.cast(table.column("WINDOWEND"), pa.int64()).to_numpy().astype(">i8").tobytes()
                keys = [(k or b"") + ends[8 * i : 8 * i + 8] + starts[8 * i : 8 * i + 8] for i, k in enumerate(keys)]
            else:
                keys = [(k or b"") + starts[8 * i : 8 * i + 8] for i, k in enumerate(keys)]
        return keys
