"""A single column in JSON written as its bare value (``1``, ``"abc"``) instead of an object (``{"ID": 1}``).

ksqlDB writes a single-column key this way, and a single value column when ``WRAP_SINGLE_VALUE=false``. The
format wraps and unwraps whole batches with Arrow's binary kernels around :class:`JsonFormat`, so decoding
and encoding keep its vectorised paths, types and error messages. A NULL column is a NULL record (no key, or
a tombstone for a value), as in ksqlDB.

    >>> import pyarrow as pa
    >>> f = UnwrappedJson(pa.schema([("ID", pa.int32())]))
    >>> f.encode(pa.table({"ID": pa.array([1, None], pa.int32())}))
    [b'1', None]
    >>> f.decode([b"7", b"8"]).table.column("ID").to_pylist()
    [7, 8]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streamml.errors import FormatError
from streamml.formats.base import Decoded, DecodeFailure, Format
from streamml.formats.json import JsonFormat

__all__ = ["UnwrappedJson"]

_AT_BYTE = re.compile(r"at byte (\d+)")


class UnwrappedJson(Format):
    """JSON of one column, unwrapped; see the module docstring."""

    name = "JSON"

    def __init__(self, schema: pa.Schema) -> None:
        if len(schema) != 1:
            raise FormatError(f"an unwrapped JSON value holds one column, this schema has {len(schema)}",
                              hint="set WRAP_SINGLE_VALUE only on a single-column value")  # fmt: skip
        super().__init__(schema)
        self.column = schema.names[0]
        self.wrapped = JsonFormat(schema)
        self._prefix = orjson.dumps({self.column: None})[: -len(b"null}")]

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        bare = pa.array(values, pa.binary())
        wrapped = pc.binary_join_element_wise(self._prefix, bare, b"}", b"")
        decoded = self.wrapped.decode(wrapped.to_pylist())
        failures = [DecodeFailure(f.index, self._unwrapped(f.reason)) for f in decoded.failures]
        return Decoded(decoded.table, decoded.indices, failures)

    def _unwrapped(self, reason: str) -> str:
        """A reason about the wrapped record, told of the bare value (byte offsets shifted back)."""
        shift = len(self._prefix)
        return _AT_BYTE.sub(lambda m: f"at byte {max(0, int(m[1]) - shift)}", reason)

    def encode(self, table: pa.Table) -> list[bytes]:
        if table.num_rows == 0:
            return []
        objects = pa.array(self.wrapped.encode(table), pa.binary())
        bare = pc.binary_slice(objects, len(self._prefix), -1)
        nulls = pc.is_null(table.column(0))
        return pc.if_else(nulls, pa.scalar(None, pa.binary()), bare).to_pylist()
