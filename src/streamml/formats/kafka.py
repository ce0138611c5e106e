"""ksqlDB's KAFKA format: a single primitive column in Kafka's own serialization.

INT is a 4-byte and BIGINT an 8-byte big-endian signed integer, DOUBLE an 8-byte big-endian IEEE 754
number, STRING UTF-8 text and BYTES the raw value. Decoding and encoding are vectorised with NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from streamml.errors import FormatError
from streamml.formats.base import TOMBSTONE_REASON, Decoded, DecodeFailure, Format, decode_isolating

__all__ = ["KafkaFormat"]

#: Arrow type -> (KSQL name, big-endian NumPy dtype) for the fixed-width types.
_FIXED: dict[pa.DataType, tuple[str, str]] = {
    pa.int32(): ("INT", ">i4"),
    pa.int64(): ("BIGINT", ">i8"),
    pa.float64(): ("DOUBLE", ">f8"),
}


class KafkaFormat(Format):
    """One column of type int32 (INT), int64 (BIGINT), float64 (DOUBLE), string (STRING) or binary (BYTES)."""

    name = "KAFKA"

    def __init__(self, schema: pa.Schema | None = None) -> None:
        if schema is None or len(schema) != 1:
            raise FormatError(
                "KAFKA format needs a schema with exactly one column",
                hint="use JSON, DELIMITED or AVRO for several columns",
            )
        t = schema.field(0).type
        if t not in _FIXED and not _is_text(t) and not _is_bytes(t):
            raise FormatError(
                f"KAFKA format cannot hold column '{schema.field(0).name}' of type {t}",
                hint="supported: int32 (INT), int64 (BIGINT), float64 (DOUBLE), string (STRING), binary (BYTES)",
            )
        super().__init__(schema)
        self._field = schema.field(0)

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Decode values; a value of the wrong length (or invalid UTF-8 for STRING) is a failure."""
        assert self.schema is not None
        t = self._field.type
        if _is_text(t) or _is_bytes(t):
            return decode_isolating(values, self._decode_variable, self.schema, explain=_explain_text)
        ksql, dtype = _FIXED[t]
        width = np.dtype(dtype).itemsize
        positions = [i for i, v in enumerate(values) if v is not None]
        present = [values[i] for i in positions]
        lens = np.fromiter(map(len, present), dtype=np.int64, count=len(present))  # type: ignore[arg-type]
        ok = lens == width
        failures = [DecodeFailure(i, TOMBSTONE_REASON) for i, v in enumerate(values) if v is None]
        pos = np.asarray(positions, dtype=np.int64)
        if not ok.all():
            failures.extend(
                DecodeFailure(int(p), f"expected {width} bytes for {ksql}, got {int(n)}")
                for p, n in zip(pos[~ok], lens[~ok], strict=True)
            )
            failures.sort(key=lambda f: f.index)
            present = [v for v, good in zip(present, ok.tolist(), strict=True) if good]
        numbers = np.frombuffer(b"".join(present), dtype=dtype).astype(dtype[1:])  # type: ignore[arg-type]
        table = pa.Table.from_arrays([pa.array(numbers, type=t)], schema=self.schema)
        return Decoded(table=table, indices=pos[ok], failures=failures)

    def _decode_variable(self, chunk: Sequence[bytes]) -> pa.Table:
        assert self.schema is not None
        t = self._field.type
        arr = pa.array(chunk, type=pa.binary() if _is_bytes(t) else pa.string())
        if _is_text(t):
            arr.validate(full=True)
        return pa.Table.from_arrays([arr.cast(t)], schema=self.schema)

    def encode(self, table: pa.Table) -> list[bytes]:
        """Encode the single column; a NULL cannot be written (ksqlDB would produce a tombstone)."""
        if table.num_columns != 1:
            raise FormatError(f"KAFKA format encodes one column, the table has {table.num_columns}")
        column = table.column(0)
        if column.null_count:
            row = int(pc.index(pc.is_null(column), True).as_py())
            raise FormatError(
                f"KAFKA format cannot encode NULL in column '{table.column_names[0]}' (row {row})",
                hint="filter out NULLs first: a NULL value is a tombstone in Kafka",
            )
        t = self._field.type
        if _is_text(t) or _is_bytes(t):
            return pc.cast(column.cast(t), pa.binary()).to_pylist()
        dtype = _FIXED[t][1]
        width = np.dtype(dtype).itemsize
        data = column.cast(t).to_numpy().astype(dtype).tobytes()
        fixed = pa.Array.from_buffers(pa.binary(width), len(column), [None, pa.py_buffer(data)])
        return fixed.to_pylist()


def _is_text(t: pa.DataType) -> bool:
    return pat.is_string(t) or pat.is_large_string(t)


def _is_bytes(t: pa.DataType) -> bool:
    return pat.is_binary(t) or pat.is_large_binary(t)


def _explain_text(value: bytes, default: str) -> str:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}: {exc.reason}"
    return default
