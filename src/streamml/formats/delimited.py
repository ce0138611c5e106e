"""ksqlDB's DELIMITED format: one CSV line per record, no header, columns in schema order.

An empty field is NULL for every type; an empty string is written quoted (``""``) so it survives a round
trip. Like ksqlDB, encoding quotes only the fields that need it (``0,zero,0``, ``1,"a,b",c``) and writes doubles
as Java does (``1.0``, ``1.0E7``, ``NaN``), column by column with Arrow's string kernels. Decoding joins a
batch with newlines and parses it with Arrow's CSV reader in one call; records with a line break inside a
quoted field are decoded on their own.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.types as pat

from streamml.errors import FormatError
from streamml.formats._arrow import is_nested
from streamml.formats.base import Decoded, Format, decode_isolating, describe_value

__all__ = ["DelimitedFormat"]

_NAMED_DELIMITERS = {"TAB": "\t", "SPACE": " ", "COMMA": ",", "SEMICOLON": ";", "PIPE": "|"}
_COUNT_ERROR = re.compile(r"Expected (\d+) columns, got (\d+)")
_CONVERT_ERROR = re.compile(r"column #(\d+): CSV conversion error to ([^:]+): invalid value '(.*)'$")
_UTF8_ERROR = re.compile(r"column #(\d+): .*invalid UTF8")


class DelimitedFormat(Format):
    """CSV without a header; ``delimiter`` is one character or TAB, SPACE, COMMA, SEMICOLON, PIPE."""

    name = "DELIMITED"

    def __init__(self, schema: pa.Schema | None = None, delimiter: str = ",") -> None:
        if schema is None:
            raise FormatError("DELIMITED needs a schema: its records carry no field names or types")
        for field in schema:
            if is_nested(field.type) or pat.is_binary(field.type) or pat.is_large_binary(field.type):
                raise FormatError(
                    f"DELIMITED cannot hold column '{field.name}' of type {field.type}",
                    hint="use JSON or AVRO for nested and binary columns",
                )
        if len(schema) == 0:
            raise FormatError("DELIMITED needs a schema with at least one column")
        super().__init__(schema)
        delimiter = _NAMED_DELIMITERS.get(delimiter.upper(), delimiter)
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise FormatError(f"invalid DELIMITED delimiter {delimiter!r}: use one character, not a quote")
        self.delimiter = delimiter
        self._sep = delimiter.encode()
        self._bug_pattern = b'""' + self._sep
        self._read_options = pacsv.ReadOptions(column_names=schema.names, use_threads=True)
        self._parse_options = pacsv.ParseOptions(
            delimiter=delimiter, quote_char='"', double_quote=True, ignore_empty_lines=False
        )
        self._convert_options = pacsv.ConvertOptions(
            column_types=schema,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        self._structural = f'[{re.escape(delimiter)}"\r\n]'

    @property
    def _schema(self) -> pa.Schema:
        assert self.schema is not None
        return self.schema

    # ------------------------------------------------------------------ decode

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Decode CSV lines; wrong field counts and unparsable fields become failures."""
        schema = self._schema
        rejected: dict[int, str] = {}
        singles: list[int] = []
        present = [(i, v) for i, v in enumerate(values) if v is not None]
        if present:
            joined = b"\n".join(v for _, v in present)
            if joined.count(b"\n") != len(present) - 1 or b"\r" in joined or self._bug_pattern in joined:
                singles = [i for i, v in present if self._needs_tokenizer(v)]
            if len(schema) > 1 and b"" in values:
                rejected = {i: f"expected {len(schema)} fields, got 1" for i, v in present if not v}
        return decode_isolating(
            values, self._decode_all, schema, explain=self._explain, rejected=rejected, singles=singles
        )

    def _needs_tokenizer(self, value: bytes) -> bool:
        """Records Arrow's reader may misread on their own or when joined: line breaks, ``""`` then empty."""
        if b"\n" in value or b"\r" in value:
            return True
        if self._bug_pattern not in value:
            return False
        return value.endswith(self._bug_pattern) or self._bug_pattern + self._sep in value

    def _decode_all(self, chunk: Sequence[bytes]) -> pa.Table:
        if len(chunk) == 1 and self._needs_tokenizer(chunk[0]):
            return self._decode_tokenized(chunk[0])
        buf = b"\n".join([*chunk, b""])  # the final line break keeps a trailing empty record
        longest = max(map(len, chunk))
        read_options = self._read_options
        if longest + 2 > read_options.block_size:
            read_options = pacsv.ReadOptions(column_names=self._schema.names, use_threads=True, block_size=longest + 2)
        table = pacsv.read_csv(
            pa.BufferReader(buf),
            read_options=read_options,
            parse_options=self._parse_options,
            convert_options=self._convert_options,
        )
        if table.schema != self._schema:
            table = table.cast(self._schema)
        return table

    def _decode_tokenized(self, value: bytes) -> pa.Table:
        """One record split by a small quote-aware tokenizer (exact NULL vs empty-string handling)."""
        schema = self._schema
        fields = _split(value.decode("utf-8"), self.delimiter)
        if len(fields) != len(schema):
            raise ValueError(f"expected {len(schema)} fields, got {len(fields)}")
        columns = []
        for text, field in zip(fields, schema, strict=True):
            raw = pa.array([text], type=pa.string())
            try:
                columns.append(raw.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"field '{field.name}': expected {field.type}, got {describe_value(text)}") from exc
        return pa.Table.from_arrays(columns, schema=schema)

    def _explain(self, value: bytes, default: str) -> str:
        schema = self._schema
        match = _COUNT_ERROR.search(default)
        if match:
            return f"expected {match.group(1)} fields, got {match.group(2)}"
        match = _CONVERT_ERROR.search(default)
        if match:
            name = schema.field(int(match.group(1))).name
            return f"field '{name}': expected {match.group(2)}, got {describe_value(match.group(3))}"
        match = _UTF8_ERROR.search(default)
        if match:
            return f"field '{schema.field(int(match.group(1))).name}': invalid UTF-8"
        if "decode" in default and "utf-8" in default.lower():
            return f"invalid UTF-8: {default}"
        return default

    # ------------------------------------------------------------------ encode

    def encode(self, table: pa.Table) -> list[bytes]:
        """Encode each row as one CSV line without the line break; NULL becomes an empty field.

        Each column is turned into its text in one kernel (strings quoted only where they need it), and the
        fields of every row are joined in one more.
        """
        if table.num_rows == 0:
            return []
        table = self._in_schema_order(table)
        fields = [self._field_text(column.combine_chunks()) for column in table.columns]
        lines = pc.binary_join_element_wise(*fields, self.delimiter, null_handling="replace", null_replacement="")
        return pc.cast(lines, pa.binary()).to_pylist()

    def _field_text(self, values: pa.Array) -> pa.Array:
        """The fields of one column as ksqlDB writes them: doubles as Java prints them, booleans as
        ``true``/``false``, strings quoted (quotes doubled) when they hold the delimiter, a quote or a line
        break, or are empty."""
        t = values.type
        if pat.is_dictionary(t):
            return self._field_text(values.dictionary_decode())
        if pat.is_floating(t):
            return java_double_text(values)
        if not (pat.is_string(t) or pat.is_large_string(t)):
            return pc.cast(values, pa.string())
        needs = pc.or_(pc.match_substring_regex(values, self._structural), pc.equal(pc.utf8_length(values), 0))
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
        return pc.if_else(needs, quoted, values)

    def _in_schema_order(self, table: pa.Table) -> pa.Table:
        names = self._schema.names
        if table.column_names == names:
            return table
        lookup = {n.lower(): n for n in table.column_names}
        missing = [n for n in names if n.lower() not in lookup]
        if missing:
            raise FormatError(f"cannot encode DELIMITED: table lacks column(s) {', '.join(missing)}")
        return table.select([lookup[n.lower()] for n in names]).rename_columns(names)


def _split(text: str, delimiter: str) -> list[str | None]:
    """Split one CSV record; an unquoted empty field is None, a quoted one is ``""``."""
    fields: list[str | None] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            parts: list[str] = []
            j = i + 1
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ValueError("unterminated quoted field")
                parts.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    parts.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            fields.append("".join(parts))
            if i < n and text[i] != delimiter:
                raise ValueError(f"unexpected character after a quoted field at position {i}")
        else:
            k = text.find(delimiter, i)
            k = n if k < 0 else k
            raw = text[i:k]
            fields.append(raw or None)
            i = k
        if i >= n:
            return fields
        i += 1


_JAVA_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def java_double_text(values: pa.Array) -> pa.Array:
    """Doubles as Java's ``Double.toString`` writes them: ``1.0``, ``0.001``, ``1.0E7``, ``1.5E-10``, ``NaN``.

    Values from 10^-3 to 10^7 (the usual case) are Arrow's shortest text with ``.0`` added where it has no
    point; the others, and NaN and infinities, are written one by one.
    """
    if pat.is_float16(values.type):
        values = values.cast(pa.float32())
    text = pc.cast(values, pa.string())
    magnitude = pc.abs(values)
    plain = pc.fill_null(
        pc.or_(pc.equal(magnitude, 0.0), pc.and_(pc.greater_equal(magnitude, 1e-3), pc.less(magnitude, 1e7))), True
    )
    no_point = pc.invert(pc.match_substring(text, "."))
    text = pc.if_else(pc.and_(plain, no_point), pc.binary_join_element_wise(text, ".0", ""), text)
    if pc.all(plain).as_py():
        return text
    rows = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    others = pa.array([_java_scientific(x) for x in values.take(pa.array(rows)).to_pylist()], pa.string())
    mask = np.zeros(len(values), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(text, pa.array(mask), others)


def _java_scientific(x: float) -> str:
    if not math.isfinite(x):
        return _JAVA_SPECIAL[repr(x)]
    sign, digits, exponent = decimal.Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exponent, int)
    first, rest = str(digits[0]), "".join(map(str, digits[1:])) or "0"
    return f"{'-' if sign else ''}{first}.{rest}E{exponent + len(digits) - 1}"
