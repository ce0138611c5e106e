"""ksqlDB's JSON format: one JSON object per record, decoded a whole batch at a time into Arrow.

Decoding joins a batch with newlines and hands it to Polars' line-delimited JSON reader with the stream's
schema (one vectorised, strict parse); records that would confuse a line-delimited reader (pretty-printed,
padded, not an object) are checked with orjson first. A batch that fails is bisected, so only the bad records
are set aside, each with the reason. Field names match case-insensitively, as in ksqlDB: the spelling is
learned from the first record of a batch. As in ksqlDB, a VARCHAR field takes any JSON value, as its text.
Types JSON has no literal for follow ksqlDB: TIMESTAMP/TIME/DATE are numbers (epoch units of the Arrow type,
days for DATE), BYTES are base64 strings, NaN and infinities are the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (as Jackson writes them), read back as numbers. Encoding runs DuckDB's ``to_json`` over the
Arrow table (no Python object per field), or orjson row by row for small batches and for the rare rows that
hold a NaN or an infinity.
"""

from __future__ import annotations

import base64
import decimal
import math
import re
import threading
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.types as pat
from polars.exceptions import PanicException

from streamml.errors import FormatError
from streamml.formats._arrow import (
    casefold_duplicates,
    is_list_like,
    rebuild_list,
    rebuild_struct,
    struct_children,
)
from streamml.formats.base import Decoded, Format, decode_isolating, describe_value

__all__ = ["JsonFormat"]

_MAX_BLOCK = 1 << 20
_SAMPLE_RECORDS = 16
#: batches smaller than this are encoded row by row with orjson when that writes the values DuckDB would
_ROWWISE_BELOW = 1024
_LBRACE, _RBRACE = 0x7B, 0x7D
#: integer types the JSON reader has no column for: read as INT32, then narrowed with a range check
_NARROW_INTEGERS = frozenset({pa.int8(), pa.int16(), pa.uint8(), pa.uint16()})
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


class JsonFormat(Format):
    """JSON objects, one per record; see the module docstring for type mapping.

    Without a schema, column types are inferred per batch and names are kept as written.
    """

    name = "JSON"

    def __init__(self, schema: pa.Schema | None = None) -> None:
        super().__init__(schema)
        if schema is not None:
            dups = casefold_duplicates(schema.names)
            if dups:
                raise FormatError(f"JSON schema has columns that differ only in case: {', '.join(dups)}")
            self._vectorised = all(_readable(f.type) for f in schema)
        else:
            self._vectorised = True
        self._plans: dict[tuple[Any, ...], tuple[pa.Schema, pl.Schema]] = {}
        self._lock = threading.Lock()
        self._duck: duckdb.DuckDBPyConnection | None = None

    # ------------------------------------------------------------------ decode

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Decode JSON objects; bad records become failures, never exceptions."""
        if None in values:
            positions = [i for i, v in enumerate(values) if v is not None]
            present: list[bytes] = [values[i] for i in positions]  # type: ignore[misc]
        else:
            positions = list(range(len(values)))
            present = values if isinstance(values, list) else [v for v in values if v is not None]
        if not present:
            return decode_isolating(values, self._decode_all, self.schema)
        joined = b"\n".join(present)
        lens = np.fromiter(map(len, present), dtype=np.int64, count=len(present))
        max_len = int(lens.max())
        suspects = _suspects(lens, joined)
        rejected: dict[int, str] = {}
        work: Sequence[bytes | None] = values
        reuse: object = None
        if len(suspects):
            fixed = list(values)
            for k in suspects.tolist():
                pos = positions[k]
                value = present[k]
                try:
                    obj = orjson.loads(value)
                except orjson.JSONDecodeError as exc:
                    rejected[pos] = f"invalid JSON at byte {exc.pos}: {exc.msg}"
                    continue
                if not isinstance(obj, dict):
                    rejected[pos] = f"expected a JSON object, got {_kind(obj)}"
                    continue
                fixed[pos] = value.replace(b"\n", b" ").replace(b"\r", b" ").strip()
            work = fixed
        elif len(positions) == len(values):
            reuse = work
        sample = self._sample(work, rejected)

        def decode_all(chunk: Sequence[bytes]) -> pa.Table:
            buf = joined if chunk is reuse else b"\n".join(chunk)
            return self._decode_all(chunk, buf, max_len, sample)

        return decode_isolating(work, decode_all, self.schema, explain=self._explain, rejected=rejected)

    def _sample(self, values: Sequence[bytes | None], rejected: dict[int, str]) -> dict[str, Any] | None:
        """Keys (and nested values) of the first records of a batch: they give the spelling of field names.

        The first record decides; later ones (at most ``_SAMPLE_RECORDS``) only fill in fields it lacks
        or holds null for.
        """
        if self.schema is None:
            return None
        wanted = {name.lower() for name in self.schema.names}
        merged: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        tries = 0
        for i, v in enumerate(values):
            if v is None or i in rejected:
                continue
            tries += 1
            if tries > _SAMPLE_RECORDS:
                break
            try:
                obj = orjson.loads(v)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            for key, value in obj.items():
                low = key.lower()
                if low not in wanted:
                    continue
                known = spelled.get(low)
                if known is None:
                    spelled[low] = key
                    merged[key] = value
                elif merged[known] is None and value is not None:
                    del merged[known]
                    spelled[low] = key
                    merged[key] = value
            if len(spelled) == len(wanted) and all(v is not None for v in merged.values()):
                break
        return merged or None

    def _decode_all(
        self,
        chunk: Sequence[bytes],
        buf: bytes | None = None,
        max_len: int = 0,
        sample: dict[str, Any] | None = None,
    ) -> pa.Table:
        if not chunk:
            return self.schema.empty_table() if self.schema is not None else pa.table({})
        if buf is None:
            buf = b"\n".join(chunk)
            max_len = max(map(len, chunk))
        if not self._vectorised or (len(chunk) > 1 and _numbers_as_text(sample, self.schema)):
            # numbers written as text: the reader would reject every record and bisect down to each one
            return self._decode_python(chunk)
        if self.schema is None:
            block = max(min(len(buf) // 2 + 1, _MAX_BLOCK), max_len + 2, 4096)
            read_options = pajson.ReadOptions(use_threads=True, block_size=block)
            table = pajson.read_json(pa.BufferReader(buf), read_options=read_options)
            table.validate(full=True)
            return table
        read_schema, frame_schema = self._read_schema(sample)
        try:
            table = pl.read_ndjson(buf, schema=frame_schema).to_arrow()
        except PanicException as exc:  # a reader bug must cost the batch a bisection, never the worker
            if len(chunk) == 1:
                return self._decode_python(chunk)
            raise ValueError(f"JSON reader failed: {exc}") from None
        except Exception:
            if len(chunk) == 1:  # isolated: convert as ksqlDB does ("2" for an INT), or say why not
                return self._decode_python(chunk)
            raise
        columns = []
        for read, read_field, field in zip(table.columns, read_schema, self.schema, strict=True):
            # Polars hands out large strings and lists
            col = read if read.type == read_field.type else read.cast(read_field.type)
            columns.append(pa.chunked_array([_restore(c, field.type) for c in col.chunks], field.type))
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _read_schema(self, sample: dict[str, Any] | None) -> tuple[pa.Schema, pl.Schema]:
        """The schema to read with: JSON-native types, key spelling as in ``sample``; in Arrow and in Polars."""
        assert self.schema is not None
        key = _spelling_key(sample, pa.struct(list(self.schema)))
        with self._lock:
            cached = self._plans.get(key)
        if cached is not None:
            return cached
        read_type = _read_type(pa.struct(list(self.schema)), sample)
        schema = pa.schema(list(read_type))
        plan = (schema, pl.Schema({f.name: _polars_type(f.type) for f in schema}))
        with self._lock:
            if len(self._plans) > 64:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _decode_python(self, chunk: Sequence[bytes]) -> pa.Table:
        """Per-record fallback for schemas the vectorised reader cannot read (maps)."""
        assert self.schema is not None
        rows = []
        for value in chunk:
            obj = orjson.loads(value)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {_kind(obj)}")
            lowered = {k.lower(): v for k, v in obj.items()}
            row = []
            for field in self.schema:
                v = lowered.get(field.name.lower())
                problem = _mismatch(v, field.type)
                if problem:
                    raise ValueError(f"field '{field.name}': {problem}")
                row.append(_to_python(v, field.type))
            rows.append(row)
        columns = [pa.array([r[i] for r in rows], type=f.type) for i, f in enumerate(self.schema)]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _explain(self, value: bytes, default: str) -> str:
        problem = object_problem(value)
        if problem is not None:
            return problem
        obj = orjson.loads(value)
        if self.schema is not None:
            lowered = {k.lower(): v for k, v in obj.items()}
            for field in self.schema:
                problem = _mismatch(lowered.get(field.name.lower()), field.type)
                if problem:
                    return f"field '{field.name}': {problem}"
        return default

    # ------------------------------------------------------------------ encode

    def encode(self, table: pa.Table) -> list[bytes]:
        """Encode each row as one JSON object (NaN and infinities as ksqlDB writes them: ``"NaN"``, ...)."""
        if table.num_rows == 0:
            return []
        if table.num_columns == 0:
            return [b"{}"] * table.num_rows
        prepared = pa.Table.from_arrays([_jsonable_chunked(col) for col in table.columns], names=table.column_names)
        special = _nonfinite_rows(prepared)
        if special is not None:
            return self._encode_with_nonfinite(prepared, special)
        return self._encode_prepared(prepared)

    def _encode_with_nonfinite(self, prepared: pa.Table, special: np.ndarray) -> list[bytes]:
        """Rows holding a NaN or an infinity through Python (their floats as Jackson's strings), the rest as usual."""
        out = np.empty(prepared.num_rows, dtype=object)
        rows = np.flatnonzero(special)
        out[rows] = _encode_python(prepared.take(rows), nonfinite=True)
        rest = np.flatnonzero(~special)
        if len(rest):
            out[rest] = self._encode_prepared(prepared.take(rest))
        return out.tolist()

    def _encode_prepared(self, prepared: pa.Table) -> list[bytes]:
        if casefold_duplicates(prepared.column_names) or any(pat.is_decimal256(f.type) for f in prepared.schema):
            return _encode_python(prepared)
        if prepared.num_rows < _ROWWISE_BELOW and all(_rowwise_same(f.type) for f in prepared.schema):
            return _encode_python(prepared)  # a small batch: orjson beats the fixed cost of a DuckDB query
        cursor = self._connection().cursor()
        try:
            cursor.register("__streamml_rows", prepared)
            result = cursor.sql("SELECT to_json(__streamml_rows) FROM __streamml_rows").to_arrow_table()
        finally:
            cursor.close()
        return pc.cast(result.column(0), pa.binary()).to_pylist()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._duck is None:
                self._duck = duckdb.connect(":memory:")
            return self._duck


# ---------------------------------------------------------------------- decode helpers


def _suspects(lens: np.ndarray, joined: bytes) -> np.ndarray:
    """Positions of values a line-delimited reader could misread: not ``{...}`` or holding a line break.

    ``joined`` is the values joined with newlines, ``lens`` their lengths.
    """
    n = len(lens)
    ends = np.cumsum(lens + 1) - 1  # position of the separator after each value
    starts = ends - lens
    buf = np.frombuffer(joined, dtype=np.uint8)
    bad = lens == 0
    ok = ~bad
    first = np.zeros(n, dtype=np.uint8)
    last = np.zeros(n, dtype=np.uint8)
    first[ok] = buf[starts[ok]]
    last[ok] = buf[ends[ok] - 1]
    bad |= (first != _LBRACE) | (last != _RBRACE)
    if joined.count(b"\n") != n - 1 or b"\r" in joined:  # some value holds a line break (rare)
        breaks = np.flatnonzero((buf == 0x0A) | (buf == 0x0D))
        owner = np.minimum(np.searchsorted(ends, breaks), n - 1)
        inside = breaks != ends[owner]
        bad[owner[inside]] = True
    return np.flatnonzero(bad)


def _readable(t: pa.DataType) -> bool:
    """Whether the vectorised reader can read a field of this type (maps it cannot)."""
    if pat.is_map(t):
        return False
    if pat.is_struct(t):
        return all(_readable(f.type) for f in t)
    if is_list_like(t):
        return _readable(t.value_type)
    if pat.is_dictionary(t):
        return _readable(t.value_type)
    return not pat.is_decimal256(t) and not pat.is_float16(t)


def _read_type(t: pa.DataType, sample: Any) -> pa.DataType:
    """The type the reader reads for ``t`` (one it supports; :func:`_restore` casts it to ``t``, checking ranges);
    struct field names spelled as in ``sample``."""
    if pat.is_struct(t):
        lookup = {k.lower(): k for k in sample} if isinstance(sample, dict) else {}
        fields = []
        for f in t:
            actual = lookup.get(f.name.lower(), f.name)
            sub = sample.get(actual) if isinstance(sample, dict) else None
            fields.append(pa.field(actual, _read_type(f.type, sub), nullable=True))
        return pa.struct(fields)
    if is_list_like(t):
        first = sample[0] if isinstance(sample, list) and sample else None
        return pa.list_(_read_type(t.value_type, first))
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t) or pat.is_time64(t):
        return pa.int64()
    if pat.is_time32(t) or pat.is_date32(t) or t in _NARROW_INTEGERS:
        return pa.int32()
    if pat.is_uint32(t):
        return pa.int64()
    if pat.is_binary(t) or pat.is_large_binary(t) or pat.is_fixed_size_binary(t) or pat.is_decimal(t):
        return pa.string()  # decimals as their text, so no digit is lost on the way
    if pat.is_dictionary(t):
        return _read_type(t.value_type, sample)
    return t


def _spelling_key(sample: Any, t: pa.DataType) -> tuple[Any, ...]:
    """What of ``sample``'s key spelling matters to the read schema of ``t`` (a cache key)."""
    if pat.is_struct(t):
        if not isinstance(sample, dict):
            return ()
        lookup = {k.lower(): k for k in sample}
        out: list[Any] = []
        for f in t:
            actual = lookup.get(f.name.lower())
            out.append(actual)
            if actual is not None and (pat.is_struct(f.type) or is_list_like(f.type)):
                out.append(_spelling_key(sample[actual], f.type))
        return tuple(out)
    if is_list_like(t):
        first = sample[0] if isinstance(sample, list) and sample else None
        return (_spelling_key(first, t.value_type),)
    return ()


def _polars_type(t: pa.DataType) -> pl.DataType:
    """The Polars type that reads JSON values as Arrow type ``t``."""
    return pl.Series(pa.array([], t)).dtype


def _restore(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Turn an array as the JSON reader produced it into ``target`` (names, epoch numbers, base64)."""
    if arr.type == target:
        return arr
    if pat.is_struct(target):
        children = [_restore(c, f.type) for c, f in zip(struct_children(arr), target, strict=True)]
        return rebuild_struct(arr, children, target)
    if is_list_like(target):
        values = _restore(arr.values, target.value_type)
        if pat.is_fixed_size_list(target):
            as_list = rebuild_list(arr, values, pa.list_(pa.field("item", target.value_type)))
            return as_list.cast(target)
        return rebuild_list(arr, values, target)
    if pat.is_binary(target) or pat.is_large_binary(target) or pat.is_fixed_size_binary(target):
        decoded = [None if s is None else base64.b64decode(s, validate=True) for s in arr.to_pylist()]
        return pa.array(decoded, type=target)
    if pat.is_dictionary(target):
        return _restore(arr, target.value_type).dictionary_encode().cast(target)
    return arr.cast(target)


_KINDS: dict[type, str] = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number"}


def object_problem(value: bytes) -> str | None:
    """Why ``value`` is not one JSON object (``invalid JSON at byte 3: ...``), or None when it is one."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON at byte {exc.pos}: {exc.msg}"
    return None if isinstance(obj, dict) else f"expected a JSON object, got {_kind(obj)}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return _KINDS.get(type(value), "number")


def _mismatch(value: Any, t: pa.DataType) -> str | None:
    """Why ``value`` (parsed JSON) cannot be read as ``t``, or None when it can."""
    if value is None:
        return None
    got = f"got {_kind(value)} {describe_value(value) if not isinstance(value, dict | list) else ''}".rstrip()
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(value, str) and (converted := _from_text(value, t)) is not None:
        value = converted  # a number or boolean as text, converted as ksqlDB converts it
        is_number = not isinstance(value, bool)
    if pat.is_floating(t) or pat.is_decimal(t):
        ok = is_number
    elif pat.is_integer(t) or pat.is_temporal(t):
        ok = is_number and isinstance(value, int)
        if ok and pat.is_integer(t):
            info = np.iinfo(t.to_pandas_dtype())
            if not info.min <= value <= info.max:
                return f"expected {t}, got {value} (out of range)"
    elif pat.is_boolean(t):
        ok = isinstance(value, bool)
    elif pat.is_string(t) or pat.is_large_string(t):
        ok = True  # any JSON value reads as its text
    elif pat.is_binary(t) or pat.is_large_binary(t) or pat.is_fixed_size_binary(t):
        if not isinstance(value, str):
            return f"expected base64 bytes, {got}"
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            return f"expected base64 bytes, {got}"
        return None
    elif pat.is_struct(t):
        if not isinstance(value, dict):
            return f"expected an object, {got}"
        lowered = {k.lower(): v for k, v in value.items()}
        for f in t:
            problem = _mismatch(lowered.get(f.name.lower()), f.type)
            if problem:
                return f"in '{f.name}': {problem}"
        return None
    elif is_list_like(t) or pat.is_map(t):
        want = list if is_list_like(t) else dict
        if not isinstance(value, want):
            return f"expected {'an array' if want is list else 'an object'}, {got}"
        items = value if isinstance(value, list) else list(value.values())
        item_type = t.item_type if pat.is_map(t) else t.value_type
        for i, item in enumerate(items):
            problem = _mismatch(item, item_type)
            if problem:
                return f"item {i}: {problem}"
        return None
    elif pat.is_dictionary(t):
        return _mismatch(value, t.value_type)
    else:
        return None
    return None if ok else f"expected {t}, {got}"


def _to_python(value: Any, t: pa.DataType) -> Any:
    """Adapt a parsed JSON value to what ``pa.array`` accepts for ``t`` (base64 bytes, map items)."""
    if value is None:
        return None
    if pat.is_binary(t) or pat.is_large_binary(t) or pat.is_fixed_size_binary(t):
        return base64.b64decode(value, validate=True)
    if (pat.is_string(t) or pat.is_large_string(t)) and not isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, str) and (converted := _from_text(value, t)) is not None:
        return converted
    if pat.is_map(t):
        return [(k, _to_python(v, t.item_type)) for k, v in value.items()]
    if pat.is_struct(t):
        lowered = {k.lower(): v for k, v in value.items()}
        return {f.name: _to_python(lowered.get(f.name.lower()), f.type) for f in t}
    if is_list_like(t):
        return [_to_python(v, t.value_type) for v in value]
    return value


def _numbers_as_text(sample: dict[str, Any] | None, schema: pa.Schema | None) -> bool:
    """Whether the batch's sample holds a number or boolean column's value as text."""
    if not sample or schema is None:
        return False
    types = {f.name.lower(): f.type for f in schema}
    return any(
        isinstance(v, str) and not pat.is_string(t := types[k.lower()]) and _from_text(v, t) is not None
        for k, v in sample.items()
        if k.lower() in types
    )


def _from_text(text: str, t: pa.DataType) -> Any:
    """A number or boolean column's value written as text (``"2"``, ``"1.5"``, ``"true"``), or None."""
    if pat.is_integer(t) and _INTEGER_TEXT.fullmatch(text):
        return int(text)
    if pat.is_floating(t) or pat.is_decimal(t):
        try:
            return float(text) if pat.is_floating(t) else decimal.Decimal(text.strip())
        except (ValueError, decimal.InvalidOperation):
            return None
    if pat.is_boolean(t) and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return None


# ---------------------------------------------------------------------- encode helpers


def _jsonable_chunked(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if not _needs_prep(col.type):
        return col
    chunks = [_jsonable(c) for c in col.chunks]
    out_type = chunks[0].type if chunks else _jsonable(pa.array([], col.type)).type
    return pa.chunked_array(chunks, out_type)


def _needs_prep(t: pa.DataType) -> bool:
    if pat.is_struct(t):
        return any(_needs_prep(f.type) for f in t)
    if is_list_like(t):
        return _needs_prep(t.value_type)
    if pat.is_map(t):
        return _needs_prep(t.key_type) or _needs_prep(t.item_type)
    return (
        pat.is_floating(t)
        or pat.is_temporal(t)
        or pat.is_binary(t)
        or pat.is_large_binary(t)
        or pat.is_fixed_size_binary(t)
        or pat.is_dictionary(t)
    )


def _jsonable(arr: pa.Array) -> pa.Array:
    """Rewrite an array so DuckDB's ``to_json`` writes what ksqlDB's JSON format expects."""
    t = arr.type
    if not _needs_prep(t):
        return arr
    if pat.is_dictionary(t):
        return _jsonable(arr.dictionary_decode())
    if pat.is_float16(t):
        return arr.cast(pa.float32())
    if pat.is_floating(t):
        return arr
    if pat.is_date32(t) or pat.is_time32(t):
        return arr.cast(pa.int32())
    if pat.is_temporal(t):
        return arr.cast(pa.int64())
    if pat.is_binary(t) or pat.is_large_binary(t) or pat.is_fixed_size_binary(t):
        return pa.array(
            [None if b is None else base64.b64encode(b).decode("ascii") for b in arr.to_pylist()],
            type=pa.string(),
        )
    if pat.is_struct(t):
        children = [_jsonable(c) for c in struct_children(arr)]
        fields = [pa.field(f.name, c.type) for f, c in zip(t, children, strict=True)]
        return rebuild_struct(arr, children, pa.struct(fields))
    if pat.is_map(t):
        keys = _jsonable(arr.keys)
        items = _jsonable(arr.items)
        mask = arr.is_null() if arr.null_count else None
        return pa.MapArray.from_arrays(arr.offsets, keys, items, mask=mask)
    # list-like
    values = _jsonable(arr.values)
    if pat.is_fixed_size_list(t):
        target: pa.DataType = pa.list_(values.type, t.list_size)
    elif pat.is_large_list(t):
        target = pa.large_list(values.type)
    else:
        target = pa.list_(values.type)
    return rebuild_list(arr, values, target)


def _rowwise_same(t: pa.DataType) -> bool:
    """Whether orjson writes the values of ``t`` (as prepared for encoding) as DuckDB's ``to_json`` does.

    Only the spelling of some numbers differs (``1e+20`` against ``100000000000000000000.0``), never a value.
    """
    if pat.is_struct(t):
        return all(_rowwise_same(f.type) for f in t)
    if pat.is_list(t) or pat.is_large_list(t):
        return _rowwise_same(t.value_type)
    return (
        pat.is_integer(t)
        or pat.is_float64(t)
        or pat.is_boolean(t)
        or pat.is_string(t)
        or pat.is_large_string(t)
        or pat.is_null(t)
    )


def _encode_python(table: pa.Table, *, nonfinite: bool = False) -> list[bytes]:
    """Row-wise fallback for tables DuckDB cannot take as is (names equal but for case, 256-bit decimals), and,
    with ``nonfinite``, for rows holding NaN or infinities (written as Jackson's strings)."""
    names = table.column_names
    columns = [col.to_pylist() for col in table.columns]
    if nonfinite:
        columns = [
            [_special_floats(v, col.type) for v in values] for col, values in zip(table.columns, columns, strict=True)
        ]
    return [orjson.dumps(dict(zip(names, row, strict=True)), default=str) for row in zip(*columns, strict=True)]


_NONFINITE_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _nonfinite_rows(table: pa.Table) -> np.ndarray | None:
    """Which rows hold a NaN or an infinity anywhere (None when none does: the usual case, checked vectorised)."""
    rows: np.ndarray | None = None
    for column in table.columns:
        if not _has_floats(column.type):
            continue
        if pat.is_floating(column.type):
            finite = pc.fill_null(pc.is_finite(column), True)
            if pc.all(finite).as_py():
                continue
            bad = ~finite.to_numpy(zero_copy_only=False)
        elif _nested_nonfinite(column):
            bad = np.ones(table.num_rows, dtype=bool)  # rare: the whole batch takes the row-wise path
        else:
            continue
        rows = bad if rows is None else rows | bad
    return rows


def _has_floats(t: pa.DataType) -> bool:
    if pat.is_struct(t):
        return any(_has_floats(f.type) for f in t)
    if is_list_like(t):
        return _has_floats(t.value_type)
    if pat.is_map(t):
        return _has_floats(t.item_type)
    return pat.is_floating(t)


def _nested_nonfinite(column: pa.ChunkedArray) -> bool:
    def leaves(arr: pa.Array) -> list[pa.Array]:
        t = arr.type
        if pat.is_struct(t):
            return [leaf for child in struct_children(arr) for leaf in leaves(child)]
        if is_list_like(t):
            return leaves(arr.flatten())
        if pat.is_map(t):
            return leaves(arr.items)
        return [arr] if pat.is_floating(t) else []

    return any(
        pc.any(pc.invert(pc.fill_null(pc.is_finite(leaf), True))).as_py()
        for chunk in column.chunks
        for leaf in leaves(chunk)
    )


def _special_floats(value: Any, t: pa.DataType) -> Any:
    """A Python value of type ``t`` with NaN and infinities as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if value is None:
        return None
    if pat.is_floating(t):
        return value if math.isfinite(value) else _NONFINITE_TEXT[str(value)]
    if pat.is_struct(t):
        return {f.name: _special_floats(value[f.name], f.type) for f in t}
    if pat.is_map(t):
        return {str(k): _special_floats(v, t.item_type) for k, v in value}
    if is_list_like(t):
        return [_special_floats(v, t.value_type) for v in value]
    return value
