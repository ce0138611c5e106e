"""Turning input lines into Kafka record values and keys, a whole batch at a time, with line-exact errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streamml.errors import InputError
from streamml.formats import get_format
from streamml.formats.base import Format


@dataclass(frozen=True)
class LineCodec:
    """Validates a batch of input lines for ``format`` and derives record values and keys from them.

    ``json`` and ``delimited`` lines are sent as they are, after validation; ``avro`` lines are JSON objects
    encoded with the given Avro format; ``raw`` lines are sent untouched. ``key`` names the field whose value
    becomes the record key (for ``delimited``, ``columns`` gives the field names).
    """

    format: str
    key: str | None = None
    columns: tuple[str, ...] = ()
    encoder: Format | None = None

    def __post_init__(self) -> None:
        if self.format not in {"json", "delimited", "avro", "raw"}:
            raise InputError(f"unknown input format '{self.format}'", hint="use json, delimited, avro or raw")
        if self.format == "delimited" and self.key and self.key not in self.columns:
            raise InputError(
                f"key field '{self.key}' is not among the columns",
                hint="give --header (first line names the columns) or --columns A,B,C",
            )
        if self.format == "raw" and self.key:
            raise InputError("--key needs a structured format", hint="use --format json or delimited")
        if self.format == "avro" and self.encoder is None:
            raise InputError("--format avro needs --schema FILE.avsc")

    def encode(self, lines: Sequence[bytes], first_line: int) -> tuple[list[bytes], list[bytes] | None]:
        """Values and keys for ``lines``; raises :class:`InputError` naming the first bad line."""
        if self.format == "raw":
            return list(lines), None
        if self.format == "delimited":
            return list(lines), self._delimited_keys(lines, first_line)
        objects = self._json_objects(lines, first_line)
        keys = None
        if self.key is not None:
            keys = [_key_bytes(obj.get(self.key)) for obj in objects]
        if self.format == "avro":
            assert self.encoder is not None and self.encoder.schema is not None
            table = pa.Table.from_pylist(objects, schema=self.encoder.schema)
            return self.encoder.encode(table), keys
        return list(lines), keys

    def _json_objects(self, lines: Sequence[bytes], first_line: int) -> list[dict[str, object]]:
        try:
            objects = [orjson.loads(line) for line in lines]
        except orjson.JSONDecodeError:
            for i, line in enumerate(lines):
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise InputError(f"line {first_line + i}: invalid JSON ({exc})") from None
            raise
        for i, obj in enumerate(objects):
            if not isinstance(obj, dict):
                raise InputError(f"line {first_line + i}: expected a JSON object, got {type(obj).__name__}")
        return objects

    def _delimited_keys(self, lines: Sequence[bytes], first_line: int) -> list[bytes] | None:
        if self.key is None:
            return None
        schema = pa.schema([(name, pa.string()) for name in self.columns])
        decoded = get_format("delimited", schema).decode(lines)
        if decoded.failures:
            bad = decoded.failures[0]
            raise InputError(f"line {first_line + bad.index}: {bad.reason}")
        column = pc.fill_null(decoded.table.column(self.key), "")
        return [value.encode() for value in column.to_pylist()]


def _key_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def load_avro_encoder(schema_file: Path) -> Format:
    """An Avro format for the schema in ``schema_file`` (.avsc)."""
    if not schema_file.is_file():
        raise InputError(f"Avro schema file '{schema_file}' does not exist")
    try:
        avro_schema = orjson.loads(schema_file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"Avro schema file '{schema_file}' is not valid JSON ({exc})") from None
    return get_format("avro", avro_schema=avro_schema)
