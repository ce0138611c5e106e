"""Avro records (fastavro), plain binary or in the Confluent wire format with a schema registry.

Plain values are the Avro binary encoding of one record with a known schema: given (a dict, JSON text or an
``.avsc`` path) or derived from the Arrow schema like ksqlDB does (every field a ``["null", T]`` union).
Confluent values are ``0x00``, a 4-byte big-endian schema id and the Avro binary; writer schemas are fetched
from the registry by id (and resolved against the reader schema), and encoding registers the schema under the
subject once. Records are read one by one with fastavro and turned into Arrow column-wise in one call.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from streamml.errors import FormatError
from streamml.formats._arrow import is_list_like
from streamml.formats.avro_schema import (
    arrow_schema_from_avro,
    avro_schema_from_arrow,
    avro_value_schema,
    load_avro_schema,
    parse_avro_schema,
)
from streamml.formats.base import TOMBSTONE_REASON, Decoded, DecodeFailure, Format
from streamml.formats.schema_registry import SchemaRegistryClient, UnknownSchemaError

__all__ = ["AvroFormat", "arrow_schema_from_avro", "avro_schema_from_arrow", "load_avro_schema"]

_MAGIC = 0


class _FixedLayout:
    """Records whose every field is a non-null double, float or boolean have one fixed binary layout.

    Such batches are read and written with one NumPy structured array instead of fastavro per record.
    """

    _VALUE_DTYPES: ClassVar[dict[str, str]] = {"double": "<f8", "float": "<f4", "boolean": "u1"}

    def __init__(self, dtype: np.dtype, tags: dict[str, int], kinds: list[str], header: int) -> None:
        self.dtype = dtype
        self.tags = tags
        self.kinds = kinds
        self.header = header

    @classmethod
    def of(cls, avro: dict[str, Any], header: int) -> _FixedLayout | None:
        if not isinstance(avro, dict) or avro.get("type") != "record" or not avro.get("fields"):
            return None
        fields: list[tuple[str, str]] = [("h", f"S{header}")] if header else []
        tags: dict[str, int] = {}
        kinds: list[str] = []
        for i, f in enumerate(avro["fields"]):
            t = f["type"]
            if isinstance(t, list):
                if len(t) != 2 or "null" not in t:
                    return None
                branch = 1 - t.index("null")
                tags[f"t{i}"] = 2 * branch  # zigzag varint of the branch index
                fields.append((f"t{i}", "u1"))
                t = t[branch]
            if isinstance(t, dict):
                if "logicalType" in t:
                    return None
                t = t.get("type")
            if t not in cls._VALUE_DTYPES:
                return None
            kinds.append(t)
            fields.append((f"v{i}", cls._VALUE_DTYPES[t]))
        return cls(np.dtype(fields), tags, kinds, header)

    def read(self, joined: bytes, header: bytes) -> tuple[list[np.ndarray], np.ndarray]:
        """Columns of the records in ``joined`` and a mask of the records that really have this layout."""
        rec = np.frombuffer(joined, dtype=self.dtype)
        ok = np.ones(len(rec), dtype=bool)
        if self.header:
            ok &= rec["h"] == header
        for name, tag in self.tags.items():
            ok &= rec[name] == tag
        columns = []
        for i, kind in enumerate(self.kinds):
            col = rec[f"v{i}"]
            if kind == "boolean":
                ok &= col <= 1
                col = col.astype(bool)
            columns.append(col)
        return columns, ok

    def write(self, columns: list[np.ndarray], header: bytes) -> list[bytes]:
        n = len(columns[0]) if columns else 0
        rec = np.empty(n, dtype=self.dtype)
        if self.header:
            rec["h"] = header
        for name, tag in self.tags.items():
            rec[name] = tag
        for i, col in enumerate(columns):
            rec[f"v{i}"] = col
        width = self.dtype.itemsize
        fixed = pa.Array.from_buffers(pa.binary(width), n, [None, pa.py_buffer(rec.tobytes())])
        return fixed.to_pylist()


# ---------------------------------------------------------------------- the format


class AvroFormat(Format):
    """Avro records; the Confluent wire format when a registry URL (or client) is given.

    ``avro_schema`` (dict, JSON text or ``.avsc`` path) is the reader/writer schema; without it the schema is
    derived from the Arrow ``schema``, or, with a registry and ``subject``, fetched as the subject's latest.
    ``unwrapped``: the single column of ``schema`` is written as its bare Avro value (``["null", T]``), not
    as a record, as ksqlDB writes a single-column key.
    """

    name = "AVRO"

    def __init__(
        self,
        schema: pa.Schema | None = None,
        *,
        avro_schema: dict[str, Any] | str | Path | None = None,
        schema_registry_url: str | None = None,
        subject: str | None = None,
        registry: SchemaRegistryClient | None = None,
        record_name: str = "Record",
        unwrapped: bool = False,
    ) -> None:
        super().__init__(schema)
        if unwrapped and (schema is None or len(schema) != 1):
            raise FormatError("an unwrapped Avro value holds one column: give a schema with one column")
        #: the name of the single column written unwrapped, else None
        self.unwrapped: str | None = schema.names[0] if unwrapped and schema is not None else None
        if registry is None and schema_registry_url:
            registry = SchemaRegistryClient(schema_registry_url)
        self.registry = registry
        self.subject = subject
        self._lock = threading.Lock()
        self._writer_id: int | None = None
        self._writers: dict[int, Any] = {}
        self._avro: dict[str, Any] | None = None
        self._parsed: Any = None
        self._layout: _FixedLayout | None = None
        if avro_schema is not None:
            self._set_avro(load_avro_schema(avro_schema))
        elif self.unwrapped is not None and schema is not None:
            self._set_avro(avro_value_schema(schema.field(0), record_name))
        elif schema is not None:
            self._set_avro(avro_schema_from_arrow(schema, record_name))
        elif registry is None or subject is None:
            raise FormatError(
                "AVRO needs a schema: give an Arrow schema, an Avro schema, or a schema registry and subject"
            )

    @property
    def avro_schema(self) -> Any:
        """The Avro schema records are read into and written with."""
        self._ensure_schema()
        assert self._avro is not None
        return self._avro

    @property
    def wire_format(self) -> bool:
        """True when values carry the Confluent header (magic byte and schema id)."""
        return self.registry is not None

    def _set_avro(self, avro: Any) -> None:
        parsed = parse_avro_schema(avro)
        if self.schema is None:
            self.schema = arrow_schema_from_avro(avro)
        self._avro = avro
        self._parsed = parsed
        self._layout = _FixedLayout.of(avro, 5 if self.registry is not None else 0)
        if self._layout is not None and [f.type for f in self.schema] != [
            {"double": pa.float64(), "float": pa.float32(), "boolean": pa.bool_()}[k] for k in self._layout.kinds
        ]:
            self._layout = None

    def _ensure_schema(self) -> None:
        with self._lock:
            if self._avro is not None:
                return
            assert self.registry is not None and self.subject is not None
            schema_id, avro = self.registry.latest(self.subject)
            self._set_avro(avro)
            self._writers[schema_id] = self._parsed

    # ------------------------------------------------------------------ decode

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Read each record with fastavro; build the Arrow table column-wise in one call.

        Flat records of doubles, floats and booleans without nulls are read with one NumPy view instead.
        """
        self._ensure_schema()
        layout = self._layout
        if layout is None or not values:
            return self._decode_records(values)
        header = self._header_for_fast_path()
        if header is None:
            return self._decode_records(values)
        width = layout.dtype.itemsize
        lens = np.fromiter((-1 if v is None else len(v) for v in values), dtype=np.int64, count=len(values))
        candidates = np.flatnonzero(lens == width)
        if len(candidates) == 0:
            return self._decode_records(values)
        joined = b"".join([values[i] for i in candidates.tolist()])  # type: ignore[misc]
        columns, ok = layout.read(joined, header)
        fast_idx = candidates[ok]
        assert self.schema is not None
        fast = pa.Table.from_arrays([pa.array(c[ok]) for c in columns], schema=self.schema)
        if len(fast_idx) == len(values):
            return Decoded(table=fast, indices=fast_idx)
        rest = np.ones(len(values), dtype=bool)
        rest[fast_idx] = False
        rest_idx = np.flatnonzero(rest)
        slow = self._decode_records([values[i] for i in rest_idx.tolist()])
        slow_idx = rest_idx[slow.indices]
        failures = [DecodeFailure(int(rest_idx[f.index]), f.reason) for f in slow.failures]
        indices = np.concatenate([fast_idx, slow_idx])
        order = np.argsort(indices, kind="stable")
        table = pa.concat_tables([fast, slow.table]).take(order)
        return Decoded(table=table, indices=indices[order], failures=failures)

    def _header_for_fast_path(self) -> bytes | None:
        """The Confluent header our own schema id gives (wire format), b"" (plain), None (unknown yet)."""
        if not self.wire_format:
            return b""
        with self._lock:
            ids = [i for i, p in self._writers.items() if p is self._parsed]
        return bytes([_MAGIC]) + ids[0].to_bytes(4, "big") if ids else None

    def _decode_records(self, values: Sequence[bytes | None]) -> Decoded:
        failures: list[DecodeFailure] = []
        records: list[Any] = []
        kept: list[int] = []
        reader = self._parsed
        wire = self.wire_format
        unknown: dict[int, str] = {}
        for i, value in enumerate(values):
            if value is None:
                failures.append(DecodeFailure(i, TOMBSTONE_REASON))
                continue
            stream = io.BytesIO(value)
            try:
                if wire:
                    if len(value) < 5 or value[0] != _MAGIC:
                        raise _BadRecord(_wire_problem(value))
                    schema_id = int.from_bytes(value[1:5], "big")
                    if schema_id in unknown:
                        raise _BadRecord(unknown[schema_id])
                    try:
                        writer = self._writer(schema_id)
                    except UnknownSchemaError:
                        unknown[schema_id] = f"unknown schema id {schema_id} (registry {self.registry.url})"  # type: ignore[union-attr]
                        raise _BadRecord(unknown[schema_id]) from None
                    stream.seek(5)
                    record = fastavro.schemaless_reader(stream, writer, None if writer is reader else reader)
                else:
                    record = fastavro.schemaless_reader(stream, reader, None)
                if self.unwrapped is not None:
                    record = {self.unwrapped: record}
                extra = len(value) - stream.tell()
                if extra:
                    raise _BadRecord(f"{extra} unread bytes after the Avro record")
            except _BadRecord as exc:
                failures.append(DecodeFailure(i, str(exc)))
                continue
            except FormatError:
                raise
            except Exception as exc:
                failures.append(DecodeFailure(i, _read_problem(exc, stream.tell() >= len(value))))
                continue
            records.append(record)
            kept.append(i)
        table, bad = self._to_arrow(records)
        if bad:
            failures.extend(DecodeFailure(kept[k], reason) for k, reason in bad.items())
            kept = [p for k, p in enumerate(kept) if k not in bad]
        failures.sort(key=lambda f: f.index)
        return Decoded(table=table, indices=np.asarray(kept, dtype=np.int64), failures=failures)

    def _writer(self, schema_id: int) -> Any:
        with self._lock:
            parsed = self._writers.get(schema_id)
        if parsed is not None:
            return parsed
        assert self.registry is not None
        avro = self.registry.get_schema(schema_id)
        parsed = self._parsed if avro == self._avro else parse_avro_schema(avro)
        with self._lock:
            self._writers[schema_id] = parsed
        return parsed

    def _to_arrow(self, records: list[Any]) -> tuple[pa.Table, dict[int, str]]:
        """Records to a table in one conversion; on a conversion error, find the culprits one by one."""
        assert self.schema is not None
        row_type = pa.struct(list(self.schema))
        try:
            array = pa.array(records, type=row_type)
            return pa.Table.from_struct_array(array), {}
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
        bad: dict[int, str] = {}
        good = []
        for k, record in enumerate(records):
            try:
                pa.array([record], type=row_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
                bad[k] = f"record does not fit the schema: {exc}"
                continue
            good.append(record)
        return pa.Table.from_struct_array(pa.array(good, type=row_type)), bad

    # ------------------------------------------------------------------ encode

    def encode(self, table: pa.Table) -> list[bytes]:
        """Write each row with fastavro (prefixed with the Confluent header in the wire format)."""
        self._ensure_schema()
        assert self.schema is not None
        if table.num_rows == 0:
            return []
        header = b""
        if self.wire_format:
            header = bytes([_MAGIC]) + self._register().to_bytes(4, "big")
        lookup = {n.lower(): n for n in table.column_names}
        if self.unwrapped is not None:
            return self._encode_records(table, [self.unwrapped], lookup, header)
        names = [f["name"] for f in self.avro_schema["fields"]]
        if self._layout is not None and all(n.lower() in lookup for n in names):
            table = table.select([lookup[n.lower()] for n in names]).rename_columns(names)
            return self._encode_fixed(table, header)
        return self._encode_records(table, names, lookup, header)

    def _encode_fixed(self, table: pa.Table, header: bytes) -> list[bytes]:
        """Rows without nulls in one NumPy pass; rows with a null through fastavro."""
        assert self._layout is not None and self.schema is not None
        table = table.cast(self.schema)
        complete: np.ndarray | None = None
        for column in table.columns:
            if column.null_count:
                valid = column.is_valid().to_numpy(zero_copy_only=False)
                complete = valid if complete is None else complete & valid
        if complete is None:
            return self._layout.write([c.to_numpy() for c in table.columns], header)
        fast_idx = np.flatnonzero(complete)
        slow_idx = np.flatnonzero(~complete)
        fast_rows = table.take(fast_idx)
        fast = self._layout.write([c.to_numpy() for c in fast_rows.columns], header)
        names = table.column_names
        slow = self._encode_records(table.take(slow_idx), names, {n.lower(): n for n in names}, header)
        out = np.empty(table.num_rows, dtype=object)
        out[fast_idx] = fast
        out[slow_idx] = slow
        return out.tolist()

    def _encode_records(self, table: pa.Table, names: list[str], lookup: dict[str, str], header: bytes) -> list[bytes]:
        columns = []
        for name in names:
            actual = lookup.get(name.lower())
            if actual is None:
                columns.append([None] * table.num_rows)
                continue
            column = table.column(actual)
            columns.append(_python_column(column))
        parsed = self._parsed
        out: list[bytes] = []
        stream = io.BytesIO()
        write = fastavro.schemaless_writer
        for row, values in enumerate(zip(*columns, strict=True)):
            stream.seek(0)
            stream.truncate()
            stream.write(header)
            try:
                write(
                    stream, parsed, values[0] if self.unwrapped is not None else dict(zip(names, values, strict=True))
                )
            except Exception as exc:
                raise FormatError(f"cannot encode row {row} as Avro: {exc}") from exc
            out.append(stream.getvalue())
        return out

    def _register(self) -> int:
        with self._lock:
            if self._writer_id is not None:
                return self._writer_id
        if self.subject is None:
            raise FormatError(
                "AVRO with a schema registry needs a subject to register the schema under",
                hint="pass subject='<topic>-value'",
            )
        assert self.registry is not None
        schema_id = self.registry.register(self.subject, self.avro_schema)
        with self._lock:
            self._writer_id = schema_id
            self._writers.setdefault(schema_id, self._parsed)
        return schema_id


class _BadRecord(Exception):
    """A record-level problem with a ready reason."""


def _wire_problem(value: bytes) -> str:
    if not value:
        return "empty value: expected the Confluent wire format (magic byte 0, schema id, Avro)"
    if value[0] != _MAGIC:
        return f"unknown magic byte 0x{value[0]:02x}: expected 0x00 (Confluent wire format)"
    return f"truncated Confluent header: {len(value)} bytes, expected at least 5"


def _read_problem(exc: Exception, at_end: bool) -> str:
    if isinstance(exc, EOFError | StopIteration | struct.error) or (at_end and isinstance(exc, IndexError)):
        detail = str(exc).strip()
        if detail.startswith("Expected -"):
            return "invalid Avro record: negative length"
        return "truncated Avro record"
    if isinstance(exc, IndexError):
        return "invalid Avro record: union branch or enum symbol out of range"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid Avro record: string is not UTF-8 ({exc.reason} at byte {exc.start})"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"invalid Avro record: {text[:300]}"


def _python_column(column: pa.ChunkedArray) -> list[Any]:
    """Column values as fastavro takes them: temporal types as numbers, maps as dicts."""
    t = column.type
    if _has_temporal(t):
        column = column.cast(_numeric_temporal(t))
        t = column.type
    values = column.to_pylist()
    if _has_map(t):
        values = [_maps_to_dicts(v, t) for v in values]
    return values


def _has_temporal(t: pa.DataType) -> bool:
    if pat.is_struct(t):
        return any(_has_temporal(f.type) for f in t)
    if is_list_like(t):
        return _has_temporal(t.value_type)
    if pat.is_map(t):
        return _has_temporal(t.item_type)
    return pat.is_temporal(t)


def _numeric_temporal(t: pa.DataType) -> pa.DataType:
    if pat.is_struct(t):
        return pa.struct([pa.field(f.name, _numeric_temporal(f.type)) for f in t])
    if is_list_like(t):
        return pa.list_(_numeric_temporal(t.value_type))
    if pat.is_map(t):
        return pa.map_(t.key_type, _numeric_temporal(t.item_type))
    if pat.is_date32(t) or pat.is_time32(t):
        return pa.int32()
    if pat.is_temporal(t):
        return pa.int64()
    return t


def _has_map(t: pa.DataType) -> bool:
    if pat.is_map(t):
        return True
    if pat.is_struct(t):
        return any(_has_map(f.type) for f in t)
    if is_list_like(t):
        return _has_map(t.value_type)
    return False


def _maps_to_dicts(value: Any, t: pa.DataType) -> Any:
    if value is None:
        return None
    if pat.is_map(t):
        return {k: _maps_to_dicts(v, t.item_type) for k, v in value}
    if pat.is_struct(t):
        return {f.name: _maps_to_dicts(value[f.name], f.type) for f in t}
    if is_list_like(t):
        return [_maps_to_dicts(v, t.value_type) for v in value]
    return value
